//! Validation of `Gateway`: servers, ports and protocols, hosts with their namespace part, and
//! TLS settings (Istio's `validateServer` / `validateServerTLS` and the CRD's CEL rules).

use std::collections::HashSet;

use super::common::{
    check_labels, check_port, error_each, is_dns1123_label, is_ip, wildcard_domain_error,
};
use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::gateway::{Server, ServerTlsMode, ServerTlsSettings};
use crate::model::Gateway;

/// Protocols a Gateway server may use (case-insensitive).
pub const PROTOCOLS: [&str; 12] = [
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "MONGO",
    "REDIS",
    "MYSQL",
    "TCP",
    "TLS",
    "UDP",
    "HTTP_PROXY",
];

/// Validates a `Gateway` spec.
pub fn validate(spec: &Gateway, _ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    if spec.servers.is_empty() {
        r.error(
            &at.field("servers"),
            "Required value: gateway must have at least one server",
        );
    }
    check_labels(&spec.selector, &at.field("selector"), r);
    let mut names = HashSet::new();
    let mut port_names: HashSet<&str> = HashSet::new();
    for (i, s) in spec.servers.iter().enumerate() {
        let here = at.field("servers").index(i);
        check_server(s, &here, r);
        if !s.name.is_empty() && !names.insert(s.name.as_str()) {
            r.error(
                &here.field("name"),
                format!("server name {:?} is not unique", s.name),
            );
        }
        if let Some(p) = &s.port {
            if !port_names.insert(p.name.as_str()) {
                r.error(
                    &here.field("port.name"),
                    format!(
                        "port names in servers must be unique: duplicate name {}",
                        p.name
                    ),
                );
            }
            let http = matches!(
                p.protocol.to_ascii_uppercase().as_str(),
                "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"
            );
            if !http && s.tls.as_ref().is_some_and(|t| t.https_redirect) {
                r.warn(
                    &here.field("tls.httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }
}

fn check_server(s: &Server, at: &FieldPath, r: &mut Report) {
    if s.hosts.is_empty() {
        r.error(
            &at.field("hosts"),
            "Required value: server config must contain at least one host",
        );
    }
    for (i, h) in s.hosts.iter().enumerate() {
        if let Some(e) = server_host_error(h) {
            r.error(&at.field("hosts").index(i), e);
        }
    }
    if let Some(path) = s.bind.strip_prefix("unix://") {
        if !(path.starts_with('/') || path.starts_with('@')) {
            r.error(
                &at.field("bind"),
                "unix address must be an absolute path or abstract socket",
            );
        }
        if s.port.as_ref().is_some_and(|p| p.number != 0) {
            r.error(
                &at.field("port.number"),
                "port number must be 0 for unix domain socket",
            );
        }
    } else if !s.bind.is_empty() && !is_ip(&s.bind) {
        r.error(
            &at.field("bind"),
            format!("{:?} is not a valid IP address", s.bind),
        );
    }
    let Some(port) = &s.port else {
        r.error(&at.field("port"), "Required value: port is required");
        return;
    };
    if port.number > 0 || !s.bind.starts_with("unix://") {
        check_port(port.number, &at.field("port.number"), r);
    }
    if port.target_port != 0 {
        r.error(
            &at.field("port.targetPort"),
            "targetPort has no impact on Gateways",
        );
    }
    if port.name.is_empty() {
        r.error(&at.field("port.name"), "port name must be set");
    }
    let proto = port.protocol.to_ascii_uppercase();
    if proto.is_empty() {
        r.error(
            &at.field("port.protocol"),
            "Required value: protocol is required",
        );
    } else if !PROTOCOLS.contains(&proto.as_str()) {
        r.error(
            &at.field("port.protocol"),
            format!(
                "invalid protocol {:?}, supported protocols are {}",
                port.protocol,
                PROTOCOLS.join(", ")
            ),
        );
    }
    if let Some(t) = &s.tls {
        check_tls(t, &at.field("tls"), r);
    }
    let tls_protocol = proto == "HTTPS" || proto == "TLS";
    let http = matches!(proto.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB");
    match &s.tls {
        None if tls_protocol => r.error(
            &at.field("tls"),
            "server must have TLS settings for HTTPS/TLS protocols",
        ),
        Some(t) if !tls_protocol && http => {
            // Only a redirect (a passthrough-mode block without certificates) fits a plain port.
            let passthrough = matches!(
                t.mode,
                ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
            );
            if !passthrough
                || !t.ca_certificates.is_empty()
                || !t.private_key.is_empty()
                || !t.server_certificate.is_empty()
            {
                r.error(
                    &at.field("tls"),
                    "server cannot have TLS settings for plain text HTTP ports",
                );
            }
        }
        Some(_) if !tls_protocol && !proto.is_empty() && PROTOCOLS.contains(&proto.as_str()) => {
            r.error(
                &at.field("tls"),
                "server cannot have TLS settings for non HTTPS/TLS ports",
            );
        }
        _ => {}
    }
}

/// `[namespace/]dnsName` as a Gateway server host.
fn server_host_error(h: &str) -> Option<String> {
    let (ns, dns) = match h.split_once('/') {
        Some((ns, dns)) => (Some(ns), dns),
        None => (None, h),
    };
    if let Some(ns) = ns {
        if !(ns == "*" || ns == "." || ns == "~" || is_dns1123_label(ns)) {
            return Some(format!("namespace {ns:?} in host {h:?} is invalid: must be '*', '.', '~' or a namespace name"));
        }
    }
    if dns.contains('/') {
        return Some(format!("host {h:?} has more than one '/'"));
    }
    wildcard_domain_error(dns)
}

/// Istio's `validateTLSOptions`.
fn check_tls(t: &ServerTlsSettings, at: &FieldPath, r: &mut Report) {
    use crate::model::gateway::TlsProtocol;
    if matches!(
        t.min_protocol_version,
        TlsProtocol::Tlsv10 | TlsProtocol::Tlsv11
    ) && t.cipher_suites.is_empty()
    {
        r.warn(at, "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.");
    }
    if t.mode == ServerTlsMode::IstioMutual {
        error_each(
            r,
            at,
            &[
                (
                    !t.server_certificate.is_empty(),
                    "ISTIO_MUTUAL TLS cannot have associated server certificate",
                ),
                (
                    !t.private_key.is_empty(),
                    "ISTIO_MUTUAL TLS cannot have associated private key",
                ),
                (
                    !t.ca_certificates.is_empty(),
                    "ISTIO_MUTUAL TLS cannot have associated CA bundle",
                ),
                (
                    !t.tls_certificates.is_empty(),
                    "ISTIO_MUTUAL TLS cannot have associated tlsCertificates",
                ),
                (
                    !t.credential_name.is_empty(),
                    "ISTIO_MUTUAL TLS cannot have associated credentialName",
                ),
                (
                    !t.credential_names.is_empty(),
                    "ISTIO_MUTUAL TLS cannot have associated credentialNames",
                ),
            ],
        );
        return;
    }
    let has_certs = !t.ca_crl.is_empty()
        || !t.server_certificate.is_empty()
        || !t.private_key.is_empty()
        || !t.ca_certificates.is_empty()
        || !t.tls_certificates.is_empty()
        || !t.credential_name.is_empty()
        || !t.credential_names.is_empty();
    if matches!(
        t.mode,
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
    ) && has_certs
    {
        r.warn(
            at,
            format!(
                "{:?} mode does not use certificates, they will be ignored",
                t.mode
            ),
        );
    }
    let sources = usize::from(!t.server_certificate.is_empty() && !t.private_key.is_empty())
        + usize::from(!t.credential_name.is_empty())
        + usize::from(!t.credential_names.is_empty())
        + usize::from(!t.tls_certificates.is_empty());
    if sources > 1 {
        r.error(at, "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified");
    }
    let terminating = matches!(
        t.mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if terminating && (!t.credential_name.is_empty() || !t.credential_names.is_empty()) {
        return; // the secret carries certificate, key and CA
    }
    if terminating {
        let prefix = if t.mode == ServerTlsMode::Simple {
            "SIMPLE TLS"
        } else {
            "MUTUAL TLS"
        };
        if t.mode != ServerTlsMode::Simple && t.ca_certificates.is_empty() {
            r.error(
                &at.field("caCertificates"),
                format!("{prefix} requires a client CA bundle"),
            );
        }
        if t.tls_certificates.len() > 2 {
            r.warn(
                &at.field("tlsCertificates"),
                format!("{prefix} can support up to 2 server certificates"),
            );
        }
        let certs: Vec<(&str, &str, FieldPath)> = if t.tls_certificates.is_empty() {
            vec![(
                t.server_certificate.as_str(),
                t.private_key.as_str(),
                at.clone(),
            )]
        } else {
            t.tls_certificates
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let here = at.field("tlsCertificates").index(i);
                    (c.server_certificate.as_str(), c.private_key.as_str(), here)
                })
                .collect()
        };
        for (cert, key, here) in certs {
            if cert.is_empty() {
                r.error(
                    &here.field("serverCertificate"),
                    format!("{prefix} requires a server certificate"),
                );
            }
            if key.is_empty() {
                r.error(
                    &here.field("privateKey"),
                    format!("{prefix} requires a private key"),
                );
            }
        }
    }
    if !t.ca_crl.is_empty() {
        if !t.credential_name.is_empty() {
            r.error(&at.field("caCrl"), "CRL is not supported with credentialName. CRL has to be specified in the credential");
        }
        if t.mode == ServerTlsMode::Simple {
            r.error(&at.field("caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::{errors_of, has};

    #[test]
    fn servers_ports_hosts() {
        let e = errors_of("Gateway", "selector: {istio: ingressgateway}");
        assert!(has(&e, "spec.servers", "at least one server"));
        let e = errors_of("Gateway", "servers:\n- hosts: ['*']\n- port: {number: 0, name: a, protocol: FTP}\n  hosts: ['bad ns/x.com', 'ns/a.*.com', './ok.com', '~/nothing.com']\n- port: {number: 81, name: a, protocol: http}\n  hosts: []\n  bind: localhost");
        assert!(has(&e, "spec.servers[0].port", "Required value"));
        assert!(has(&e, "spec.servers[1].port.number", "1..65535"));
        assert!(has(&e, "spec.servers[1].port.protocol", "invalid protocol"));
        assert!(has(&e, "spec.servers[1].hosts[0]", "namespace"));
        assert!(has(
            &e,
            "spec.servers[1].hosts[1]",
            "invalid (label \"*\" invalid)"
        ));
        assert!(!e
            .iter()
            .any(|(f, _)| f == "spec.servers[1].hosts[2]" || f == "spec.servers[1].hosts[3]"));
        assert!(has(&e, "spec.servers[2].hosts", "at least one host"));
        assert!(has(&e, "spec.servers[2].bind", "not a valid IP address"));
        assert!(has(
            &e,
            "spec.servers[2].port.name",
            "must be unique: duplicate name a"
        ));
        let e = errors_of(
            "Gateway",
            "servers:\n- port: {number: 80, protocol: HTTP, targetPort: 8080}\n  hosts: ['*']",
        );
        assert!(has(
            &e,
            "spec.servers[0].port.name",
            "port name must be set"
        ));
        assert!(has(
            &e,
            "spec.servers[0].port.targetPort",
            "no impact on Gateways"
        ));
    }

    #[test]
    fn tls_settings() {
        let e = errors_of(
            "Gateway",
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']",
        );
        assert!(has(&e, "spec.servers[0].tls", "must have TLS settings"));
        let e = errors_of("Gateway", "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: SIMPLE}");
        assert!(has(
            &e,
            "spec.servers[0].tls.serverCertificate",
            "SIMPLE TLS requires a server certificate"
        ));
        let e = errors_of("Gateway", "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}");
        assert!(has(
            &e,
            "spec.servers[0].tls.caCertificates",
            "client CA bundle"
        ));
        let e = errors_of("Gateway", "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: SIMPLE, credentialName: a, credentialNames: [b]}");
        assert!(has(
            &e,
            "spec.servers[0].tls",
            "only one of credential_name"
        ));
        let e = errors_of("Gateway", "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n  tls: {mode: SIMPLE, credentialName: a}");
        assert!(has(&e, "spec.servers[0].tls", "plain text HTTP"));
        let ok = "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n  tls: {httpsRedirect: true}\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['ns/*.example.com']\n  tls: {mode: SIMPLE, credentialName: cert}\n- port: {number: 15443, name: tls, protocol: TLS}\n  hosts: ['*.local']\n  tls: {mode: AUTO_PASSTHROUGH}";
        assert!(errors_of("Gateway", ok).is_empty());
    }
}
