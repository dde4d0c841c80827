//! Validation of `DestinationRule`: host, subsets and every traffic policy (top-level, port-level
//! and per subset): load balancer, locality, warmup, connection pool, outlier detection, TLS.

use std::collections::HashSet;

use super::common::{
    check_duration, check_export_to, check_labels, check_port, check_wildcard_domain,
    check_workload_selector, is_dns1123_label,
};
use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::common::Duration;
use crate::model::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings,
    LocalityLoadBalancerSetting, OutlierDetection, TrafficPolicy,
};
use crate::model::DestinationRule;

/// Validates a `DestinationRule` spec.
pub fn validate(spec: &DestinationRule, _ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    if spec.host.is_empty() {
        r.error(&at.field("host"), "Required value: host is required");
    } else {
        check_wildcard_domain(&spec.host, &at.field("host"), r);
    }
    if let Some(tp) = &spec.traffic_policy {
        check_policy(tp, &at.field("trafficPolicy"), true, r);
    }
    let mut names = HashSet::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let here = at.field("subsets").index(i);
        if s.name.is_empty() {
            r.error(
                &here.field("name"),
                "Required value: subset name is required",
            );
        } else if !is_dns1123_label(&s.name) {
            r.error(
                &here.field("name"),
                format!(
                    "subset name {:?} is invalid: must be a DNS-1123 label",
                    s.name
                ),
            );
        } else if !names.insert(s.name.as_str()) {
            r.error(
                &here.field("name"),
                format!("duplicate subset name {:?}", s.name),
            );
        }
        check_labels(&s.labels, &here.field("labels"), r);
        if let Some(tp) = &s.traffic_policy {
            check_policy(tp, &here.field("trafficPolicy"), true, r);
        }
    }
    if let Some(sel) = &spec.workload_selector {
        check_workload_selector(sel, &at.field("workloadSelector"), r);
    }
    check_export_to(&spec.export_to, &at.field("exportTo"), r);
}

fn opt_duration(d: Option<Duration>, at: &FieldPath, r: &mut Report) {
    if let Some(d) = d {
        check_duration(d, at, r);
    }
}

fn non_negative(v: i32, at: &FieldPath, r: &mut Report) {
    if v < 0 {
        r.error(at, "must not be negative");
    }
}

fn check_policy(tp: &TrafficPolicy, at: &FieldPath, top: bool, r: &mut Report) {
    if let Some(lb) = &tp.load_balancer {
        check_lb(lb, &at.field("loadBalancer"), r);
    }
    if let Some(cp) = &tp.connection_pool {
        check_pool(cp, &at.field("connectionPool"), r);
    }
    if let Some(od) = &tp.outlier_detection {
        check_outlier(od, &at.field("outlierDetection"), r);
    }
    if let Some(tls) = &tp.tls {
        check_client_tls(tls, &at.field("tls"), r);
    }
    if let Some(t) = &tp.tunnel {
        let here = at.field("tunnel");
        if !t.protocol.is_empty()
            && !["CONNECT", "POST"].contains(&t.protocol.to_ascii_uppercase().as_str())
        {
            r.error(
                &here.field("protocol"),
                "tunnel protocol must be CONNECT or POST",
            );
        }
        if t.target_host.is_empty() {
            r.error(
                &here.field("targetHost"),
                "Required value: targetHost is required",
            );
        }
        check_port(t.target_port, &here.field("targetPort"), r);
    }
    if let Some(b) = &tp.retry_budget {
        if let Some(p) = b.percent {
            if !(0.0..=100.0).contains(&p) {
                r.error(
                    &at.field("retryBudget.percent"),
                    "percent must be between 0 and 100",
                );
            }
        }
    }
    let mut ports = HashSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let here = at.field("portLevelSettings").index(i);
        if !top {
            r.error(&here, "portLevelSettings are not allowed here");
        }
        match pl.port {
            None => r.error(
                &here.field("port"),
                "Required value: port must be specified",
            ),
            Some(p) => {
                check_port(p.number, &here.field("port.number"), r);
                if !ports.insert(p.number) {
                    r.error(
                        &here.field("port"),
                        format!("duplicate port-level settings for port {}", p.number),
                    );
                }
            }
        }
        if let Some(lb) = &pl.load_balancer {
            check_lb(lb, &here.field("loadBalancer"), r);
        }
        if let Some(cp) = &pl.connection_pool {
            check_pool(cp, &here.field("connectionPool"), r);
        }
        if let Some(od) = &pl.outlier_detection {
            check_outlier(od, &here.field("outlierDetection"), r);
        }
        if let Some(tls) = &pl.tls {
            check_client_tls(tls, &here.field("tls"), r);
        }
    }
}

