//! Unit tests of the detector's counting, ejection limits and routable set.

use std::net::SocketAddr;

use super::*;

fn od(json: &str) -> Settings {
    let od: OutlierDetection = serde_json::from_str(json).expect("outlier json");
    Settings::from_istio(&od)
}

fn eps(n: u16) -> Arc<EndpointSet> {
    let endpoints: Vec<Arc<LiveEndpoint>> = (0..n)
        .map(|i| {
            Arc::new(LiveEndpoint::new(
                SocketAddr::from(([127, 0, 0, 1], 20_000 + i)),
                1,
            ))
        })
        .collect();
    Arc::new(EndpointSet::new(endpoints, LbKind::RoundRobin))
}

/// Reports `result` `n` times on endpoint `i`, ejecting as the cluster would.
fn report(d: &Detector, set: &EndpointSet, i: usize, result: AttemptResult, n: usize) {
    let ep = &set.endpoints[i];
    for _ in 0..n {
        for kind in d.record(&ep.outlier, result).into_iter().flatten() {
            let _g = d.lock();
            d.eject(&set.endpoints, ep, kind);
        }
    }
}

fn stat(d: &Detector, name: &str) -> u64 {
    d.stats
        .values()
        .iter()
        .find(|v| v.0 == name)
        .map(|v| v.1)
        .expect("stat exists")
}

