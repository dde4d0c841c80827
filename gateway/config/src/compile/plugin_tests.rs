//! WasmPlugin compilation tests: URL kinds, digests, the config JSON Istio sends, selection by
//! namespace / selector / targetRefs, filter-chain order, ports, modes, route scoping, and
//! every valid WasmPlugin of the Istio corpus.

use std::path::{Path, PathBuf};

use super::plugins::{decode_sha256, plugin_source};
use super::{compile, CompileOptions, Compiled};
use crate::load::{load_paths, load_text, LoadOptions, Loaded};
use crate::snapshot::{EnvValue, Phase, PluginSource, PluginType, Snapshot};

fn load(yaml: &str) -> Loaded {
    let mut l = Loaded::default();
    load_text("t.yaml", yaml, &LoadOptions::default(), &mut l);
    l.finish();
    let errors: Vec<String> = l
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    l
}

fn compiled_with(yaml: &str, opts: &CompileOptions) -> Compiled {
    compile(&load(yaml).set, opts).expect("compiles")
}

fn snapshot(yaml: &str) -> Snapshot {
    compiled_with(yaml, &CompileOptions::default()).snapshot
}

fn wp(ns: &str, name: &str, body: &str) -> String {
    format!("---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}")
}

fn names(s: &Snapshot) -> Vec<&str> {
    s.plugins.iter().map(|p| &*p.name).collect()
}

fn outcome(c: &Compiled, name: &str) -> String {
    c.snapshot
        .resources
        .iter()
        .find(|r| r.resource == format!("WasmPlugin {name}"))
        .map(|r| r.became.join("; "))
        .unwrap_or_default()
}

const SHA: &str = "1ef0c9a92b0420cf25f7fe5d481b231464bc88f486ca3b9c83ed5cc21d2f6210";

#[test]
fn url_kinds() {
    let file = |p: &str| PluginSource::File(PathBuf::from(p));
    let oci = |r: &str| PluginSource::Oci {
        reference: r.into(),
    };
    assert_eq!(plugin_source("file:///opt/p.wasm"), file("/opt/p.wasm"));
    // Istio hands Envoy the rest after `file://`, relative or not.
    assert_eq!(plugin_source("file://fake.wasm"), file("fake.wasm"));
    assert_eq!(plugin_source("/opt/p.wasm"), file("/opt/p.wasm"));
    assert_eq!(
        plugin_source("https://x/p.wasm"),
        PluginSource::Http {
            url: "https://x/p.wasm".into()
        }
    );
    assert_eq!(
        plugin_source("HTTP://x/p.wasm"),
        PluginSource::Http {
            url: "HTTP://x/p.wasm".into()
        }
    );
    assert_eq!(plugin_source("oci://ghcr.io/a/b:1"), oci("ghcr.io/a/b:1"));
    // No scheme: an OCI reference, even when it looks like `host:port/...`.
    assert_eq!(plugin_source("ghcr.io/a/b:1"), oci("ghcr.io/a/b:1"));
    assert_eq!(
        plugin_source("registry:5000/a/b:latest"),
        oci("registry:5000/a/b:latest")
    );
    assert_eq!(plugin_source("test"), oci("test"));
    assert_eq!(
        plugin_source("oci://r/x").to_string(),
        "oci://r/x",
        "Display gives the canonical URL"
    );
}

#[test]
fn sha256_is_decoded_and_keys_the_vm() {
    let d = decode_sha256(SHA).expect("decodes");
    assert_eq!(d[0], 0x1e);
    assert_eq!(d[1], 0xf0);
    assert_eq!(d[31], 0x10);
    assert_eq!(decode_sha256("abc"), None);
    assert_eq!(decode_sha256(&"g".repeat(64)), None);
    let y = [
        wp(
            "istio-system",
            "a",
            &format!("  url: oci://r/a:1\n  sha256: {SHA}\n  pluginName: root\n"),
        ),
        wp("istio-system", "b", "  url: oci://r/b:1\n"),
    ]
    .concat();
    let s = snapshot(&y);
    let a = &s.plugins[0];
    assert_eq!(a.sha256, Some(d));
    assert_eq!(&*a.vm_key, format!("sha256:{SHA}|root"));
    assert_eq!(a.root_id, "root");
    let b = &s.plugins[1];
    assert_eq!(
        (b.sha256, &*b.vm_key, b.root_id.as_str()),
        (None, "oci://r/b:1|", "")
    );
    let dump = serde_json::to_value(&s).expect("serializes");
    assert_eq!(dump["plugins"][0]["sha256"], SHA);
    assert_eq!(dump["plugins"][0]["source"]["oci"]["reference"], "r/a:1");
}

