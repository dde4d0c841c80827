//! Configs shared by several test files.

use super::Upstream;

/// A Gateway on `{PORT}` for every host, and STATIC ServiceEntries for the upstreams.
/// A service for [`base`]: host, endpoints with their `version` label, port protocol.
pub type Service<'a> = (&'a str, &'a [(&'a Upstream, &'a str)], &'a str);

pub fn base(services: &[Service<'_>]) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\n\
         spec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: {PORT}, name: http, protocol: HTTP}\n    hosts: ['*/*']\n",
    );
    for (host, eps, proto) in services {
        y.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {}, namespace: test}}\n\
             spec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: {proto}}}\n  endpoints:\n",
            host.replace('.', "-")
        ));
        for (u, version) in *eps {
            y.push_str(&format!(
                "  - address: 127.0.0.1\n    ports: {{http: {}}}\n    labels: {{version: {version}}}\n",
                u.port()
            ));
        }
    }
    y
}

pub const ROUTES: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: test}
spec:
  host: svc.test.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: test}
spec:
  hosts: [app.example.com, "*.wild.example.com"]
  gateways: [istio-system/gw]
  http:
  - name: retry-5xx
    match: [{headers: {x-retry: {exact: 5xx}}}]
    retries: {attempts: 1, retryOn: 5xx}
    route: [{destination: {host: svc, subset: v1}}]
  - name: retry-per-try
    match: [{headers: {x-retry: {exact: per-try}}}]
    retries: {attempts: 2, perTryTimeout: 0.1s, retryOn: gateway-error}
    route: [{destination: {host: svc, subset: v1}}]
  - name: retry-off
    match: [{headers: {x-retry: {exact: "off"}}}]
    retries: {attempts: 0}
    route: [{destination: {host: svc, subset: v1}}]
  - name: retry-codes
    match: [{headers: {x-retry: {exact: codes}}}]
    retries: {attempts: 2, retryOn: "418,retriable-4xx"}
    route: [{destination: {host: svc, subset: v1}}]
  - name: mirror
    match: [{headers: {x-mirror: {exact: "yes"}}}]
    headers: {request: {set: {x-route: mirror}}}
    route: [{destination: {host: svc, subset: v1}}]
    mirror: {host: svc, subset: v2}
    mirrorPercentage: {value: 100}
  - name: dynamic
    match: [{uri: {prefix: /dynamic}}]
    route: [{destination: {host: svc, subset: v1}}]
    headers:
      request: {set: {x-route: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %PROTOCOL% %REQ(x-user)% %ROUTE_NAME% 100%%"}}
      response: {set: {x-resp: "%UPSTREAM_CLUSTER% %PROTOCOL%", x-dest: "%REQ(x-absent)%"}}
  - name: exact
    match: [{uri: {exact: /exact}}]
    route: [{destination: {host: svc, subset: v1}}]
    headers:
      request:
        set: {x-route: exact}
        add: {x-added: one}
        remove: [x-remove-me]
      response:
        set: {x-resp: exact}
        remove: [x-upstream-private]
  - name: regex
    match: [{uri: {regex: "/re/[0-9]+"}}]
    route: [{destination: {host: svc, subset: v2}}]
  - name: nocase
    match: [{uri: {prefix: /NoCase}, ignoreUriCase: true}]
    route: [{destination: {host: svc, subset: v2}}]
  - name: method-and-header
    match:
    - method: {exact: POST}
      uri: {prefix: /submit}
      headers:
        x-tenant: {prefix: gold}
        x-present: {}
    route: [{destination: {host: svc, subset: v2}}]
  - name: without-header
    match:
    - uri: {prefix: /without}
      withoutHeaders:
        x-block: {exact: "yes"}
    route: [{destination: {host: svc, subset: v2}}]
  - name: query
    match: [{uri: {prefix: /query}, queryParams: {id: {regex: "[0-9]+"}}}]
    route: [{destination: {host: svc, subset: v2}}]
  - name: authority
    match: [{uri: {prefix: /auth}, authority: {prefix: api.wild}}]
    route: [{destination: {host: svc, subset: v2}}]
  - name: wrong-port
    match: [{uri: {prefix: /port}, port: 1}]
    route: [{destination: {host: svc, subset: v2}}]
  - name: redirect
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: moved.example.com, redirectCode: 308}
  - name: redirect-scheme
    match: [{uri: {prefix: /secure}}]
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}
  - name: direct
    match: [{uri: {exact: /direct}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - name: rewrite-prefix
    match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /v2/, authority: internal.svc}
    route: [{destination: {host: svc, subset: v1}}]
  - name: rewrite-regex
    match: [{uri: {prefix: /users/}}]
    rewrite:
      uriRegexRewrite: {match: "^/users/([0-9]+)/(.*)$", rewrite: "/u/\\2/\\1"}
    route: [{destination: {host: svc, subset: v1}}]
  - name: split
    match: [{uri: {prefix: /split}}]
    route:
    - destination: {host: svc, subset: v1}
      weight: 80
      headers: {response: {set: {x-dest: v1}}}
    - destination: {host: svc, subset: v2}
      weight: 20
      headers: {request: {set: {x-dest-req: v2}}, response: {set: {x-dest: v2}}}
  - name: timeout
    match: [{uri: {prefix: /delay}}]
    timeout: 0.25s
    route: [{destination: {host: svc, subset: v1}}]
  - name: fault-abort
    match: [{uri: {prefix: /fault-abort}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: svc, subset: v1}}]
  - name: fault-delay
    match: [{uri: {prefix: /fault-delay}}]
    fault: {delay: {fixedDelay: 0.3s}}
    route: [{destination: {host: svc, subset: v1}}]
  - name: cors
    match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://good.example"}, {regex: "https://[a-z]+[.]trusted[.]example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom, x-other]
      exposeHeaders: [x-exposed]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: svc, subset: v1}}]
  - name: default
    route: [{destination: {host: svc, subset: v1}}]
"#;

/// Services that fail: `dead` has one endpoint nobody listens on, `empty` has none.
pub const FAILING: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dead, namespace: test}
spec:
  hosts: [dead.test.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: DEAD_PORT}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: empty, namespace: test}
spec:
  hosts: [empty.test.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: nothing}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: failing, namespace: test}
spec:
  hosts: [dead.example.com, empty.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{authority: {prefix: dead}}]
    route: [{destination: {host: dead}}]
  - route: [{destination: {host: empty}}]
"#;

/// The routing fixture: every match kind and action, over subsets v1 and v2 of one service,
/// plus two failing services.
pub fn routing(v1: &Upstream, v2: &Upstream) -> String {
    let mut y = base(&[(
        "svc.test.svc.cluster.local",
        &[(v1, "v1"), (v2, "v2")],
        "HTTP",
    )]);
    y.push_str(ROUTES);
    y.push_str(&FAILING.replace("DEAD_PORT", &super::free_port().to_string()));
    y
}
