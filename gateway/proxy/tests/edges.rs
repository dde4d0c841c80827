//! Edge behaviour of the real gateway: malformed and oversized requests, missing upstreams,
//! h2c and gRPC end to end, streaming, WebSocket, consistent hashing, admin, shutdown.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use support::{Client, Gateway, Upstream};

fn gateway_yaml(extra: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {{PORT}}, name: http, protocol: HTTP}}\n    hosts: ['*/*']\n{extra}"
    )
}

fn service_entry(name: &str, proto: &str, ports: &[u16]) -> String {
    let mut y = format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: test}}\n\
         spec:\n  hosts: [{name}.test.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: {proto}}}\n"
    );
    // No endpoints: a selector that selects no workload (a cluster with nothing healthy).
    y.push_str(if ports.is_empty() {
        "  workloadSelector: {labels: {app: none}}\n"
    } else {
        "  endpoints:\n"
    });
    for p in ports {
        y.push_str(&format!(
            "  - address: 127.0.0.1\n    ports: {{http: {p}}}\n"
        ));
    }
    y
}

fn route_all(host: &str, dest: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {dest}, namespace: test}}\n\
         spec:\n  hosts: [{host}]\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: {dest}}}}}]\n"
    )
}

/// Raw HTTP/1.1 exchange: what a client that does not follow the rules gets back.
fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn malformed_oversized_and_unroutable_requests() {
    let dead_port = support::free_port();
    let y = gateway_yaml(&format!(
        "{}{}{}{}",
        service_entry("dead", "HTTP", &[dead_port]),
        route_all("dead.example.com", "dead"),
        service_entry("empty", "HTTP", &[]),
        route_all("empty.example.com", "empty"),
    ));
    let gw = Gateway::start(&y);
    let c = Client::http1(gw.port);
    let r = c.get("dead.example.com", "/");
    assert_eq!(r.status, 503);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    // Istio's default retry policy retries connect failures twice.
    assert!(body.starts_with("upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure"), "{body}");
    let r = c.get("empty.example.com", "/");
    assert_eq!(r.status, 503);
    assert_eq!(&r.body[..], b"no healthy upstream");
    assert_eq!(c.get("nowhere.example.com", "/").status, 404);

    let resp = raw(gw.port, b"GET / HTTP/1.1\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400"), "missing host: {resp}");
    let resp = raw(
        gw.port,
        b"GET / HTTP/1.1\r\nHost: dead.example.com\r\nBad Header\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "malformed header: {resp}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(80 * 1024)
    );
    let resp = raw(gw.port, big.as_bytes());
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "oversized headers: {resp}"
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let resp = raw(gw.port, many.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 431"), "too many headers: {resp}");
}

#[test]
fn h2c_and_grpc_pass_through_with_trailers() {
    let h2 = Upstream::echo("h2");
    let y = gateway_yaml(&format!(
        "{}{}",
        service_entry("grpc", "GRPC", &[h2.port()]),
        route_all("grpc.example.com", "grpc")
    ));
    let gw = Gateway::start(&y);
    let c = Client::h2c(gw.port);
    let r = c.get("grpc.example.com", "/hello");
    assert_eq!(r.status, 200);
    assert_eq!(
        h2.last().version,
        "HTTP/2.0",
        "GRPC port speaks HTTP/2 upstream"
    );
    let mut msg = vec![0u8, 0, 0, 0, 5];
    msg.extend_from_slice(b"hello");
    let r = c.send(
        Method::POST,
        "grpc.example.com",
        "/grpc",
        &[("content-type", "application/grpc"), ("te", "trailers")],
        Bytes::from(msg),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    let t = r.trailers.expect("gRPC trailers arrive");
    assert_eq!(t["grpc-status"], "0");
    assert_eq!(&r.body[5..], b"received=10 trailers=false");
    assert_eq!(h2.last().headers["te"], "trailers");
    // HTTP/1.1 downstream to an HTTP/2 upstream works too.
    assert_eq!(
        Client::http1(gw.port).get("grpc.example.com", "/x").status,
        200
    );
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn bodies_stream_without_buffering() {
    let up = Upstream::echo("big");
    let y = gateway_yaml(&format!(
        "{}{}",
        service_entry("big", "HTTP", &[up.port()]),
        route_all("big.example.com", "big")
    ));
    let gw = Gateway::start(&y);
    let size: u64 = 256 * 1024 * 1024;
    // Upload 256 MiB through the gateway as a chunked stream.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: big.example.com\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .expect("head");
    let chunk = vec![b'y'; 1024 * 1024];
    let mut head = format!("{:x}\r\n", chunk.len()).into_bytes();
    head.extend_from_slice(&chunk);
    head.extend_from_slice(b"\r\n");
    for _ in 0..(size / chunk.len() as u64) {
        s.write_all(&head).expect("chunk");
    }
    s.write_all(b"0\r\n\r\n").expect("end");
    let mut buf = [0u8; 8192];
    let n = s.read(&mut buf).expect("response");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(up.last().body_bytes, size);
    // Download 256 MiB.
    let r = Client::http1(gw.port).get("big.example.com", &format!("/big/{size}"));
    assert_eq!(r.body.len() as u64, size);
    let hwm = vm_hwm_kib(gw.pid());
    println!("gateway peak RSS after 2 x {} MiB: {hwm} KiB", size >> 20);
    assert!(
        hwm > 0 && hwm < 96 * 1024,
        "gateway peak RSS {hwm} KiB: bodies were buffered"
    );
}

#[test]
fn websocket_upgrade_passes_through() {
    let up = Upstream::echo("ws");
    let y = gateway_yaml(&format!(
        "{}{}",
        service_entry("ws", "HTTP", &[up.port()]),
        route_all("ws.example.com", "ws")
    ));
    let gw = Gateway::start(&y);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .expect("write");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).expect("101");
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"ping"[..], b"second message"] {
        s.write_all(msg).expect("send");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("echo");
        assert_eq!(got, msg);
    }
}