fn check_lb(lb: &LoadBalancerSettings, at: &FieldPath, r: &mut Report) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        r.error(at, "only one of simple or consistentHash may be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        let here = at.field("consistentHash");
        let keys = usize::from(ch.http_header_name.is_some())
            + usize::from(ch.http_cookie.is_some())
            + usize::from(ch.use_source_ip.is_some())
            + usize::from(ch.http_query_parameter_name.is_some());
        if keys > 1 {
            r.error(&here, "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set");
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            r.error(&here, "only one of ringHash or maglev may be set");
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                r.error(
                    &here.field("httpCookie.name"),
                    "Required value: cookie name is required",
                );
            }
            if let Some(ttl) = c.ttl {
                if ttl.as_nanos() < 0 {
                    r.error(&here.field("httpCookie.ttl"), "ttl must not be negative");
                }
            }
        }
        if ch.http_header_name.as_deref() == Some("") {
            r.error(
                &here.field("httpHeaderName"),
                "header name must not be empty",
            );
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        check_locality(l, &at.field("localityLbSetting"), r);
    }
    opt_duration(lb.warmup_duration_secs, &at.field("warmupDurationSecs"), r);
    if lb.warmup.is_some() && lb.warmup_duration_secs.is_some() {
        r.error(at, "only one of warmup or warmupDurationSecs may be set");
    }
    if let Some(w) = &lb.warmup {
        let here = at.field("warmup");
        match w.duration {
            None => r.error(
                &here.field("duration"),
                "Required value: warmup duration is required",
            ),
            Some(d) => check_duration(d, &here.field("duration"), r),
        }
        if let Some(p) = w.minimum_percent {
            if !(0.0..=100.0).contains(&p) {
                r.error(
                    &here.field("minimumPercent"),
                    format!("Invalid value: {p}: minimumPercent must be between 0 and 100"),
                );
            }
        }
        if let Some(a) = w.aggression {
            if a.is_nan() || a <= 0.0 {
                r.error(
                    &here.field("aggression"),
                    format!("Invalid value: {a}: aggression must be greater than 0"),
                );
            }
        }
    }
}

/// `region[/zone[/subzone]]`, `*` allowed only as the last segment.
fn locality_ok(l: &str) -> bool {
    let parts: Vec<&str> = l.split('/').collect();
    !l.is_empty()
        && parts.len() <= 3
        && parts.iter().enumerate().all(|(i, p)| {
            !p.is_empty() && (!p.contains('*') || (*p == "*" && i == parts.len() - 1))
        })
}

