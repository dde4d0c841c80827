//! The Istio corpus test: every document Istio accepts is accepted, every document Istio
//! rejects is rejected for the same reason.
//!
//! Reads the shared corpus (`shared/corpus/istio/` beside the workspace, or the directory named
//! by `MESHGATE_ISTIO_CORPUS`) and its `INDEX.md` labels. Documents are never copied into the
//! project. Where a label is wrong by Istio's own rules, `WRONG_LABELS` says so and why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshgate_config::diag::Diagnostic;
use meshgate_config::{load_paths, load_text, LoadOptions, Loaded};

/// Documents labelled valid that Istio's validating webhook rejects. (file, resource name,
/// field that must be rejected, the rule.)
const WRONG_LABELS: &[(&str, &str, &str, &str)] = &[
    (
        "analyzers/conflicting-gateways-invalid-port.yaml",
        "beta",
        "spec.servers[0].port",
        "validateServerPort: `port is required`; the analyzer input is deliberately partial",
    ),
    (
        "analyzers/conflicting-gateways-invalid-port.yaml",
        "alpha",
        "spec.servers[0].port",
        "validateServerPort: `port is required`",
    ),
    (
        "istioctl/analyze-file__specific-analyzer.yaml",
        "beta",
        "spec.servers[0].port",
        "validateServerPort: `port is required`",
    ),
    (
        "istioctl/analyze-file__specific-analyzer.yaml",
        "alpha",
        "spec.servers[0].port",
        "validateServerPort: `port is required`",
    ),
    (
        "analyzers/conflicting-gateways-multiple-ports.yaml",
        "beta",
        "spec.servers[1].port.name",
        "ValidateGateway: `port names in servers must be unique: duplicate name tcp`",
    ),
    (
        "analyzers/conflicting-gateways-multiple-ports.yaml",
        "alpha",
        "spec.servers[1].port.name",
        "ValidateGateway: `port names in servers must be unique: duplicate name http`",
    ),
    (
        "analyzers/condition-analyzer.yaml",
        "negative-condition-svcEntry",
        "spec",
        "the ServiceEntry CRD requires `spec` (and `spec.hosts`): the corpus's own \
         invalid/serviceentry-invalid.yaml expects `spec: Required value` for the same shape",
    ),
    (
        "analyzers/deprecation.yaml",
        "productpage",
        "spec.http[0]",
        "validateHTTPRouteConflict: `HTTP route, redirect or direct_response is required` (the \
         route has only a fault)",
    ),
    (
        "analyzers/gateway-no-workload.yaml",
        "httpbin-gateway",
        "spec.servers",
        "ValidateGateway: `gateway must have at least one server`",
    ),
    (
        "analyzers/virtualservice_gateways.yaml",
        "httpbin-gateway",
        "spec.servers",
        "ValidateGateway: `gateway must have at least one server`",
    ),
    (
        "analyzers/virtualservice_gateways.yaml",
        "crossnamespace-gw",
        "spec.servers",
        "ValidateGateway: `gateway must have at least one server`",
    ),
    (
        "analyzers/virtualservice_gateways.yaml",
        "httpbin",
        "spec",
        "ValidateVirtualService: `http, tcp or tls must be provided in virtual service`",
    ),
    (
        "analyzers/virtualservice_gateways.yaml",
        "httpbin-bogus",
        "spec",
        "ValidateVirtualService: `http, tcp or tls must be provided in virtual service`",
    ),
    (
        "analyzers/virtualservice_gateways.yaml",
        "httpbin-mesh",
        "spec",
        "ValidateVirtualService: no routes, and `wildcard host * is not allowed for virtual \
         services bound to the mesh gateway`",
    ),
    (
        "analyzers/virtualservice_gateways.yaml",
        "cross-test",
        "spec",
        "ValidateVirtualService: `http, tcp or tls must be provided in virtual service`",
    ),
    (
        "integration/pilot__some-dir__missing-gateway.yaml",
        "missing-gateway",
        "spec",
        "ValidateVirtualService: `http, tcp or tls must be provided in virtual service`",
    ),
    (
        "analyzers/gateway-secrets.yaml",
        "defaultgateway-nocredential",
        "spec.servers[0].tls",
        "validateTLSOptions: `SIMPLE TLS requires a server certificate` / `... a private key` \
         when no credentialName is given",
    ),
    (
        "analyzers/virtualservice_destinationhosts.yaml",
        "service-entry-ignore",
        "spec.hosts[0]",
        "ServiceEntry CRD CEL rule `hostname cannot be wildcard` (the corpus's own \
         invalid/serviceentry-invalid.yaml rejects host `*`)",
    ),
    (
        "analyzers/virtualservice_destinationhosts.yaml",
        "reviews-bogushost",
        "spec.http[0].route",
        "validateHTTPRouteDestinations: `destination is required` (route entry `{}`) and \
         `total destination weight = 0`; the CRD also requires `destination`",
    ),
    (
        "analyzers/virtualservice_internal_gateway_ref.yaml",
        "httpbin",
        "spec.gateways[0]",
        "validateGatewayNames: `invalid value for gateway name` for an istiod-internal name \
         (`gateway~istio-autogenerated-k8s-gateway~foo`) without gateway route semantics",
    ),
    (
        "analyzers/virtualservice_host_not_found_gateway.yaml",
        "testing-gateway-01-test-04",
        "spec.servers[1].port.name",
        "ValidateGateway: `port names in servers must be unique: duplicate name http` (two \
         servers on port 80 both named http)",
    ),
    (
        "analyzers/virtualservice_host_not_found_gateway_beta.yaml",
        "testing-gateway-01-test-04",
        "spec.servers[1].port.name",
        "ValidateGateway: `port names in servers must be unique: duplicate name http`",
    ),
    (
        "samples/multicluster/expose-istiod-https.yaml",
        "istiod-gateway",
        "spec.servers",
        "ValidateWildcardDomain: DNS-1123 labels are lower case; `ISTIOD-HOST.DOMAIN` is a \
         placeholder the sample asks users to replace",
    ),
    (
        "samples/multicluster/expose-istiod-https.yaml",
        "istiod-vs",
        "spec.hosts[0]",
        "ValidateWildcardDomain: `ISTIOD-HOST.DOMAIN` is an upper-case placeholder",
    ),
];

