//! Validation of `Sidecar`: egress hosts (`namespace/dnsName`), listeners and ports, ingress
//! default endpoints, selectors and outbound policy (Istio's `ValidateSidecar`).

use std::collections::HashSet;

use super::common::{
    check_label_selector, check_port, is_dns1123_label, is_ip, wildcard_domain_error,
};
use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::sidecar::{CaptureMode, OutboundMode};
use crate::model::Sidecar;

/// Validates a `Sidecar` spec.
pub fn validate(spec: &Sidecar, _ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    if let Some(sel) = &spec.workload_selector {
        check_label_selector(sel, &at.field("workloadSelector"), r);
    }
    let mut ingress_ports = HashSet::new();
    for (i, l) in spec.ingress.iter().enumerate() {
        let here = at.field("ingress").index(i);
        match &l.port {
            None => r.error(
                &here.field("port"),
                "Required value: sidecar ingress listener needs a port",
            ),
            Some(p) => {
                check_port(p.number, &here.field("port.number"), r);
                if !ingress_ports.insert((l.bind.as_str(), p.number)) {
                    r.error(
                        &here.field("port"),
                        format!(
                            "sidecar: ports on IP bound listeners must be unique: {}",
                            p.number
                        ),
                    );
                }
            }
        }
        if !l.bind.is_empty() && !is_ip(&l.bind) {
            r.error(&here.field("bind"), "bind must be an IP address");
        }
        if !l.default_endpoint.is_empty() && !default_endpoint_ok(&l.default_endpoint) {
            r.error(
                &here.field("defaultEndpoint"),
                "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix://filepath",
            );
        }
    }
    let mut catch_all = 0;
    let mut egress_ports = HashSet::new();
    for (i, l) in spec.egress.iter().enumerate() {
        let here = at.field("egress").index(i);
        match &l.port {
            None => {
                catch_all += 1;
                if i + 1 != spec.egress.len() {
                    r.error(&here, "sidecar: the egress listener with empty port should be the last listener in the list");
                }
            }
            Some(p) => {
                check_port(p.number, &here.field("port.number"), r);
                if !egress_ports.insert((l.bind.as_str(), p.number)) {
                    r.error(
                        &here.field("port"),
                        format!(
                            "sidecar: ports on egress listeners must be unique: {}",
                            p.number
                        ),
                    );
                }
            }
        }
        if l.hosts.is_empty() {
            r.error(
                &here.field("hosts"),
                "Required value: sidecar: egress listener must contain at least one host",
            );
        }
        for (j, h) in l.hosts.iter().enumerate() {
            if let Some(e) = egress_host_error(h) {
                r.error(&here.field("hosts").index(j), e);
            }
        }
        if !l.bind.is_empty() && !is_ip(&l.bind) && !l.bind.starts_with("unix://") {
            r.error(
                &here.field("bind"),
                "bind must be an IP address or a unix:// socket",
            );
        }
        if l.capture_mode == CaptureMode::None && l.bind.is_empty() && l.port.is_some() {
            r.warn(
                &here.field("bind"),
                "captureMode NONE without a bind address listens on all addresses",
            );
        }
    }
    if catch_all > 1 {
        r.error(
            &at.field("egress"),
            "sidecar: only one egress listener may omit the port",
        );
    }
    if let Some(p) = &spec.outbound_traffic_policy {
        if let Some(proxy) = &p.egress_proxy {
            if proxy.host.is_empty() {
                r.error(
                    &at.field("outboundTrafficPolicy.egressProxy.host"),
                    "Required value: host is required",
                );
            }
            if p.mode != OutboundMode::AllowAny {
                r.error(
                    &at.field("outboundTrafficPolicy.egressProxy"),
                    "egress_proxy can be set only with ALLOW_ANY outbound traffic policy mode",
                );
            }
        }
    }
}

fn default_endpoint_ok(e: &str) -> bool {
    if let Some(path) = e.strip_prefix("unix://") {
        return path.starts_with('/') || path.starts_with('@');
    }
    let Some((host, port)) = e.rsplit_once(':') else {
        return false;
    };
    matches!(host, "127.0.0.1" | "0.0.0.0" | "[::1]" | "[::]")
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// `namespace/dnsName` with `*`, `.` or `~` namespaces.
fn egress_host_error(h: &str) -> Option<String> {
    let Some((ns, dns)) = h.split_once('/') else {
        return Some(format!(
            "sidecar: a sidecar egress host must be of form namespace/dnsName, got {h:?}"
        ));
    };
    if !(ns == "*" || ns == "." || ns == "~" || is_dns1123_label(ns)) {
        return Some(format!(
            "sidecar: invalid namespace {ns:?} in egress host {h:?}"
        ));
    }
    if dns == "*" {
        return None;
    }
    wildcard_domain_error(dns)
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::{errors_of, has};

    #[test]
    fn egress_and_ingress() {
        let e = errors_of("Sidecar", "egress:\n- hosts: [foo.com, 'bad ns/x', './*']\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: []\ningress:\n- defaultEndpoint: '1.2.3.4:80'\n- port: {number: 9080, name: http, protocol: HTTP}\n  defaultEndpoint: '127.0.0.1:8080'");
        assert!(has(&e, "spec.egress[0]", "should be the last listener"));
        assert!(has(&e, "spec.egress[0].hosts[0]", "namespace/dnsName"));
        assert!(has(&e, "spec.egress[0].hosts[1]", "invalid namespace"));
        assert!(has(&e, "spec.egress[1].hosts", "at least one host"));
        assert!(has(&e, "spec.ingress[0].port", "Required value"));
        assert!(has(
            &e,
            "spec.ingress[0].defaultEndpoint",
            "must be of form"
        ));
        assert!(errors_of("Sidecar", "workloadSelector: {labels: {app: a}}\negress:\n- hosts: ['./*', 'istio-system/*']\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}").is_empty());
        let e = errors_of(
            "Sidecar",
            "outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: proxy}}",
        );
        assert!(has(
            &e,
            "spec.outboundTrafficPolicy.egressProxy",
            "ALLOW_ANY"
        ));
    }
}
