//! Comparing meshgate with Envoy: the two sides' observations as `what -> value` maps, and the
//! WasmPlugin documents and prerequisites the wasm comparisons share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{envoy, plugins, Client};

/// A description of what one side did: `what -> value`.
pub type Desc = BTreeMap<String, String>;

/// Compares meshgate's description with Envoy's. Each difference whose `what` starts with one
/// of `tolerated`'s prefixes is accepted (the second element says why); any other fails the
/// test. Every tolerated prefix must match at least one difference.
pub fn compare(case: &str, ours: &Desc, theirs: &Desc, tolerated: &[(&str, &str)]) {
    let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    let mut unexplained = Vec::new();
    let mut seen = BTreeSet::new();
    for k in keys {
        let (a, b) = (
            ours.get(k).map_or("<missing>", String::as_str),
            theirs.get(k).map_or("<missing>", String::as_str),
        );
        if a == b {
            continue;
        }
        let line = format!("{case}: {k}: meshgate {a:?}, envoy {b:?}");
        match tolerated.iter().find(|(p, _)| k.starts_with(p)) {
            Some((p, why)) => {
                println!("  tolerated ({why}): {line}");
                seen.insert(*p);
            }
            None => unexplained.push(line),
        }
    }
    assert!(
        unexplained.is_empty(),
        "differences from Envoy:\n{}",
        unexplained.join("\n")
    );
    for (p, _) in tolerated {
        assert!(
            seen.contains(p),
            "{case}: tolerated difference {p:?} no longer happens: update the test"
        );
    }
}

/// A WasmPlugin document in `istio-system` loading `wasm`, with extra `spec` lines.
pub fn wasm_plugin(name: &str, wasm: &Path, spec: &str) -> String {
    format!(
        "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}, namespace: istio-system}}\n\
         spec:\n  url: file://{}\n{spec}",
        wasm.display()
    )
}

/// The Envoy binary and a built test plugin, or `None`: the test skips (outside CI).
pub fn needs(plugin: &str) -> Option<(PathBuf, PathBuf)> {
    let bin = envoy::required()?;
    let wasm = plugins::path(plugin)?;
    Some((bin, wasm))
}

/// A sample's value on a Prometheus text page: the line `name` or `name{}` (no labels).
pub fn prom(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        let base = k.split('{').next()?;
        let labels = k.strip_prefix(base)?;
        (base == name && (labels.is_empty() || labels == "{}"))
            .then(|| v.parse().ok())
            .flatten()
    })
}

/// The gateway's (or Envoy's) `/stats/prometheus` page on admin port `port`.
pub fn prom_page(port: u16) -> String {
    String::from_utf8_lossy(
        &Client::http1(port)
            .get("localhost", "/stats/prometheus")
            .body,
    )
    .into_owned()
}