#[test]
fn plugin_config_is_the_json_istio_sends() {
    let body = "  url: oci://r/a:1\n  pluginConfig:\n    zeta: {b: 2, a: [1, 2.5, -3, true, false, null, {y: 1, x: 'v'}]}\n    alpha: 'a<b & \"c\"'\n    big: 12345678901234567890\n    small: 0.0000001\n    whole: 1.0\n    nested: {empty: {}, list: []}\n";
    let s = snapshot(
        &[
            wp("istio-system", "a", body),
            wp("istio-system", "b", "  url: oci://r/b:1\n"),
            wp(
                "istio-system",
                "c",
                "  url: oci://r/c:1\n  pluginConfig: {}\n",
            ),
        ]
        .concat(),
    );
    let by = |n: &str| {
        s.plugins
            .iter()
            .find(|p| &*p.name == n)
            .map(|p| p.configuration.to_string())
            .unwrap_or_else(|| panic!("no {n}"))
    };
    assert_eq!(
        by("istio-system/a"),
        r#"{"alpha":"a\u003cb \u0026 \"c\"","big":12345678901234567000,"nested":{"empty":{},"list":[]},"small":1e-7,"whole":1,"zeta":{"a":[1,2.5,-3,true,false,null,{"x":"v","y":1}],"b":2}}"#
    );
    assert_eq!(by("istio-system/b"), "", "absent config");
    assert_eq!(by("istio-system/c"), "", "an empty object is no config");
}

#[test]
fn selection_by_namespace_selector_and_target_refs() {
    let opts = CompileOptions {
        namespace: "gw-ns".into(),
        ..CompileOptions::default()
    };
    let gw = "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: gw-ns}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}]\n";
    let u = "  url: oci://r/x:1\n";
    let y = [
        gw.to_owned(),
        wp("istio-system", "root", u),
        wp("gw-ns", "own", u),
        wp("apps", "other-ns", &format!("{u}  selector: {{matchLabels: {{istio: ingressgateway}}}}\n")),
        wp("gw-ns", "sel-ok", &format!("{u}  selector: {{matchLabels: {{istio: ingressgateway}}}}\n")),
        wp("gw-ns", "sel-no", &format!("{u}  selector: {{matchLabels: {{istio: egressgateway}}}}\n")),
        wp("gw-ns", "classic-ref", &format!("{u}  targetRefs: [{{group: networking.istio.io, kind: Gateway, name: gw}}]\n")),
        wp("istio-system", "classic-ref-root", &format!("{u}  targetRefs: [{{group: networking.istio.io, kind: Gateway, name: gw}}]\n")),
        wp("gw-ns", "k8s-ref", &format!("{u}  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n")),
        wp("gw-ns", "old-ref", &format!("{u}  targetRef: {{group: networking.istio.io, kind: Gateway, name: gw}}\n")),
    ]
    .concat();
    let c = compiled_with(&y, &opts);
    let mut got = names(&c.snapshot);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "gw-ns/classic-ref",
            "gw-ns/old-ref",
            "gw-ns/own",
            "gw-ns/sel-ok",
            "istio-system/root"
        ]
    );
    assert!(outcome(&c, "apps/other-ns").contains("neither the gateway's (gw-ns) nor the root"));
    assert!(outcome(&c, "gw-ns/sel-no").contains("selector does not match"));
    // A classic-Gateway targetRef only counts from the Gateway's own namespace.
    assert!(outcome(&c, "istio-system/classic-ref-root").starts_with("not selected"));
    assert!(outcome(&c, "gw-ns/k8s-ref").contains("targetRefs"));
    assert!(outcome(&c, "gw-ns/own").contains("selected: no selector"));

    // A Gateway API gateway (its pods carry the gateway-name label) is named by targetRefs.
    let mut labels = opts.labels.clone();
    labels.insert("gateway.networking.k8s.io/gateway-name".into(), "gw".into());
    let k8s = CompileOptions { labels, ..opts };
    let c = compiled_with(&y, &k8s);
    let mut got = names(&c.snapshot);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "gw-ns/classic-ref",
            "gw-ns/k8s-ref",
            "gw-ns/old-ref",
            "gw-ns/own",
            "gw-ns/sel-ok",
            "istio-system/root"
        ]
    );
    let other = y.replace("kind: Gateway, name: gw}]", "kind: Gateway, name: other}]");
    let c = compiled_with(&other, &k8s);
    assert!(outcome(&c, "gw-ns/k8s-ref").contains("no targetRef names this gateway"));
}