#[test]
fn istio_defaults_and_mapping() {
    let s = od(r#"{}"#);
    assert_eq!((s.consecutive_5xx, s.enforce_5xx), (5, true));
    assert_eq!((s.consecutive_gateway, s.enforce_gateway), (5, false));
    assert_eq!(s.interval, Duration::from_secs(10));
    assert_eq!(s.base_ejection, Duration::from_secs(30));
    assert_eq!(s.max_ejection, Duration::from_secs(300));
    assert_eq!((s.max_ejection_percent, s.panic_threshold), (10, 0));
    let s = od(
        r#"{"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 3, "baseEjectionTime": "400s", "maxEjectionPercent": 250, "minHealthPercent": 30}"#,
    );
    assert!(!s.enforce_5xx);
    assert_eq!((s.consecutive_gateway, s.enforce_gateway), (3, true));
    assert_eq!(s.max_ejection, Duration::from_secs(400));
    assert_eq!((s.max_ejection_percent, s.panic_threshold), (100, 30));
}

#[test]
fn consecutive_5xx_ejects_and_success_resets() {
    let d = Detector::new(od(
        r#"{"consecutive5xxErrors": 3, "maxEjectionPercent": 100}"#,
    ));
    let set = eps(2);
    report(&d, &set, 0, AttemptResult::Response(500), 2);
    report(&d, &set, 0, AttemptResult::Response(200), 1);
    report(&d, &set, 0, AttemptResult::Response(500), 2);
    assert!(
        !set.endpoints[0].outlier.is_ejected(),
        "a success resets the count"
    );
    report(&d, &set, 0, AttemptResult::Response(500), 1);
    assert!(set.endpoints[0].outlier.is_ejected());
    assert_eq!(stat(&d, "ejections_enforced_consecutive_5xx"), 1);
    assert_eq!(stat(&d, "ejections_active"), 1);
    let r = d.routable(&set, LbKind::RoundRobin);
    assert_eq!(r.endpoints.len(), 1);
    assert_eq!(r.endpoints[0].addr, set.endpoints[1].addr);
}

#[test]
fn gateway_errors_and_local_origin_mapping() {
    // Not split: a reset counts as a 503, so as a gateway error too.
    let d = Detector::new(od(
        r#"{"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 2, "maxEjectionPercent": 100}"#,
    ));
    let set = eps(2);
    report(&d, &set, 0, AttemptResult::Response(502), 1);
    report(&d, &set, 0, AttemptResult::Response(500), 1);
    report(&d, &set, 0, AttemptResult::Response(504), 1);
    assert!(
        !set.endpoints[0].outlier.is_ejected(),
        "a 500 breaks the gateway run"
    );
    report(&d, &set, 0, AttemptResult::Reset, 1);
    assert!(set.endpoints[0].outlier.is_ejected());
    assert_eq!(
        stat(&d, "ejections_enforced_consecutive_gateway_failure"),
        1
    );
    // Split: connect failures count apart; resets after a connection never add up.
    let d = Detector::new(od(
        r#"{"splitExternalLocalOriginErrors": true, "consecutiveLocalOriginFailures": 2, "maxEjectionPercent": 100}"#,
    ));
    report(&d, &set, 1, AttemptResult::Reset, 6);
    assert!(!set.endpoints[1].outlier.is_ejected());
    report(&d, &set, 1, AttemptResult::ConnectFailure, 2);
    assert!(set.endpoints[1].outlier.is_ejected());
    assert_eq!(
        stat(&d, "ejections_enforced_consecutive_local_origin_failure"),
        1
    );
    assert_eq!(stat(&d, "ejections_detected_consecutive_5xx"), 0);
}

#[test]
fn max_ejection_percent_overflows() {
    // Envoy's default 10% never allows ejecting one of two endpoints.
    let d = Detector::new(od(r#"{"consecutive5xxErrors": 2}"#));
    let set = eps(2);
    report(&d, &set, 0, AttemptResult::Response(503), 4);
    assert!(!set.endpoints[0].outlier.is_ejected());
    assert_eq!(stat(&d, "ejections_overflow"), 2);
    let d = Detector::new(od(
        r#"{"consecutive5xxErrors": 1, "maxEjectionPercent": 50}"#,
    ));
    let set = eps(4);
    report(&d, &set, 0, AttemptResult::Response(503), 1);
    report(&d, &set, 1, AttemptResult::Response(503), 1);
    report(&d, &set, 2, AttemptResult::Response(503), 1);
    assert_eq!(stat(&d, "ejections_active"), 2);
    assert_eq!(stat(&d, "ejections_overflow"), 1);
}

#[test]
fn panic_threshold_and_last_endpoint() {
    let d = Detector::new(od(
        r#"{"consecutive5xxErrors": 1, "maxEjectionPercent": 100, "minHealthPercent": 60}"#,
    ));
    let set = eps(2);
    report(&d, &set, 0, AttemptResult::Response(503), 1);
    assert!(set.endpoints[0].outlier.is_ejected());
    assert_eq!(
        d.routable(&set, LbKind::Random).endpoints.len(),
        2,
        "50% < 60%: panic"
    );
    let d = Detector::new(od(
        r#"{"consecutive5xxErrors": 1, "maxEjectionPercent": 100}"#,
    ));
    let one = eps(1);
    report(&d, &one, 0, AttemptResult::Response(503), 1);
    assert!(d.routable(&one, LbKind::Random).endpoints.is_empty());
}

#[test]
fn sweep_brings_endpoints_back_with_backoff() {
    let d = Detector::new(od(
        r#"{"consecutive5xxErrors": 1, "maxEjectionPercent": 100, "interval": "1ms", "baseEjectionTime": "40ms"}"#,
    ));
    let set = eps(2);
    report(&d, &set, 0, AttemptResult::Response(503), 1);
    let o = &set.endpoints[0].outlier;
    assert_eq!(o.backoff.load(Relaxed), 1);
    std::thread::sleep(Duration::from_millis(5));
    assert!(!d.sweep(&set.endpoints).0, "ejection time not over");
    std::thread::sleep(Duration::from_millis(45));
    assert!(d.sweep(&set.endpoints).0);
    assert!(!o.is_ejected());
    assert_eq!(stat(&d, "ejections_active"), 0);
    // Ejected again at once: twice the base time.
    report(&d, &set, 0, AttemptResult::Response(503), 1);
    assert_eq!(o.backoff.load(Relaxed), 2);
    assert_eq!(o.times_ejected(), 2);
}