fn check_locality(l: &LocalityLoadBalancerSetting, at: &FieldPath, r: &mut Report) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        r.error(at, "can not simultaneously set 'distribute' and 'failover'");
    }
    let mut froms = HashSet::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let here = at.field("distribute").index(i);
        if !locality_ok(&d.from) {
            r.error(
                &here.field("from"),
                format!("locality {:?} is invalid", d.from),
            );
        } else if !froms.insert(d.from.as_str()) {
            r.error(
                &here.field("from"),
                format!("locality {:?} is set more than once", d.from),
            );
        }
        let mut total: u64 = 0;
        for (to, w) in &d.to {
            if !locality_ok(to) {
                r.error(
                    &here.field("to").key(to),
                    format!("locality {to:?} is invalid"),
                );
            }
            total += u64::from(*w);
        }
        if total != 100 {
            r.error(&here.field("to"), format!("total weight {total} != 100"));
        }
    }
    for (i, f) in l.failover.iter().enumerate() {
        let here = at.field("failover").index(i);
        if f.from == f.to {
            r.error(&here, "failover 'from' and 'to' cannot be the same");
        }
        for (field, v) in [("from", &f.from), ("to", &f.to)] {
            if v.contains('/') || v.contains('*') || v.is_empty() {
                r.error(
                    &here.field(field),
                    format!("failover {field} must be a region, got {v:?}"),
                );
            }
        }
    }
}

fn check_pool(cp: &ConnectionPoolSettings, at: &FieldPath, r: &mut Report) {
    if let Some(t) = &cp.tcp {
        let here = at.field("tcp");
        non_negative(t.max_connections, &here.field("maxConnections"), r);
        opt_duration(t.connect_timeout, &here.field("connectTimeout"), r);
        opt_duration(
            t.max_connection_duration,
            &here.field("maxConnectionDuration"),
            r,
        );
        opt_duration(t.idle_timeout, &here.field("idleTimeout"), r);
        if let Some(k) = &t.tcp_keepalive {
            opt_duration(k.time, &here.field("tcpKeepalive.time"), r);
            opt_duration(k.interval, &here.field("tcpKeepalive.interval"), r);
        }
    }
    if let Some(h) = &cp.http {
        let here = at.field("http");
        non_negative(
            h.http1_max_pending_requests,
            &here.field("http1MaxPendingRequests"),
            r,
        );
        non_negative(h.http2_max_requests, &here.field("http2MaxRequests"), r);
        non_negative(
            h.max_requests_per_connection,
            &here.field("maxRequestsPerConnection"),
            r,
        );
        non_negative(h.max_retries, &here.field("maxRetries"), r);
        non_negative(
            h.max_concurrent_streams,
            &here.field("maxConcurrentStreams"),
            r,
        );
        opt_duration(h.idle_timeout, &here.field("idleTimeout"), r);
        if let Some(k) = &h.http2_keep_alive {
            opt_duration(k.interval, &here.field("http2KeepAlive.interval"), r);
            opt_duration(k.timeout, &here.field("http2KeepAlive.timeout"), r);
        }
    }
}

fn check_outlier(od: &OutlierDetection, at: &FieldPath, r: &mut Report) {
    non_negative(od.consecutive_errors, &at.field("consecutiveErrors"), r);
    opt_duration(od.interval, &at.field("interval"), r);
    opt_duration(od.base_ejection_time, &at.field("baseEjectionTime"), r);
    for (v, f) in [
        (od.max_ejection_percent, "maxEjectionPercent"),
        (od.min_health_percent, "minHealthPercent"),
    ] {
        if !(0..=100).contains(&v) {
            r.error(&at.field(f), "percentage must be in range [0, 100]");
        }
    }
    if od.consecutive_local_origin_failures.is_some() && !od.split_external_local_origin_errors {
        r.error(
            &at.field("consecutiveLocalOriginFailures"),
            "consecutive local origin errors is set but split local origin errors is not set",
        );
    }
    for (i, c) in od.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(c) {
            r.error(
                &at.field("outlierDetectionHttpErrorCodes").index(i),
                "status code must be in 100-599",
            );
        }
    }
}