#[test]
fn ordered_by_phase_then_priority_then_namespace_then_name() {
    let opts = CompileOptions {
        namespace: "gw-ns".into(),
        ..CompileOptions::default()
    };
    let p =
        |ns: &str, name: &str, extra: &str| wp(ns, name, &format!("  url: oci://r/x:1\n{extra}"));
    let y = [
        p("istio-system", "unspec", ""),
        p("istio-system", "stats", "  phase: STATS\n"),
        p("istio-system", "authz-unset", "  phase: AUTHZ\n"),
        p(
            "istio-system",
            "authz-neg",
            "  phase: AUTHZ\n  priority: -5\n",
        ),
        p(
            "istio-system",
            "authz-10",
            "  phase: AUTHZ\n  priority: 10\n",
        ),
        p(
            "istio-system",
            "authz-1000",
            "  phase: AUTHZ\n  priority: 1000\n",
        ),
        p("istio-system", "a-root", "  phase: AUTHN\n"),
        p("gw-ns", "z-own", "  phase: AUTHN\n"),
        p("gw-ns", "b-own", "  phase: AUTHN\n"),
    ]
    .concat();
    let c = compiled_with(&y, &opts);
    assert_eq!(
        names(&c.snapshot),
        [
            // Ties: the gateway's namespace before the root namespace, then by name.
            "gw-ns/b-own",
            "gw-ns/z-own",
            "istio-system/a-root",
            "istio-system/authz-1000",
            "istio-system/authz-10",
            "istio-system/authz-neg",
            // Istio sorts an unset priority as the lowest, below negative ones.
            "istio-system/authz-unset",
            "istio-system/stats",
            "istio-system/unspec",
        ]
    );
    let phases: Vec<Phase> = c.snapshot.plugins.iter().map(|p| p.phase).collect();
    assert!(phases.windows(2).all(|w| w[0] <= w[1]));
    assert!(outcome(&c, "istio-system/unspec").contains("plugin 9 of 9"));
}

#[test]
fn ports_modes_routes_and_types() {
    let gw = "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: istio-system}\nspec:\n  hosts: ['*']\n  gateways: [gw]\n  http: [{name: api, route: [{destination: {host: api}}]}, {name: web, route: [{destination: {host: web}}]}]\n";
    let u = "  url: oci://r/x:1\n";
    let scoped = |name: &str, routes: &str| {
        format!("---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: {name}\n  namespace: istio-system\n  annotations: {{plugins.meshgate.io/routes: '{routes}'}}\nspec:\n{u}")
    };
    let y = [
        gw.to_owned(),
        wp("istio-system", "all", u),
        wp("istio-system", "p8080", &format!("{u}  match: [{{ports: [{{number: 9090}}, {{number: 8080}}, {{number: 8080}}]}}]\n")),
        wp("istio-system", "p9090", &format!("{u}  match: [{{mode: CLIENT, ports: [{{number: 9090}}]}}]\n")),
        wp("istio-system", "server-only", &format!("{u}  match: [{{mode: SERVER}}]\n")),
        wp("istio-system", "server-and-client", &format!("{u}  match: [{{mode: SERVER, ports: [{{number: 1}}]}}, {{mode: CLIENT_AND_SERVER, ports: [{{number: 8080}}]}}]\n")),
        wp("istio-system", "net", &format!("{u}  type: NETWORK\n")),
        scoped("api-only", " api , ,nope"),
        wp("istio-system", "env", &format!("{u}  vmConfig: {{env: [{{name: A, value: x}}, {{name: POD, valueFrom: HOST}}]}}\n")),
    ]
    .concat();
    let c = compiled_with(&y, &CompileOptions::default());
    let s = &c.snapshot;
    let get = |n: &str| {
        s.plugins
            .iter()
            .find(|p| *p.name == format!("istio-system/{n}"))
            .unwrap_or_else(|| panic!("no {n}"))
    };
    assert_eq!(get("p8080").ports, [8080, 9090]);
    assert!(get("all").ports.is_empty());
    assert_eq!(
        get("server-and-client").ports,
        [8080],
        "the SERVER entry is skipped"
    );
    assert!(outcome(&c, "istio-system/server-only").contains("mode SERVER"));
    assert_eq!(get("net").plugin_type, PluginType::Network);
    assert!(outcome(&c, "istio-system/net").contains("not served"));
    assert_eq!(get("api-only").routes, ["api", "nope"]);
    assert!(c.warnings.iter().any(|w| w.message.contains("\"nope\"")));
    assert_eq!(
        get("env").env,
        [
            ("A".to_owned(), EnvValue::Inline("x".into())),
            ("POD".to_owned(), EnvValue::Host)
        ]
    );

    let on = |route: Option<&str>, port: u16| -> Vec<String> {
        let mut v: Vec<String> = s
            .plugins_for(route, port)
            .map(|p| p.name.trim_start_matches("istio-system/").to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        on(Some("api"), 8080),
        ["all", "api-only", "env", "p8080", "server-and-client"]
    );
    assert_eq!(
        on(Some("web"), 8080),
        ["all", "env", "p8080", "server-and-client"]
    );
    assert_eq!(on(None, 9090), ["all", "env", "p8080", "p9090"]);
}

fn corpus_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESHGATE_ISTIO_CORPUS") {
        return Some(PathBuf::from(p));
    }
    let p = manifest_dir().join("../../../shared/corpus/istio");
    p.join("INDEX.md").is_file().then_some(p)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