fn corpus_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESHGATE_ISTIO_CORPUS") {
        return Some(PathBuf::from(p));
    }
    let p = manifest_dir().join("../../../shared/corpus/istio");
    p.join("INDEX.md").is_file().then_some(p)
}

/// The corpus must be there in CI; elsewhere the test says loudly that it did not run.
fn corpus_or_skip() -> Option<PathBuf> {
    let dir = corpus_dir();
    if dir.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Istio corpus (shared/corpus/istio) is missing in CI"
        );
        eprintln!("SKIPPED: Istio corpus not found; set MESHGATE_ISTIO_CORPUS");
    }
    dir
}

/// `INDEX.md` file table: relative path -> validity label.
fn labels(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("INDEX.md")).expect("INDEX.md readable");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 8 {
            continue;
        }
        let file = cols[2].trim_matches('`');
        if file.ends_with(".yaml") && !file.starts_with("invalid/") {
            out.insert(file.to_owned(), cols[6].to_owned());
        }
    }
    out
}

fn errors(l: &Loaded) -> Vec<&Diagnostic> {
    l.diagnostics.iter().filter(|d| d.is_error()).collect()
}

#[test]
fn every_valid_document_is_accepted() {
    let Some(dir) = corpus_or_skip() else { return };
    let labels = labels(&dir);
    assert!(labels.len() > 300, "INDEX.md lists {} files", labels.len());
    let (mut docs, mut accepted, mut skipped, mut warnings) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    let mut wrong_label_hits = std::collections::BTreeSet::new();
    for (file, label) in &labels {
        assert!(
            label.starts_with("valid"),
            "{file}: unexpected label {label}"
        );
        // crd-validation files hold independent test documents (several reuse one name), each
        // applied on its own by Istio's TestCRDs: load them one by one. Other files are sets.
        let loads: Vec<Loaded> = if file.starts_with("crd-validation/") {
            let text = std::fs::read_to_string(dir.join(file)).expect("readable");
            split_documents(file, &text).iter().map(load_doc).collect()
        } else {
            vec![load_paths(&[dir.join(file)], &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{file}: {e}"))]
        };
        for loaded in &loads {
            docs += loaded.documents;
            accepted += loaded.documents - loaded.rejected;
            skipped += loaded.skipped.len();
            warnings += loaded.diagnostics.len() - errors(loaded).len();
            for d in errors(loaded) {
                let name = d.resource.as_ref().map(|r| r.name.as_str()).unwrap_or("");
                let known = WRONG_LABELS
                    .iter()
                    .find(|(f, n, field, _)| f == file && *n == name && d.field.starts_with(field));
                match known {
                    Some(w) => {
                        wrong_label_hits.insert((w.0, w.1));
                    }
                    None => failures.push(d.to_string()),
                }
            }
        }
    }
    println!(
        "corpus valid: {docs} Istio documents of meshgate's kinds, {accepted} accepted, \
         {} rejected by known-wrong labels; {skipped} other documents skipped; {warnings} warnings",
        docs - accepted
    );
    assert!(
        failures.is_empty(),
        "{} valid documents rejected:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        wrong_label_hits.len(),
        WRONG_LABELS.len(),
        "each documented wrong label must still be rejected: {wrong_label_hits:?}"
    );
    assert!(docs >= 840, "only {docs} documents read");
}

/// One document of a multi-document file, padded so that its lines keep their numbers.
struct Doc {
    file: String,
    line: usize,
    /// The `_err:` of an invalid document.
    expected: Option<String>,
    text: String,
}

/// Splits `text` at `---` lines, taking out each document's `_err:` key.
fn split_documents(file: &str, text: &str) -> Vec<Doc> {
    let lines: Vec<&str> = text.lines().collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim_end() == "---" {
            chunks.push((start, i));
            start = i + 1;
        }
    }
    chunks.push((start, lines.len()));
    chunks
        .into_iter()
        .map(|(a, b)| {
            let mut expected = None;
            let mut doc = "\n".repeat(a);
            for l in &lines[a..b] {
                if let Some(e) = l.strip_prefix("_err:") {
                    expected = Some(e.trim().trim_matches(['"', '\'']).to_owned());
                    doc.push('\n');
                } else {
                    doc.push_str(l);
                    doc.push('\n');
                }
            }
            Doc {
                file: file.to_owned(),
                line: a + 1,
                expected,
                text: doc,
            }
        })
        .collect()
}

fn load_doc(d: &Doc) -> Loaded {
    let mut loaded = Loaded::default();
    load_text(&d.file, &d.text, &LoadOptions::default(), &mut loaded);
    loaded.finish();
    loaded
}

fn invalid_docs(dir: &Path) -> Vec<Doc> {
    let idir = dir.join("invalid/crd-validation");
    let mut files: Vec<_> = std::fs::read_dir(&idir)
        .expect("invalid dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("readable");
            let name = format!(
                "invalid/crd-validation/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            split_documents(&name, &text)
        })
        .filter(|d| d.expected.is_some())
        .collect()
}

/// Our wording for Istio's messages where the words differ but the reason is the same.
const SAME_REASON: &[(&str, &str)] = &[
    ("port must be between 1-65535", "65535"),
    ("must be a valid duration greater than", "duration"),
    ("type conversion error from", "port"),
    ("Duplicate value", "duplicate"),
    ("url must have scheme", "scheme"),
    ("url must have schema one of", "scheme"),
    ("Address is required", "address is required"),
    ("in body must be of type", "must be of type"),
    ("Invalid value", "invalid value"),
    ("in body should be at least 1 chars long", "empty"),
    ("in body should be at least", "required"),
    ("in body should match", "match"),
    ("in body should have at least 1 properties", "empty"),
    ("Required value", "required"),
];

/// The field path an Istio message names, if any (`spec.x.y[0]`, or a bare `name[0]`).
fn named_field(expected: &str) -> Option<&str> {
    let head = expected
        .split(" in body")
        .next()
        .and_then(|h| h.split(": ").next())
        .unwrap_or("");
    let ok = !head.is_empty()
        && !head.contains(' ')
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c));
    ok.then_some(head)
}

