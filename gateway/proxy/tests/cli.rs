//! The `meshgate` binary's config commands, run as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn meshgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(args)
        .output()
        .expect("meshgate runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn coffee_shop() -> PathBuf {
    manifest_dir().join("../../examples/coffee-shop")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

const BAD_VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  http:
  - match:
    - uri:
        regex: \"/v[0-9\"
    route:
    - destination:
        subset: v1
  - route:
    - destination:
        host: reviews
      weight: -5
";

#[test]
fn validate_accepts_the_coffee_shop() {
    let o = meshgate(&["validate", coffee_shop().to_str().expect("utf8")]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("4 Istio document(s): 4 valid, 0 invalid"),
        "{out}"
    );
}

#[test]
fn validate_reports_file_line_resource_field_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(dir.path(), "reviews.yaml", BAD_VS);
    let o = meshgate(&["validate", dir.path().to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let file = f.display().to_string();
    let line_of = |field: &str| {
        out.lines()
            .find(|l| l.contains(&format!(": {field}: ")))
            .unwrap_or_else(|| panic!("no diagnostic for {field} in:\n{out}"))
            .to_owned()
    };
    let re = line_of("spec.http[0].match[0].uri.regex");
    assert!(
        re.starts_with(&format!("{file}:12: VirtualService bookinfo/reviews: ")),
        "{re}"
    );
    let host = line_of("spec.http[0].route[0].destination.host");
    // A missing field points at its parent (`destination:` on line 14).
    assert!(host.starts_with(&format!("{file}:14: ")), "{host}");
    let weight = line_of("spec.http[1].route[0].weight");
    assert!(weight.starts_with(&format!("{file}:19: ")), "{weight}");
    assert!(
        out.contains("1 Istio document(s): 0 valid, 1 invalid"),
        "{out}"
    );
}

#[test]
fn validate_json_output_and_strict_unknown_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "gw.yaml",
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  selector: {istio: ingressgateway}\n  colour: blue\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
    );
    let path = dir.path().to_str().expect("utf8");
    let o = meshgate(&["validate", "--output", "json", path]);
    assert!(o.status.success(), "{}", stdout(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["summary"]["valid"], 1);
    assert_eq!(v["summary"]["skipped"], 1);
    assert_eq!(v["diagnostics"][0]["severity"], "warning");
    assert_eq!(v["diagnostics"][0]["field"], "spec.colour");
    assert_eq!(v["diagnostics"][0]["line"], 6);
    let strict = meshgate(&["validate", "--strict", path]);
    assert_eq!(strict.status.code(), Some(1), "{}", stdout(&strict));
    assert!(stdout(&strict).contains("spec.colour: unknown field"));
}

#[test]
fn config_dump_shows_listeners_routes_and_merged_clusters() {
    let o = meshgate(&[
        "config-dump",
        "--config",
        coffee_shop().to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let l = &v["listeners"][0];
    assert_eq!(l["port"], 8080);
    assert_eq!(l["servicePort"], 8080);
    assert_eq!(l["protocol"], "HTTP");
    let vh = &l["routes"]["virtualHosts"][0];
    assert_eq!(vh["name"], "coffee.example.com:8080");
    let names: Vec<&str> = vh["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "health",
            "menu-redirect",
            "orders",
            "payments",
            "inventory",
            "customers-gold",
            "customers"
        ]
    );
    let clusters = v["clusters"].as_array().expect("clusters");
    let find = |n: &str| {
        clusters
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("no cluster {n}"))
    };
    let v1 = find("outbound|8080|v1|customer.coffee-shop.svc.cluster.local");
    let v2 = find("outbound|8080|v2|customer.coffee-shop.svc.cluster.local");
    assert_eq!(v1["policy"]["loadBalancer"]["simple"], "LEAST_REQUEST");
    // The subset's own policy overrides the top-level load balancer, keeps the pool.
    assert_eq!(v2["policy"]["loadBalancer"]["simple"], "ROUND_ROBIN");
    assert_eq!(
        v2["policy"]["connectionPool"]["http"]["http1MaxPendingRequests"],
        1024
    );
    assert_eq!(v1["discovery"], "STRICT_DNS");
    find("outbound|8080||order.coffee-shop.svc.cluster.local");
    let became = v["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "VirtualService coffee-shop/coffee-shop")
        .expect("vs outcome");
    assert!(became["became"][0]
        .as_str()
        .is_some_and(|s| s.starts_with("7 routes on listener 0.0.0.0_8080")));
}

#[test]
fn config_dump_refuses_invalid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "bad.yaml", BAD_VS);
    let o = meshgate(&[
        "config-dump",
        "--config",
        dir.path().to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("config is invalid"));
}

/// The package's folder, as cargo gives it to the running test (the path compiled in would be
/// that of whichever checkout built the binary, when checkouts share a target directory).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
