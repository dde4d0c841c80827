//! Validation of `WorkloadEntry` and `WorkloadGroup` (and the workload-entry shape that
//! ServiceEntry endpoints share): Istio's webhook rules and the CRD's CEL rules.

use super::common::{check_labels, check_port_range};
use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::workload::{ReadinessProbe, WorkloadEntry, WorkloadGroup};

/// Port names in `ports` maps: DNS-label-like, fewer than 63 characters.
fn valid_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Rules shared by WorkloadEntry, ServiceEntry endpoints and WorkloadGroup templates.
/// `address_required`: a WorkloadEntry and an endpoint need an address (or a network).
pub fn check_entry(we: &WorkloadEntry, at: &FieldPath, address_required: bool, r: &mut Report) {
    if address_required && we.address.is_empty() && we.network.is_empty() {
        r.error(&at.field("address"), "Address is required");
    }
    if let Some(path) = we.address.strip_prefix("unix://") {
        if !(path.starts_with('/') || path.starts_with('@')) {
            r.error(
                &at.field("address"),
                "UDS must be an absolute path or abstract socket",
            );
        }
        if path.ends_with('/') {
            r.error(&at.field("address"), "UDS may not be a dir");
        }
        if !we.ports.is_empty() {
            r.error(&at.field("ports"), "UDS may not include ports");
        }
    }
    for (name, port) in &we.ports {
        let here = at.field("ports").key(name);
        if !valid_port_name(name) {
            r.error(
                &here,
                format!("Invalid value: port name {name:?} must be valid"),
            );
        }
        check_port_range(*port, &here, r);
    }
    check_labels(&we.labels, &at.field("labels"), r);
}

/// Validates a `WorkloadEntry` spec.
pub fn validate_entry(spec: &WorkloadEntry, _ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    check_entry(spec, at, true, r);
}

/// Validates a `WorkloadGroup` spec.
pub fn validate_group(spec: &WorkloadGroup, _ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    match &spec.template {
        Some(t) => check_entry(t, &at.field("template"), false, r),
        None => r.error(
            &at.field("template"),
            "Required value: template is required",
        ),
    }
    if let Some(m) = &spec.metadata {
        check_labels(&m.labels, &at.field("metadata.labels"), r);
    }
    if let Some(p) = &spec.probe {
        check_probe(p, &at.field("probe"), r);
    }
}

fn check_probe(p: &ReadinessProbe, at: &FieldPath, r: &mut Report) {
    let kinds = [
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.exec.is_some(),
        p.grpc.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        0 => r.error(at, "must set one of httpGet, tcpSocket, exec or grpc"),
        1 => {}
        _ => r.error(
            at,
            "only one of httpGet, tcpSocket, exec or grpc may be set",
        ),
    }
    for (v, f) in [
        (p.initial_delay_seconds, "initialDelaySeconds"),
        (p.timeout_seconds, "timeoutSeconds"),
        (p.period_seconds, "periodSeconds"),
        (p.success_threshold, "successThreshold"),
        (p.failure_threshold, "failureThreshold"),
    ] {
        if v < 0 {
            r.error(&at.field(f), "must be greater than or equal to 0");
        }
    }
    if let Some(h) = &p.http_get {
        let at = at.field("httpGet");
        check_port_range(h.port, &at.field("port"), r);
        if !["", "HTTP", "HTTPS"].contains(&h.scheme.as_str()) {
            r.error(&at.field("scheme"), "scheme must be one of [HTTP, HTTPS]");
        }
        for (i, hd) in h.http_headers.iter().enumerate() {
            let ok = !hd.name.is_empty()
                && hd
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                r.error(
                    &at.field("httpHeaders").index(i).field("name"),
                    "header name must match '^[-_A-Za-z0-9]+$'",
                );
            }
        }
    }
    if let Some(t) = &p.tcp_socket {
        check_port_range(t.port, &at.field("tcpSocket.port"), r);
    }
    if let Some(g) = &p.grpc {
        check_port_range(g.port, &at.field("grpc.port"), r);
    }
    if let Some(e) = &p.exec {
        if e.command.is_empty() || e.command.iter().any(String::is_empty) {
            r.error(
                &at.field("exec.command"),
                "Required value: command must not be empty",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::errors_of;

    #[test]
    fn workload_entry_rules() {
        let e = errors_of(
            "WorkloadEntry",
            "address: unix://rel/path/\nports: {http: 80}",
        );
        assert!(e
            .iter()
            .any(|(f, m)| f == "spec.address" && m.contains("absolute path")));
        assert!(e
            .iter()
            .any(|(f, m)| f == "spec.address" && m.contains("may not be a dir")));
        assert!(e
            .iter()
            .any(|(f, m)| f == "spec.ports" && m.contains("UDS may not include ports")));
        let e = errors_of("WorkloadEntry", "labels: {app: x}");
        assert!(e.iter().any(|(_, m)| m == "Address is required"));
        let e = errors_of(
            "WorkloadEntry",
            "address: 1.2.3.4\nports: {bad_name: 70000}",
        );
        assert!(e
            .iter()
            .any(|(f, m)| f == "spec.ports[bad_name]" && m.contains("port name")));
        assert!(e
            .iter()
            .any(|(_, m)| m.contains("port must be between 1-65535")));
        assert!(errors_of("WorkloadEntry", "address: 1.2.3.4\nports: {http: 8080}").is_empty());
        assert!(errors_of("WorkloadEntry", "network: net1").is_empty());
    }

    #[test]
    fn workload_group_rules() {
        let e = errors_of("WorkloadGroup", "metadata: {labels: {app: x}}");
        assert!(e.iter().any(|(f, _)| f == "spec.template"));
        let e = errors_of(
            "WorkloadGroup",
            "template: {}\nprobe:\n  httpGet: {port: 0, scheme: FTP, httpHeaders: [{name: 'a b', value: x}]}",
        );
        assert!(e.iter().any(|(f, _)| f == "spec.probe.httpGet.port"));
        assert!(e.iter().any(|(f, _)| f == "spec.probe.httpGet.scheme"));
        assert!(e
            .iter()
            .any(|(f, _)| f == "spec.probe.httpGet.httpHeaders[0].name"));
        let e = errors_of(
            "WorkloadGroup",
            "template: {}\nprobe: {tcpSocket: {port: 80}, exec: {command: [ls]}}",
        );
        assert!(e.iter().any(|(_, m)| m.contains("only one of")));
        assert!(errors_of(
            "WorkloadGroup",
            "template: {ports: {http: 80}}\nprobe: {tcpSocket: {port: 80}}"
        )
        .is_empty());
    }
}