fn check_client_tls(t: &ClientTlsSettings, at: &FieldPath, r: &mut Report) {
    let files = !t.client_certificate.is_empty()
        || !t.private_key.is_empty()
        || !t.ca_certificates.is_empty();
    if !t.credential_name.is_empty() && files {
        r.error(
            at,
            "cannot specify client certificates or CA certificate together with credentialName",
        );
    }
    match t.mode {
        ClientTlsMode::Mutual if t.credential_name.is_empty() => {
            if t.client_certificate.is_empty() {
                r.error(
                    &at.field("clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if t.private_key.is_empty() {
                r.error(
                    &at.field("privateKey"),
                    "private key required for mutual tls",
                );
            }
        }
        ClientTlsMode::IstioMutual if files || !t.credential_name.is_empty() => {
            r.error(at, "cannot specify client certificates, CA certificate or credentialName with ISTIO_MUTUAL");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::{errors_of, has};

    #[test]
    fn host_and_subsets() {
        let e = errors_of(
            "DestinationRule",
            "subsets: [{name: v1}, {name: v1}, {name: Bad_Name}, {labels: {version: v3}}]",
        );
        assert!(has(&e, "spec.host", "Required value"));
        assert!(has(&e, "spec.subsets[1].name", "duplicate subset name"));
        assert!(has(&e, "spec.subsets[2].name", "DNS-1123"));
        assert!(has(&e, "spec.subsets[3].name", "Required value"));
    }

    #[test]
    fn traffic_policies() {
        let e = errors_of(
            "DestinationRule",
            "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    simple: ROUND_ROBIN\n    consistentHash: {httpHeaderName: a, useSourceIp: true, ringHash: {minimumRingSize: 1}, maglev: {tableSize: 7}}\n    localityLbSetting:\n      distribute: [{from: 'a/b/*', to: {'a/b/*': 60}}]\n      failover: [{from: a, to: a}]\n  connectionPool:\n    tcp: {maxConnections: -1, connectTimeout: 0s}\n    http: {http1MaxPendingRequests: -2, idleTimeout: 10us}\n  outlierDetection: {maxEjectionPercent: 120, consecutiveLocalOriginFailures: 3, interval: 0s}\n  tls: {mode: MUTUAL}\n  portLevelSettings: [{loadBalancer: {simple: RANDOM}}, {port: {number: 80}}, {port: {number: 80}}]",
        );
        for (f, m) in [
            (
                "spec.trafficPolicy.loadBalancer",
                "only one of simple or consistentHash",
            ),
            (
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "only one of httpHeaderName",
            ),
            (
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "only one of ringHash or maglev",
            ),
            (
                "spec.trafficPolicy.loadBalancer.localityLbSetting",
                "simultaneously",
            ),
            (
                "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
                "total weight 60 != 100",
            ),
            (
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
                "cannot be the same",
            ),
            (
                "spec.trafficPolicy.connectionPool.tcp.maxConnections",
                "negative",
            ),
            (
                "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
                "1ms",
            ),
            (
                "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
                "negative",
            ),
            ("spec.trafficPolicy.connectionPool.http.idleTimeout", "1ms"),
            (
                "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                "range",
            ),
            (
                "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
                "split local origin",
            ),
            ("spec.trafficPolicy.outlierDetection.interval", "1ms"),
            ("spec.trafficPolicy.tls.clientCertificate", "mutual tls"),
            (
                "spec.trafficPolicy.portLevelSettings[0].port",
                "Required value",
            ),
            ("spec.trafficPolicy.portLevelSettings[2].port", "duplicate"),
        ] {
            assert!(has(&e, f, m), "{f}: {m} in {e:?}");
        }
    }

    #[test]
    fn warmup() {
        let e = errors_of("DestinationRule", "host: r\ntrafficPolicy: {loadBalancer: {warmup: {minimumPercent: 150, aggression: -0.1}}}");
        assert!(has(
            &e,
            "spec.trafficPolicy.loadBalancer.warmup.duration",
            "Required value"
        ));
        assert!(has(
            &e,
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
            "Invalid value"
        ));
        assert!(has(
            &e,
            "spec.trafficPolicy.loadBalancer.warmup.aggression",
            "Invalid value"
        ));
        assert!(errors_of("DestinationRule", "host: r\ntrafficPolicy: {loadBalancer: {simple: LEAST_REQUEST, warmup: {duration: 30s, minimumPercent: 5, aggression: 2}}}").is_empty());
    }
}
