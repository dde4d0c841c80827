//! Validation of `ServiceEntry`: Istio's webhook rules and the CRD's CEL rules (hosts,
//! addresses, ports, resolution versus endpoints, selectors).

use std::collections::HashSet;

use super::common::{
    check_export_to, check_label_selector, check_port_range, check_wildcard_domain, is_cidr, is_ip,
    is_ip_or_cidr,
};
use super::workload::check_entry;
use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::service_entry::{Resolution, ServiceEntry};

/// Protocols Istio knows for service ports (matched case-insensitively).
pub const PROTOCOLS: [&str; 12] = [
    "HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "MYSQL", "REDIS", "UDP",
    "HBONE",
];

/// Validates a `ServiceEntry` spec.
pub fn validate(spec: &ServiceEntry, _ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    if spec.hosts.is_empty() {
        r.error(
            &at.field("hosts"),
            "Required value: at least one host is required",
        );
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        let here = at.field("hosts").index(i);
        if h == "*" {
            r.error(&here, "hostname cannot be wildcard");
        } else {
            check_wildcard_domain(h, &here, r);
        }
    }
    let cidr = spec.addresses.iter().any(|a| a.contains('/'));
    for (i, a) in spec.addresses.iter().enumerate() {
        if !is_ip_or_cidr(a) {
            r.error(
                &at.field("addresses").index(i),
                format!("invalid address {a:?}: must be an IP or CIDR"),
            );
        }
    }
    if cidr && !matches!(spec.resolution, Resolution::None | Resolution::Static) {
        r.error(
            &at.field("addresses"),
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let here = at.field("ports").index(i);
        check_port_range(p.number, &here.field("number"), r);
        if p.target_port != 0 {
            check_port_range(p.target_port, &here.field("targetPort"), r);
        }
        if p.name.is_empty() {
            r.error(&here.field("name"), "Required value: port name is required");
        } else if !names.insert(p.name.as_str()) {
            r.error(
                &here.field("name"),
                format!("Duplicate value: port name {:?}", p.name),
            );
        }
        if !numbers.insert(p.number) {
            r.error(&here.field("number"), "port number cannot be duplicated");
        }
        if !p.protocol.is_empty()
            && !PROTOCOLS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&p.protocol))
        {
            r.warn(
                &here.field("protocol"),
                format!("unknown protocol {:?}, treated as TCP", p.protocol),
            );
        }
    }
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        r.error(at, "only one of WorkloadSelector or Endpoints can be set");
    }
    if let Some(sel) = &spec.workload_selector {
        check_label_selector(sel, &at.field("workloadSelector"), r);
    }
    match spec.resolution {
        Resolution::None if !spec.endpoints.is_empty() => {
            r.error(&at.field("endpoints"), "NONE mode cannot set endpoints");
        }
        Resolution::DnsRoundRobin if spec.endpoints.len() > 1 => {
            r.error(
                &at.field("endpoints"),
                "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
            );
        }
        Resolution::Dns | Resolution::DnsRoundRobin
            if spec.endpoints.is_empty() && spec.workload_selector.is_none() =>
        {
            for (i, h) in spec.hosts.iter().enumerate() {
                if h.contains('*') {
                    r.warn(
                        &at.field("hosts").index(i),
                        "wildcard hosts need endpoints with DNS resolution: nothing to resolve",
                    );
                }
            }
        }
        _ => {}
    }
    for (i, ep) in spec.endpoints.iter().enumerate() {
        let here = at.field("endpoints").index(i);
        check_entry(ep, &here, true, r);
        let unix = ep.address.starts_with("unix://");
        if spec.resolution == Resolution::Static
            && !ep.address.is_empty()
            && !unix
            && !is_ip(&ep.address)
        {
            r.error(
                &here.field("address"),
                format!(
                    "endpoint address {:?} is not a valid IP address (STATIC resolution)",
                    ep.address
                ),
            );
        }
        if is_cidr(&ep.address) {
            r.error(
                &here.field("address"),
                "endpoint address must not be a CIDR",
            );
        }
        for name in ep.ports.keys() {
            if !spec.ports.iter().any(|p| &p.name == name) {
                r.error(
                    &here.field("ports").key(name),
                    format!("endpoint port {name:?} is not defined by the service entry"),
                );
            }
        }
    }
    check_export_to(&spec.export_to, &at.field("exportTo"), r);
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::{errors_of, has};

    #[test]
    fn hosts_addresses_and_ports() {
        let e = errors_of("ServiceEntry", "hosts: ['*']\naddresses: [10.0.0.0/8, nonsense]\nresolution: DNS\nports: [{number: 0, name: a}, {number: 0, name: a}, {number: 80}]\nendpoints: [{address: a.com}]");
        assert!(
            has(&e, "spec.hosts[0]", "hostname cannot be wildcard"),
            "{e:?}"
        );
        assert!(has(&e, "spec.addresses[1]", "invalid address"));
        assert!(has(&e, "spec.addresses", "CIDR addresses are allowed only"));
        assert!(has(
            &e,
            "spec.ports[0].number",
            "port must be between 1-65535"
        ));
        assert!(has(&e, "spec.ports[1].name", "Duplicate value"));
        assert!(has(&e, "spec.ports[1].number", "cannot be duplicated"));
        assert!(has(&e, "spec.ports[2].name", "Required value"));
        let e = errors_of("ServiceEntry", "ports: [{number: 80, name: http}]");
        assert!(has(&e, "spec.hosts", "Required value"));
    }

    #[test]
    fn resolution_and_endpoints() {
        let base = "hosts: [a.example.com]\nports: [{number: 80, name: http}]\n";
        let e = errors_of(
            "ServiceEntry",
            &format!("{base}resolution: NONE\nendpoints: [{{address: 1.1.1.1}}]"),
        );
        assert!(has(&e, "spec.endpoints", "NONE mode cannot set endpoints"));
        let e = errors_of("ServiceEntry", &format!("{base}resolution: DNS_ROUND_ROBIN\nendpoints: [{{address: a.com}}, {{address: b.com}}]"));
        assert!(has(
            &e,
            "spec.endpoints",
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints"
        ));
        let e = errors_of("ServiceEntry", &format!("{base}resolution: STATIC\nendpoints: [{{address: a.com, ports: {{grpc: 9000}}}}]\nworkloadSelector: {{labels: {{app: x}}}}"));
        assert!(has(&e, "spec.endpoints[0].address", "not a valid IP"));
        assert!(has(
            &e,
            "spec.endpoints[0].ports[grpc]",
            "not defined by the service entry"
        ));
        assert!(has(&e, "spec", "only one of WorkloadSelector or Endpoints"));
        let e = errors_of(
            "ServiceEntry",
            &format!("{base}resolution: STATIC\nworkloadSelector: {{labels: {{app: '*'}}}}"),
        );
        assert!(has(
            &e,
            "spec.workloadSelector.labels[app]",
            "wildcard is not supported"
        ));
        let w = crate::validate::tests::warnings_of(
            "ServiceEntry",
            "hosts: ['*.a.com']\nports: [{number: 80, name: http}]\nresolution: DNS",
        );
        assert!(has(&w, "spec.hosts[0]", "wildcard hosts need endpoints"));
        assert!(errors_of("ServiceEntry", &format!("{base}resolution: STATIC\nendpoints: [{{address: 10.0.0.1, ports: {{http: 8080}}, labels: {{version: v1}}}}]\nexportTo: ['.']")).is_empty());
    }
}
