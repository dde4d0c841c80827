//! Compile time and lookup time of the snapshot at scale: 10,000 VirtualService routes over
//! 1,000 hosts bound to one Gateway. Run with `cargo bench -p meshgate-config`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use meshgate_config::snapshot::route::RequestView;
use meshgate_config::{compile, load_text, CompileOptions, LoadOptions, Loaded};

const HOSTS: usize = 1_000;
const ROUTES_PER_HOST: usize = 10;

fn config() -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\n\
         spec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*/*']\n",
    );
    for h in 0..HOSTS {
        y.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs{h}, namespace: ns{}}}\n\
             spec:\n  hosts: [host{h}.example.com]\n  gateways: [istio-system/gw]\n  http:\n",
            h % 20
        ));
        for r in 0..ROUTES_PER_HOST {
            y.push_str(&format!(
                "  - match:\n    - uri: {{prefix: /api/v{r}/}}\n      headers: {{x-tenant: {{regex: 't[0-9]+'}}}}\n\
                 \x20   route:\n    - destination: {{host: svc{r}, subset: v1}}\n      weight: 90\n    - destination: {{host: svc{r}, subset: v2}}\n      weight: 10\n"
            ));
        }
    }
    y
}

struct Req<'a> {
    authority: &'a str,
    path: &'a str,
}

impl RequestView for Req<'_> {
    fn method(&self) -> &str {
        "GET"
    }
    fn scheme(&self) -> &str {
        "http"
    }
    fn authority(&self) -> &str {
        self.authority
    }
    fn path(&self) -> &str {
        self.path
    }
    fn header(&self, name: &str) -> Option<&str> {
        (name == "x-tenant").then_some("t42")
    }
}

fn bench(c: &mut Criterion) {
    let text = config();
    let mut loaded = Loaded::default();
    load_text("bench.yaml", &text, &LoadOptions::default(), &mut loaded);
    loaded.finish();
    assert!(!loaded.has_errors(), "bench config invalid");
    let opts = CompileOptions::default();
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.bench_function("load_and_validate_1000_vs", |b| {
        b.iter(|| {
            let mut l = Loaded::default();
            load_text(
                "bench.yaml",
                black_box(&text),
                &LoadOptions::default(),
                &mut l,
            );
            l.finish();
            l
        })
    });
    g.bench_function("compile_10000_routes_1000_hosts", |b| {
        b.iter(|| compile(black_box(&loaded.set), &opts).map(|c| c.snapshot.listeners.len()))
    });
    g.finish();

    let snap = compile(&loaded.set, &opts)
        .map(|c| c.snapshot)
        .expect("compiles");
    let listener = snap.listener(80).expect("listener");
    let routes: usize = listener
        .routes
        .virtual_hosts
        .iter()
        .map(|v| v.routes.len())
        .sum();
    assert_eq!(routes, HOSTS * ROUTES_PER_HOST);
    let hosts: Vec<String> = (0..HOSTS).map(|h| format!("host{h}.example.com")).collect();
    let mut i = 0;
    c.bench_function("lookup_host_and_last_route", |b| {
        b.iter(|| {
            i = (i + 7919) % HOSTS;
            let req = Req {
                authority: &hosts[i],
                path: "/api/v9/orders?id=1",
            };
            let vh = listener.routes.lookup(black_box(req.authority));
            vh.and_then(|vh| vh.routes.iter().position(|r| r.matches(&req)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