/// Does one of our errors give the same reason as Istio's `expected`?
fn same_reason(expected: &str, errs: &[&Diagnostic]) -> bool {
    let exp = expected.to_ascii_lowercase();
    let field_ok = |d: &Diagnostic| match named_field(expected) {
        Some(f) if f.starts_with("spec") => d.field.starts_with(f) || f.starts_with(&d.field),
        Some(f) => d.field.contains(f),
        None => true,
    };
    errs.iter().any(|d| {
        let msg = format!("{}: {}", d.field, d.message).to_ascii_lowercase();
        if !field_ok(d) {
            return false;
        }
        if msg.contains(exp.trim_end_matches(['.', ' '])) {
            return true;
        }
        SAME_REASON
            .iter()
            .filter(|(istio, _)| exp.contains(&istio.to_ascii_lowercase()))
            .any(|(_, ours)| msg.contains(ours))
    })
}

#[test]
fn every_invalid_document_is_rejected_for_the_same_reason() {
    let Some(dir) = corpus_or_skip() else { return };
    let docs = invalid_docs(&dir);
    assert!(
        docs.len() >= 70,
        "only {} invalid documents found",
        docs.len()
    );
    let (mut rejected, mut other_kind) = (0, 0);
    let mut failures = Vec::new();
    for d in &docs {
        let expected = d.expected.as_deref().unwrap_or_default();
        let loaded = load_doc(d);
        if loaded.documents == 0 {
            // EnvoyFilter, Telemetry, ProxyConfig: kinds meshgate reports as skipped.
            assert_eq!(loaded.skipped.len(), 1, "{}:{}", d.file, d.line);
            other_kind += 1;
            continue;
        }
        let errs = errors(&loaded);
        if errs.is_empty() {
            failures.push(format!(
                "{}:{}: accepted, Istio says: {expected}",
                d.file, d.line
            ));
        } else if !same_reason(expected, &errs) {
            let ours: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            failures.push(format!(
                "{}:{}: Istio says {expected:?}; meshgate says:\n    {}",
                d.file,
                d.line,
                ours.join("\n    ")
            ));
        } else {
            rejected += 1;
            println!("{}:{}: {expected:?} -> {}", d.file, d.line, errs[0]);
        }
    }
    println!(
        "corpus invalid: {} documents, {rejected} rejected for Istio's reason, {other_kind} of \
         kinds meshgate skips (EnvoyFilter, Telemetry, ProxyConfig)",
        docs.len()
    );
    assert!(
        failures.is_empty(),
        "{} invalid documents mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The package's folder, as cargo gives it to the running test (the path compiled in would be
/// that of whichever checkout built the binary, when checkouts share a target directory).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
