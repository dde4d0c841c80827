//! Config reload: a changed file is loaded, validated and swapped in while the gateway serves;
//! an invalid change is rejected and the last good config keeps serving.

mod support;

use std::time::{Duration, Instant};

use support::{Client, Gateway, Upstream};

fn config(up: &Upstream, routes: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {{PORT}}, name: http, protocol: HTTP}}\n    hosts: ['*/*']\n\
         ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc, namespace: test}}\n\
         spec:\n  hosts: [svc.test.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: test}}\n\
         spec:\n  hosts: [app.example.com]\n  gateways: [istio-system/gw]\n  http:\n{routes}",
        up.port()
    )
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn valid_changes_apply_and_invalid_ones_keep_the_last_good_config() {
    let up = Upstream::echo("svc");
    let a_only = "  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: svc}}]\n";
    let gw = Gateway::start(&config(&up, a_only));
    let c = Client::http1(gw.port);
    assert_eq!(c.get("app.example.com", "/a").status, 200);
    assert_eq!(c.get("app.example.com", "/b").status, 404);

    let a_and_b = format!(
        "{a_only}  - match: [{{uri: {{prefix: /b}}}}]\n    directResponse: {{status: 202}}\n"
    );
    gw.rewrite_config(&config(&up, &a_and_b));
    wait_for("the new route", || {
        c.get("app.example.com", "/b").status == 202
    });
    assert_eq!(c.get("app.example.com", "/a").status, 200);

    // A broken update (bad regex) is rejected; both routes keep answering.
    let broken = format!(
        "{a_and_b}  - match: [{{uri: {{regex: '/c[0-9'}}}}]\n    directResponse: {{status: 204}}\n"
    );
    gw.rewrite_config(&config(&up, &broken));
    wait_for("the rejection in the log", || {
        gw.stderr().contains("keeping the last good config")
    });
    assert!(
        gw.stderr().contains("spec.http[2].match[0].uri.regex"),
        "{}",
        gw.stderr()
    );
    assert_eq!(c.get("app.example.com", "/b").status, 202);
    assert_eq!(c.get("app.example.com", "/a").status, 200);
    assert_eq!(c.get("app.example.com", "/c1").status, 404);
}
