//! Compilation tests: Gateway selection, VirtualService binding, host intersection, route
//! pruning and delegation, clusters with endpoints and DestinationRule merging.

use super::{compile, CompileOptions};
use crate::load::{load_text, LoadOptions, Loaded};
use crate::snapshot::{RouteAction, Snapshot};

fn snapshot(yaml: &str) -> Snapshot {
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
    compile(&l.set, &CompileOptions::default())
        .map(|c| c.snapshot)
        .expect("compiles")
}

const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\n\
spec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*/*.example.com', 'shop/shop.test']\n";

fn vs(ns: &str, name: &str, body: &str) -> String {
    format!("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}")
}

fn domains(s: &Snapshot) -> Vec<String> {
    let mut d: Vec<String> = s.listeners[0]
        .routes
        .virtual_hosts
        .iter()
        .flat_map(|v| v.domains.clone())
        .collect();
    d.sort();
    d
}

#[test]
fn gateways_are_selected_by_labels() {
    let other = GW.replace("istio: ingressgateway", "istio: egressgateway");
    assert!(snapshot(&other).listeners.is_empty());
    let s = snapshot(GW);
    assert_eq!(s.listeners.len(), 1);
    assert_eq!(s.listeners[0].port, 8080);
}

#[test]
fn virtual_services_bind_by_gateway_host_namespace_and_export() {
    let route = "  http: [{route: [{destination: {host: backend}}]}]\n";
    let y = [
        GW.to_string(),
        vs("apps", "wild", &format!("  hosts: ['*']\n  gateways: [istio-system/gw]\n{route}")),
        vs("shop", "shop", &format!("  hosts: [shop.test]\n  gateways: [istio-system/gw]\n{route}")),
        vs("apps", "not-shop", &format!("  hosts: [shop.test]\n  gateways: [istio-system/gw]\n{route}")),
        vs("apps", "private", &format!("  hosts: [private.example.com]\n  gateways: [istio-system/gw]\n  exportTo: ['.']\n{route}")),
        vs("apps", "mesh-only", &format!("  hosts: [mesh.example.com]\n{route}")),
        vs("istio-system", "short", &format!("  hosts: [a.example.com]\n  gateways: [gw]\n{route}")),
    ]
    .concat();
    let s = snapshot(&y);
    // `*` intersects the server hosts: the more specific names become the domains.
    assert_eq!(domains(&s), ["*.example.com", "a.example.com", "shop.test"]);
    let vh = s.listeners[0]
        .routes
        .lookup("shop.test")
        .expect("shop vhost");
    assert!(
        vh.routes.iter().all(|r| &*r.virtual_service == "shop/shop"),
        "shop.test is only for namespace shop"
    );
    assert!(s.listeners[0]
        .routes
        .lookup("private.example.com")
        .is_some_and(|v| v
            .routes
            .iter()
            .all(|r| &*r.virtual_service != "apps/private")));
    let outcome = |n: &str| {
        s.resources
            .iter()
            .find(|r| r.resource.ends_with(n))
            .map(|r| r.became.join("; "))
            .unwrap_or_default()
    };
    assert!(
        outcome("apps/private").contains("not exported"),
        "{}",
        outcome("apps/private")
    );
    assert!(
        outcome("apps/mesh-only").contains("not bound"),
        "{}",
        outcome("apps/mesh-only")
    );
    // Short destination names resolve in the VirtualService's namespace.
    assert!(s
        .cluster("outbound|80||backend.shop.svc.cluster.local")
        .is_some());
    assert!(s
        .cluster("outbound|80||backend.apps.svc.cluster.local")
        .is_some());
}

#[test]
fn match_blocks_for_other_ports_or_gateways_are_pruned_and_delegates_inlined() {
    let y = [
        GW.to_string(),
        vs("apps", "root", "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - match: [{port: 9090}]\n    route: [{destination: {host: x}}]\n  - match: [{gateways: [other/gw]}]\n    route: [{destination: {host: x}}]\n  - match: [{uri: {prefix: /api}}]\n    delegate: {name: child}\n  - route: [{destination: {host: fallback}}]\n"),
        vs("apps", "child", "  http:\n  - match: [{headers: {x-v: {exact: '2'}}}]\n    route: [{destination: {host: api-v2}}]\n  - route: [{destination: {host: api}}]\n"),
    ]
    .concat();
    let s = snapshot(&y);
    let vh = s.listeners[0]
        .routes
        .lookup("a.example.com")
        .expect("vhost");
    let names: Vec<&str> = vh.routes.iter().map(|r| &*r.virtual_service).collect();
    assert_eq!(names, ["apps/child", "apps/child", "apps/root"]);
    // The delegate's first route carries the root's uri prefix and its own header.
    let m = &vh.routes[0].matches[0];
    assert!(m.uri.is_some() && m.headers.len() == 1);
    match &vh.routes[0].action {
        RouteAction::Forward(f) => assert_eq!(
            &*f.clusters[0].cluster,
            "outbound|80||api-v2.apps.svc.cluster.local"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn destination_rules_merge_top_port_and_subset_policies() {
    let y = [
        GW.to_string(),
        vs("apps", "r", "  hosts: [a.example.com]\n  gateways: [istio-system/gw]\n  http: [{route: [{destination: {host: svc, subset: v1, port: {number: 8080}}, weight: 50}, {destination: {host: svc, subset: v2, port: {number: 8080}}, weight: 50}]}]\n"),
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc, namespace: apps}\nspec:\n  hosts: [svc.apps.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 9000}, {number: 9090, name: grpc, protocol: GRPC}]\n  endpoints:\n  - {address: 10.0.0.1, labels: {version: v1}}\n  - {address: 10.0.0.2, ports: {http: 7000}, labels: {version: v2}, weight: 3}\n".to_string(),
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc, namespace: apps}\nspec:\n  host: svc\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool: {tcp: {maxConnections: 10}}\n    portLevelSettings:\n    - port: {number: 8080}\n      loadBalancer: {simple: RANDOM}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n".to_string(),
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: wide, namespace: apps}\nspec:\n  host: '*.apps.svc.cluster.local'\n  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n".to_string(),
    ]
    .concat();
    let s = snapshot(&y);
    let simple = |name: &str| {
        let c = s.cluster(name).unwrap_or_else(|| panic!("no {name}"));
        let lb = c.policy.load_balancer.as_ref().and_then(|l| l.simple);
        (
            format!("{lb:?}"),
            c.policy.connection_pool.is_some(),
            c.endpoints
                .iter()
                .map(|e| (e.address.clone(), e.port, e.weight))
                .collect::<Vec<_>>(),
        )
    };
    // Port-level beats top-level; the subset's own policy beats both; unrelated fields stay.
    let (lb, pool, eps) = simple("outbound|8080|v1|svc.apps.svc.cluster.local");
    assert_eq!((lb.as_str(), pool), ("Some(Random)", true));
    assert_eq!(
        eps,
        [("10.0.0.1".to_string(), 9000, 1)],
        "subset v1 keeps only v1; targetPort applies"
    );
    let (lb, pool, eps) = simple("outbound|8080|v2|svc.apps.svc.cluster.local");
    assert_eq!((lb.as_str(), pool), ("Some(LeastRequest)", true));
    assert_eq!(
        eps,
        [("10.0.0.2".to_string(), 7000, 3)],
        "the endpoint's named port wins"
    );
    let (lb, _, _) = simple("outbound|9090|v1|svc.apps.svc.cluster.local");
    assert_eq!(
        lb, "Some(RoundRobin)",
        "the exact-host rule beats the wildcard one"
    );
    let grpc = s
        .cluster("outbound|9090||svc.apps.svc.cluster.local")
        .expect("grpc cluster");
    assert_eq!(format!("{:?}", grpc.protocol), "Http2");
}
