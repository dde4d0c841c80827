//! Locality load balancing through the real gateway (`--locality`) with real upstreams placed
//! in several localities (ServiceEntry endpoint `locality`): traffic stays local, fails over
//! zone → region → elsewhere as outlier detection ejects endpoints, `distribute` weights,
//! `failover` between regions, `failoverPriority` by labels, and slow start (`warmup`).

mod support;

use std::time::{Duration, Instant};

use support::upstream::Behaviour;
use support::{Client, Gateway, Upstream};

const HOST: &str = "loc.example.com";
const LOCALITY: &str = "r1/z1/s1";
/// Each 5xx ejects at once, for long enough that nothing comes back during a test.
const OUTLIER: &str =
    "{consecutive5xxErrors: 1, maxEjectionPercent: 100, interval: 1s, baseEjectionTime: 60s}";

/// One endpoint: upstream, locality, extra labels (YAML flow mapping body).
struct Ep<'a>(&'a Upstream, &'a str, &'a str);

/// A gateway routing `HOST` to `svc` with these endpoints and this `trafficPolicy` body
/// (YAML lines indented by 4); retries off so each request is one attempt.
fn config(eps: &[Ep<'_>], policy: &str) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\n\
         spec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: {PORT}, name: http, protocol: HTTP}\n    hosts: ['*/*']\n\
         ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc, namespace: test}\n\
         spec:\n  hosts: [svc.test.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints:\n",
    );
    for Ep(up, loc, labels) in eps {
        y.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {}}}, locality: {loc}, labels: {{{labels}}}}}\n",
            up.port()
        ));
    }
    y.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc, namespace: test}}\n\
         spec:\n  host: svc.test.svc.cluster.local\n  trafficPolicy:\n{policy}\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: test}}\n\
         spec:\n  hosts: [{HOST}]\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: svc.test.svc.cluster.local}}}}]\n    retries: {{attempts: 0}}\n"
    ));
    y
}

fn start(eps: &[Ep<'_>], policy: &str) -> Gateway {
    Gateway::start_with(&config(eps, policy), &["--locality", LOCALITY])
}

/// Round robin with outlier detection (which turns Istio's default failover on).
fn failover_policy(extra: &str) -> String {
    format!("    loadBalancer: {{simple: ROUND_ROBIN{extra}}}\n    outlierDetection: {OUTLIER}\n")
}

/// Sends `n` requests; returns how many got a 200.
fn send(c: &Client, n: usize) -> usize {
    (0..n)
        .filter(|_| c.get(HOST, "/").status.as_u16() == 200)
        .count()
}

/// Makes `up` fail and sends one request, which it gets (it is the only target now) and
/// which ejects it.
fn fail_and_eject(c: &Client, up: &Upstream) {
    up.set_behaviour(Behaviour::Status(503));
    let before = up.count();
    assert_eq!(c.get(HOST, "/").status.as_u16(), 503);
    assert_eq!(
        up.count(),
        before + 1,
        "the failing endpoint got the request"
    );
}

/// Counts of `ups` since `before`.
fn since(ups: &[&Upstream], before: &[usize]) -> Vec<usize> {
    ups.iter().zip(before).map(|(u, b)| u.count() - b).collect()
}

fn counts(ups: &[&Upstream]) -> Vec<usize> {
    ups.iter().map(|u| u.count()).collect()
}

/// The share `part / total` lies in `range`.
fn share_in(part: usize, total: usize, range: std::ops::Range<f64>, what: &str) {
    let s = part as f64 / total as f64;
    assert!(
        range.contains(&s),
        "{what}: {part}/{total} = {s:.3}, want {range:?}"
    );
}

#[test]
fn traffic_stays_local_and_fails_over_zone_region_then_elsewhere() {
    let (a, b, c, d) = (
        Upstream::echo("same-subzone"),
        Upstream::echo("same-zone"),
        Upstream::echo("same-region"),
        Upstream::echo("elsewhere"),
    );
    let gw = start(
        &[
            Ep(&d, "r2/z1/s1", ""),
            Ep(&c, "r1/z2/s1", ""),
            Ep(&b, "r1/z1/s2", ""),
            Ep(&a, "r1/z1/s1", ""),
        ],
        &failover_policy(""),
    );
    let cl = Client::http1(gw.port);
    let all = [&a, &b, &c, &d];
    assert_eq!(send(&cl, 20), 20);
    assert_eq!(counts(&all), [20, 0, 0, 0], "all local while healthy");
    let admin =
        String::from_utf8_lossy(&Client::http1(gw.admin).get("localhost", "/clusters").body)
            .into_owned();
    assert!(
        admin.contains(&format!("127.0.0.1:{}::priority::3", d.port()))
            && admin.contains(&format!("127.0.0.1:{}::zone::z2", c.port())),
        "{admin}"
    );
    for (i, failing) in all[..3].iter().enumerate() {
        fail_and_eject(&cl, failing);
        let before = counts(&all);
        assert_eq!(send(&cl, 20), 20, "after ejecting {i}");
        let mut want = [0; 4];
        want[i + 1] = 20;
        assert_eq!(since(&all, &before), want, "after ejecting endpoint {i}");
    }
}

#[test]
fn no_outlier_detection_means_no_failover() {
    // Istio applies failover only with outlier detection: without it, one pool.
    let (a, b) = (Upstream::echo("local"), Upstream::echo("remote"));
    let gw = start(
        &[Ep(&a, "r1/z1/s1", ""), Ep(&b, "r2/z1/s1", "")],
        "    loadBalancer: {simple: ROUND_ROBIN}\n",
    );
    assert_eq!(send(&Client::http1(gw.port), 40), 40);
    assert_eq!(counts(&[&a, &b]), [20, 20]);
}

#[test]
fn enabled_false_turns_failover_off() {
    let (a, b) = (Upstream::echo("local"), Upstream::echo("remote"));
    let gw = start(
        &[Ep(&a, "r1/z1/s1", ""), Ep(&b, "r2/z1/s1", "")],
        &failover_policy(", localityLbSetting: {enabled: false}"),
    );
    assert_eq!(send(&Client::http1(gw.port), 40), 40);
    assert_eq!(counts(&[&a, &b]), [20, 20]);
}

#[test]
fn a_partly_healthy_priority_keeps_its_share_by_envoy_formula() {
    // Two local endpoints, one ejected: local health = min(100, 1.4 * 1/2) = 70%, so the
    // local priority keeps 70% and the next one takes 30%.
    let (a1, a2, b) = (
        Upstream::echo("local-1"),
        Upstream::echo("local-2"),
        Upstream::echo("same-zone"),
    );
    let gw = start(
        &[
            Ep(&a1, "r1/z1/s1", ""),
            Ep(&a2, "r1/z1/s1", ""),
            Ep(&b, "r1/z1/s2", ""),
        ],
        &failover_policy(""),
    );
    let cl = Client::http1(gw.port);
    a1.set_behaviour(Behaviour::Status(503));
    // Round robin over the two local endpoints: a1 gets one of the first two requests.
    send(&cl, 2);
    assert_eq!(a1.count(), 1);
    let before = counts(&[&a1, &a2, &b]);
    let n = 1000;
    assert_eq!(send(&cl, n), n);
    let got = since(&[&a1, &a2, &b], &before);
    assert_eq!(got[0], 0, "the ejected endpoint gets nothing");
    share_in(got[1], n, 0.63..0.77, "local priority");
    share_in(got[2], n, 0.23..0.37, "next priority");
}

#[test]
fn distribute_weights_localities_and_drops_the_rest() {
    let (a, b, c) = (
        Upstream::echo("z1"),
        Upstream::echo("z2"),
        Upstream::echo("other-region"),
    );
    let gw = start(
        &[
            Ep(&a, "r1/z1/s1", ""),
            Ep(&b, "r1/z2/s1", ""),
            Ep(&c, "r2/z1/s1", ""),
        ],
        "    loadBalancer:\n      simple: ROUND_ROBIN\n      localityLbSetting:\n        distribute:\n\
         \x20       - from: r1/z1/*\n          to: {'r1/z1/*': 80, 'r1/z2/*': 20}\n",
    );
    let n = 1000;
    assert_eq!(send(&Client::http1(gw.port), n), n);
    let got = counts(&[&a, &b, &c]);
    share_in(got[0], n, 0.74..0.86, "r1/z1");
    share_in(got[1], n, 0.14..0.26, "r1/z2");
    assert_eq!(
        got[2], 0,
        "a locality distribute does not name gets nothing"
    );
}

#[test]
fn distribute_for_another_source_locality_does_not_apply() {
    let (a, b) = (Upstream::echo("z1"), Upstream::echo("z2"));
    let gw = start(
        &[Ep(&a, "r1/z1/s1", ""), Ep(&b, "r1/z2/s1", "")],
        "    loadBalancer:\n      simple: ROUND_ROBIN\n      localityLbSetting:\n        distribute:\n\
         \x20       - from: r9/*\n          to: {'r1/z2/*': 100}\n",
    );
    assert_eq!(send(&Client::http1(gw.port), 40), 40);
    assert_eq!(counts(&[&a, &b]), [20, 20]);
}

#[test]
fn failover_goes_to_the_named_region_first() {
    let (a, x, y) = (
        Upstream::echo("local"),
        Upstream::echo("r2"),
        Upstream::echo("r3"),
    );
    let gw = start(
        &[
            Ep(&a, "r1/z1/s1", ""),
            Ep(&x, "r2/z1/s1", ""),
            Ep(&y, "r3/z1/s1", ""),
        ],
        &failover_policy(", localityLbSetting: {failover: [{from: r1, to: r3}]}"),
    );
    let cl = Client::http1(gw.port);
    assert_eq!(send(&cl, 10), 10);
    assert_eq!(counts(&[&a, &x, &y]), [10, 0, 0]);
    fail_and_eject(&cl, &a);
    assert_eq!(send(&cl, 20), 20);
    assert_eq!(counts(&[&a, &x, &y]), [11, 0, 20], "r3 before r2");
    fail_and_eject(&cl, &y);
    assert_eq!(send(&cl, 20), 20);
    assert_eq!(counts(&[&a, &x, &y]), [11, 20, 21]);
}

#[test]
fn failover_priority_follows_labels_before_locality() {
    // The gateway is on network n1 (a label); the endpoint on n1 is in another region, the
    // one in the gateway's own locality is on n2: the label decides.
    let (near, far) = (Upstream::echo("near-n2"), Upstream::echo("far-n1"));
    let yaml = config(
        &[
            Ep(&near, "r1/z1/s1", "net: n2"),
            Ep(&far, "r2/z1/s1", "net: n1"),
        ],
        &failover_policy(", localityLbSetting: {failoverPriority: [net]}"),
    );
    let gw = Gateway::start_with(
        &yaml,
        &[
            "--locality",
            LOCALITY,
            "--labels",
            "istio=ingressgateway,net=n1",
        ],
    );
    let cl = Client::http1(gw.port);
    assert_eq!(send(&cl, 20), 20);
    assert_eq!(counts(&[&near, &far]), [0, 20]);
    fail_and_eject(&cl, &far);
    assert_eq!(send(&cl, 20), 20);
    assert_eq!(counts(&[&near, &far]), [20, 21]);
}

#[test]
fn failover_priority_with_topology_labels() {
    // Istio adds topology labels from localities, so failoverPriority can name them.
    let (zone, region) = (Upstream::echo("same-zone"), Upstream::echo("same-region"));
    let gw = start(
        &[Ep(&region, "r1/z2/s1", ""), Ep(&zone, "r1/z1/s9", "")],
        &failover_policy(
            ", localityLbSetting: {failoverPriority: [topology.kubernetes.io/region, topology.kubernetes.io/zone]}",
        ),
    );
    let cl = Client::http1(gw.port);
    assert_eq!(send(&cl, 20), 20);
    assert_eq!(counts(&[&zone, &region]), [20, 0]);
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn warmup_gives_a_new_endpoint_less_traffic_at_first() {
    for lb in [
        "{simple: ROUND_ROBIN, warmupDurationSecs: 60s}",
        "{simple: LEAST_REQUEST, warmup: {duration: 60s, minimumPercent: 10, aggression: 1}}",
    ] {
        let (old, new) = (Upstream::echo("old"), Upstream::echo("new"));
        let policy = format!("    loadBalancer: {lb}\n");
        let gw = start(&[Ep(&old, "r1/z1/s1", "")], &policy);
        let cl = Client::http1(gw.port);
        assert_eq!(send(&cl, 5), 5);
        // The new endpoint joins a running cluster: it starts at 10% of its weight.
        gw.rewrite_config(&config(
            &[Ep(&old, "r1/z1/s1", ""), Ep(&new, "r1/z1/s1", "")],
            &policy,
        ));
        eventually("the new endpoint serves", || {
            send(&cl, 1);
            new.count() > 0
        });
        let before = counts(&[&old, &new]);
        let n = 600;
        assert_eq!(send(&cl, n), n);
        let got = since(&[&old, &new], &before);
        // Weight 0.1..0.15 against 1 while the window is young: about 9-13% of requests.
        share_in(got[1], n, 0.04..0.22, lb);
        // The endpoints the cluster started with are not slowed: without warmup both share.
        drop(gw);
        let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
        let gw = start(&[Ep(&a, "r1/z1/s1", ""), Ep(&b, "r1/z1/s1", "")], &policy);
        let cl = Client::http1(gw.port);
        assert_eq!(send(&cl, 400), 400);
        share_in(a.count(), 400, 0.4..0.6, "endpoints present from the start");
    }
}

#[test]
fn retry_remote_localities_retries_in_another_priority() {
    let (a1, a2, b) = (
        Upstream::echo("a1"),
        Upstream::echo("a2"),
        Upstream::echo("b"),
    );
    let eps = [
        Ep(&a1, LOCALITY, ""),
        Ep(&a2, LOCALITY, ""),
        Ep(&b, "r2/z9/s9", ""),
    ];
    // Outlier detection only to turn failover priorities on: it never ejects here.
    let policy = "    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 1000}\n";
    a1.set_behaviour(Behaviour::Status(503));
    a2.set_behaviour(Behaviour::Status(503));
    for (retries, retried_on) in [
        ("{attempts: 1, retryOn: 5xx}", "local"),
        (
            "{attempts: 1, retryOn: 5xx, retryRemoteLocalities: true}",
            "b",
        ),
    ] {
        let y =
            config(&eps, policy).replace("retries: {attempts: 0}", &format!("retries: {retries}"));
        let gw = Gateway::start_with(&y, &["--locality", LOCALITY]);
        let c = Client::http1(gw.port);
        let before = counts(&[&a1, &a2, &b]);
        for _ in 0..6 {
            c.get(HOST, "/");
        }
        let got = since(&[&a1, &a2, &b], &before);
        // Six first attempts, all local (a1 and a2 fail), and six retries.
        assert_eq!(got.iter().sum::<usize>(), 12, "{retries}: {got:?}");
        match retried_on {
            // The retry stays in the local priority (on the other local endpoint).
            "local" => assert_eq!(got, vec![6, 6, 0], "{retries}"),
            // Every retry goes to the remote locality.
            _ => assert_eq!(got[2], 6, "{retries}: {got:?}"),
        }
    }
}

/// Who served each of `n` requests, counted per upstream name.
fn shares(c: &Client, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        *m.entry(c.get(HOST, "/").upstream().to_owned()).or_insert(0) += 1;
    }
    m
}

/// Sends requests (at most 50) until `who` answers one.
fn until_served_by(c: &Client, who: &str) {
    for _ in 0..50 {
        if c.get(HOST, "/").upstream() == who {
            return;
        }
    }
    panic!("{who} never answered");
}

#[test]
fn failover_shares_match_envoy() {
    let Some(bin) = support::envoy::required() else {
        return;
    };
    let (a1, a2) = (Upstream::echo("a1"), Upstream::echo("a2"));
    let (b, c) = (Upstream::echo("b"), Upstream::echo("c"));
    let eps = [
        Ep(&a1, LOCALITY, ""),
        Ep(&a2, LOCALITY, ""),
        Ep(&b, "r1/z2/s2", ""),
        Ep(&c, "r2/z3/s3", ""),
    ];
    let gw = start(&eps, &failover_policy(""));
    let admin = Client::http1(gw.admin);
    let dump = admin.get("localhost", "/config_dump").json();
    // The priorities meshgate gave the endpoints (Istio's part), handed to Envoy as priorities
    // of its load assignment, so what is compared is the spill-over between them (Envoy's part).
    let clusters = String::from_utf8_lossy(&admin.get("localhost", "/clusters").body).into_owned();
    let cluster = "outbound|80||svc.test.svc.cluster.local";
    let priority = |port: u16| -> u64 {
        let key = format!("{cluster}::127.0.0.1:{port}::priority::");
        clusters
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no priority for {port}:\n{clusters}"))
    };
    let levels: Vec<(u64, &Upstream, &str)> = eps
        .iter()
        .map(|Ep(u, loc, _)| (priority(u.port()), *u, *loc))
        .collect();
    assert_eq!(
        levels.iter().map(|l| l.0).collect::<Vec<_>>(),
        vec![0, 0, 1, 2],
        "Istio's default failover: same locality, same region, elsewhere"
    );
    let ev = support::envoy::Envoy::start_edited(&bin, &dump, |cfg| {
        let clusters = cfg["static_resources"]["clusters"]
            .as_array_mut()
            .expect("clusters");
        for cl in clusters.iter_mut().filter(|cl| cl["name"] == cluster) {
            let groups: Vec<serde_json::Value> = levels
                .iter()
                .map(|(p, u, loc)| {
                    let mut parts = loc.split('/');
                    serde_json::json!({
                        "priority": p,
                        "locality": {"region": parts.next(), "zone": parts.next(), "sub_zone": parts.next()},
                        "lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": u.port()}}}}],
                    })
                })
                .collect();
            cl["load_assignment"]["endpoints"] = serde_json::json!(groups);
        }
    });
    let ejected = |port: u16, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = if port == gw.port {
                gw.cluster_stat(cluster, "outlier_detection_ejections_active")
            } else {
                ev.cluster_stat(cluster, "outlier_detection.ejections_active")
            };
            if now >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{port}: {now} of {n} ejections");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Envoy's workers route around an ejection a moment after its stats show it (up to an
    // outlier interval, 1 s here): wait that long on both before counting.
    let settle = || std::thread::sleep(Duration::from_millis(1500));
    let mut runs = Vec::new();
    for port in [gw.port, ev.port] {
        let cl = Client::http1(port);
        let healthy = shares(&cl, 40);
        // One local endpoint fails once and is ejected: half the local priority is healthy,
        // times the overprovisioning factor, keeps 70% of the load; the rest spills over.
        a1.set_behaviour(Behaviour::FailNext { n: 1, status: 503 });
        until_served_by(&cl, "a1");
        ejected(port, 1);
        settle();
        let half = shares(&cl, 400);
        // The other local endpoint goes too: everything moves to the next priority.
        a2.set_behaviour(Behaviour::FailNext { n: 1, status: 503 });
        until_served_by(&cl, "a2");
        ejected(port, 2);
        settle();
        let none = shares(&cl, 40);
        runs.push((healthy, half, none));
    }
    let (ours, theirs) = (&runs[0], &runs[1]);
    assert_eq!(
        ours.0, theirs.0,
        "all healthy: meshgate (left), Envoy (right)"
    );
    assert_eq!(
        ours.2, theirs.2,
        "local priority gone: meshgate (left), Envoy (right)"
    );
    for who in ["a2", "b", "c"] {
        let (o, t) = (
            ours.1.get(who).copied().unwrap_or(0),
            theirs.1.get(who).copied().unwrap_or(0),
        );
        // 400 requests at 70/30: sd about 9; a generous band for two random splits.
        assert!(
            o.abs_diff(t) <= 60,
            "{who}: meshgate {o}, Envoy {t} of 400 ({ours:?} / {theirs:?})"
        );
    }
}