#[test]
fn consistent_hash_keeps_a_key_on_one_endpoint() {
    let ups: Vec<Upstream> = (0..4).map(|i| Upstream::echo(&format!("e{i}"))).collect();
    let ports: Vec<u16> = ups.iter().map(Upstream::port).collect();
    let y = gateway_yaml(&format!(
        "{}{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: hash, namespace: test}}\n\
         spec:\n  host: hash.test.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n",
        service_entry("hash", "HTTP", &ports),
        route_all("hash.example.com", "hash")
    ));
    let gw = Gateway::start(&y);
    let c = Client::http1(gw.port);
    let mut used = std::collections::HashSet::new();
    for user in 0..40 {
        let u = format!("user-{user}");
        let first = c
            .get_h("hash.example.com", "/", &[("x-user", &u)])
            .upstream()
            .to_owned();
        for _ in 0..5 {
            assert_eq!(
                c.get_h("hash.example.com", "/", &[("x-user", &u)])
                    .upstream(),
                first,
                "{u} moved"
            );
        }
        used.insert(first);
    }
    assert!(used.len() >= 3, "40 keys used only {used:?}");
}

#[test]
fn admin_readiness_metrics_and_graceful_shutdown() {
    let up = Upstream::echo("slow");
    let y = gateway_yaml(&format!(
        "{}{}",
        service_entry("slow", "HTTP", &[up.port()]),
        route_all("slow.example.com", "slow")
    ));
    let mut gw = Gateway::start(&y);
    let admin = Client::http1(gw.admin);
    assert_eq!(admin.get("localhost", "/ready").status, 200);
    assert_eq!(
        Client::http1(gw.readiness)
            .get("localhost", "/healthz/ready")
            .status,
        200
    );
    assert_eq!(
        Client::http1(gw.readiness)
            .get("localhost", "/config_dump")
            .status,
        404
    );
    let c = Client::http1(gw.port);
    assert_eq!(c.get("slow.example.com", "/status/503").status, 503);
    assert_eq!(c.get("slow.example.com", "/x").status, 200);
    let stats = Client::http1(gw.stats).get("localhost", "/stats/prometheus");
    let text = String::from_utf8_lossy(&stats.body).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap_or_else(|| panic!("no istio_requests_total line:\n{text}"));
    assert!(
        line.contains("destination_service=\"slow.test.svc.cluster.local\""),
        "{line}"
    );
    assert!(line.contains("destination_service_name=\"slow\""), "{line}");
    assert!(line.contains("reporter=\"source\""), "{line}");
    assert!(line.ends_with(" 1"), "{line}");
    assert!(
        text.contains("istio_request_duration_milliseconds_bucket{"),
        "histogram missing"
    );
    // Every attempt counts: the 503 was retried twice (Istio's default policy), then the 200.
    let cluster_stat = |name: &str| {
        format!("envoy_cluster_{name}{{cluster_name=\"outbound|80||slow.test.svc.cluster.local\"}}")
    };
    for (name, n) in [
        ("upstream_rq_total", 4),
        ("upstream_rq_retry", 2),
        ("upstream_rq_retry_limit_exceeded", 1),
        ("upstream_rq_retry_success", 0),
    ] {
        assert!(
            text.contains(&format!("{} {n}\n", cluster_stat(name))),
            "{name} is not {n}:\n{text}"
        );
    }
    let clusters = String::from_utf8_lossy(&admin.get("localhost", "/clusters").body).into_owned();
    assert!(
        clusters.contains(&format!(
            "outbound|80||slow.test.svc.cluster.local::127.0.0.1:{}::rq_total::4",
            up.port()
        )),
        "{clusters}"
    );
    let dump = admin.get("localhost", "/config_dump").json();
    assert_eq!(dump["listeners"][0]["port"], gw.port);

    // A request in flight when SIGTERM arrives still completes.
    let port = gw.port;
    let slow = std::thread::spawn(move || {
        Client::http1(port)
            .get("slow.example.com", "/delay/1500")
            .status
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = gw.terminate().expect("gateway exits after draining");
    assert!(status.success(), "exit status {status}");
    assert_eq!(slow.join().expect("client thread"), 200);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listener closed after shutdown"
    );
}

#[test]
fn dns_endpoints_are_resolved_and_served() {
    let up = Upstream::echo("dns");
    let y = gateway_yaml(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: dns, namespace: test}}\n\
         spec:\n  hosts: [dns.test.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: DNS\n\
         \x20 ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: localhost, ports: {{http: {}}}}}]\n{}",
        up.port(),
        route_all("dns.example.com", "dns")
    ));
    let gw = Gateway::start(&y);
    let clusters =
        String::from_utf8_lossy(&Client::http1(gw.admin).get("localhost", "/clusters").body)
            .into_owned();
    let resolved = format!(
        "outbound|80||dns.test.svc.cluster.local::127.0.0.1:{}::weight::1",
        up.port()
    );
    assert!(
        clusters.contains(&resolved),
        "localhost was not resolved:\n{clusters}"
    );
    assert!(clusters.contains("outbound|80||dns.test.svc.cluster.local::discovery::StrictDns"));
    // Where localhost also resolves to ::1 the upstream (IPv4 only) may be picked on ::1; only
    // assert the exchange where IPv4 is the only answer.
    let only_v4 = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80))
        .map(|a| a.into_iter().all(|a| a.is_ipv4()))
        .unwrap_or(false);
    if only_v4 {
        assert_eq!(
            Client::http1(gw.port)
                .get("dns.example.com", "/")
                .upstream(),
            "dns"
        );
    }
}

