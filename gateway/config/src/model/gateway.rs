//! `Gateway` (networking.istio.io): the ports, protocols, hosts and TLS of a gateway.
//!
//! Mirrors istio/api `networking/v1alpha3/gateway.proto` field for field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The spec of a `Gateway`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    /// Servers (port + hosts + TLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Labels of the gateway workloads this applies to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

/// One server of a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// Port to listen on (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// Address to bind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// Hosts served, `[namespace/]dnsName` (required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Default endpoint (sidecar ingress only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    /// Server name (unique in the gateway).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A port of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// Port number (required).
    #[serde(default)]
    pub number: u32,
    /// Protocol: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS (case-insensitive).
    #[serde(default)]
    pub protocol: String,
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Port the workload listens on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub target_port: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// TLS modes of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward TLS untouched, route by SNI.
    #[default]
    Passthrough,
    /// Terminate TLS.
    Simple,
    /// Terminate TLS, require client certificates.
    Mutual,
    /// Passthrough with SNI-encoded destination.
    AutoPassthrough,
    /// Mutual TLS with Istio certificates.
    IstioMutual,
    /// Client certificates requested, not required.
    OptionalMutual,
}

/// TLS protocol versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsProtocol {
    /// Proxy default.
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    Tlsv10,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    Tlsv11,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    Tlsv12,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    Tlsv13,
}

/// TLS settings of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsSettings {
    /// Redirect plain HTTP to HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// TLS mode.
    #[serde(default)]
    pub mode: ServerTlsMode,
    /// Server certificate file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    /// Server key file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// CA certificates file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
    /// Secret holding the certificates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// Several secrets (e.g. RSA and ECDSA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// Several certificate files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Accepted client subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Accepted client certificate SPKI hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Accepted client certificate hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version.
    #[serde(default)]
    pub min_protocol_version: TlsProtocol,
    /// Maximum TLS version.
    #[serde(default)]
    pub max_protocol_version: TlsProtocol,
    /// Cipher suites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// ECDH curves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    /// Secret holding only the CA certificates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_credential_name: String,
    /// Do not verify client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// One certificate of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    /// Certificate file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    /// Key file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// CA certificates file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
}