#[test]
fn every_valid_corpus_wasm_plugin_compiles() {
    let Some(dir) = corpus_dir() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Istio corpus (shared/corpus/istio) is missing in CI"
        );
        eprintln!("SKIPPED: Istio corpus not found; set MESHGATE_ISTIO_CORPUS");
        return;
    };
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.retain(|f| {
        let rel = f.strip_prefix(&dir).unwrap_or(f);
        !rel.starts_with("invalid") && !rel.starts_with("crds")
    });
    files.sort();
    let (mut seen, mut built) = (0, 0);
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        if !text.contains("kind: WasmPlugin") {
            continue;
        }
        let loaded = load_paths(std::slice::from_ref(f), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let n = loaded.set.wasm_plugins().count();
        seen += n;
        // Compile as a gateway in the plugins' own namespace, as an Istio and as a Gateway API
        // gateway, so that every plugin is considered.
        for ns in ["default", "istio-system"] {
            let mut opts = CompileOptions {
                namespace: ns.into(),
                ..CompileOptions::default()
            };
            let c =
                compile(&loaded.set, &opts).unwrap_or_else(|e| panic!("{}: {e:?}", f.display()));
            built += c.snapshot.plugins.len();
            opts.labels.insert(
                "gateway.networking.k8s.io/gateway-name".into(),
                "bookinfo-gateway".into(),
            );
            compile(&loaded.set, &opts).unwrap_or_else(|e| panic!("{}: {e:?}", f.display()));
        }
    }
    assert!(
        seen >= 8,
        "the corpus has 8 valid WasmPlugins, found {seen}"
    );
    assert!(built >= 7, "only {built} plugins compiled");
}

#[test]
fn limit_annotations_override_the_runtime_defaults() {
    let with = |annotations: &str| {
        format!("---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: p\n  namespace: istio-system\n  annotations: {{{annotations}}}\nspec:\n  url: oci://r/x:1\n")
    };
    let s = snapshot(&with(
        "plugins.meshgate.io/memory-limit: 32Mi, plugins.meshgate.io/callback-deadline: 250ms",
    ));
    assert_eq!(s.plugins[0].memory_limit, Some(32 << 20));
    assert_eq!(
        s.plugins[0].callback_deadline,
        Some(std::time::Duration::from_millis(250))
    );
    assert_eq!(
        snapshot(&with("plugins.meshgate.io/memory-limit: '2G'")).plugins[0].memory_limit,
        Some(2_000_000_000)
    );
    let none = snapshot(&with("a: b"));
    assert_eq!(
        (
            none.plugins[0].memory_limit,
            none.plugins[0].callback_deadline
        ),
        (None, None)
    );
    for bad in [
        "plugins.meshgate.io/memory-limit: lots",
        "plugins.meshgate.io/memory-limit: 1Ki",
        "plugins.meshgate.io/callback-deadline: '0s'",
        "plugins.meshgate.io/callback-deadline: soon",
    ] {
        // A bad value is a config error at file:line (the last good config keeps serving).
        let errors = compile(&load(&with(bad)).set, &CompileOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{bad}: compiled"));
        assert!(
            errors.iter().any(|d| d.line > 0
                && d.field
                    .starts_with("metadata.annotations[plugins.meshgate.io/")),
            "{bad}: {errors:?}"
        );
    }
}

/// The package's folder, as cargo gives it to the running test (the path compiled in would be
/// that of whichever checkout built the binary, when checkouts share a target directory).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