#[test]
fn hash_cookie_is_generated_and_keeps_the_client_on_one_endpoint() {
    let ups: Vec<Upstream> = (0..4).map(|i| Upstream::echo(&format!("c{i}"))).collect();
    let ports: Vec<u16> = ups.iter().map(Upstream::port).collect();
    let y = gateway_yaml(&format!(
        "{}{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: sticky, namespace: test}}\n\
         spec:\n  host: sticky.test.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpCookie: {{name: session, path: /, ttl: 3600s}}\n",
        service_entry("sticky", "HTTP", &ports),
        route_all("sticky.example.com", "sticky")
    ));
    let gw = Gateway::start(&y);
    let c = Client::http1(gw.port);
    let mut first_hops = std::collections::HashSet::new();
    for _ in 0..12 {
        let r = c.get("sticky.example.com", "/");
        let set = r
            .header("set-cookie")
            .expect("a hash cookie is generated")
            .to_owned();
        assert!(
            set.starts_with("session=\"") && set.contains("; Max-Age=3600; Path=/; HttpOnly"),
            "{set}"
        );
        let first = r.upstream().to_owned();
        first_hops.insert(first.clone());
        let cookie = set.split(';').next().unwrap_or("").to_owned();
        for _ in 0..4 {
            let again = c.get_h("sticky.example.com", "/", &[("cookie", &cookie)]);
            assert_eq!(
                again.upstream(),
                first,
                "the cookie keeps the client on its endpoint"
            );
            assert!(
                again.header("set-cookie").is_none(),
                "no new cookie when the client sends one"
            );
        }
    }
    assert!(
        first_hops.len() >= 2,
        "generated cookies spread clients: {first_hops:?}"
    );
}
