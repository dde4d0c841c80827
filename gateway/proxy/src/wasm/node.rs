//! The gateway as a node, for plugins' `xds.node.*` properties: the id, cluster and metadata the
//! Istio agent would give an istio-ingressgateway pod, from the same environment variables
//! (`POD_NAME`, `INSTANCE_IP`, `ISTIO_META_*`) plus the gateway's namespace and labels.

use std::collections::BTreeMap;

/// What `xds.node.*` answers.
#[derive(Debug, Clone, Default)]
pub struct NodeIdentity {
    /// `router~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN`.
    pub id: String,
    /// `WORKLOAD.NAMESPACE`.
    pub cluster: String,
    /// String metadata (`NAME`, `NAMESPACE`, `CLUSTER_ID`, `WORKLOAD_NAME`, `ISTIO_META_*`).
    pub metadata: BTreeMap<String, String>,
    /// Metadata `LABELS`.
    pub labels: BTreeMap<String, String>,
}

impl NodeIdentity {
    /// The identity of a gateway in `namespace` with `labels`, completed from the environment.
    pub fn from_env(
        namespace: &str,
        domain_suffix: &str,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let name = env("POD_NAME")
            .or_else(|| env("HOSTNAME"))
            .unwrap_or_else(|| "meshgate".to_owned());
        let ip = env("INSTANCE_IP").unwrap_or_else(|| "127.0.0.1".to_owned());
        let mut metadata: BTreeMap<String, String> = std::env::vars()
            .filter_map(|(k, v)| k.strip_prefix("ISTIO_META_").map(|k| (k.to_owned(), v)))
            .collect();
        metadata
            .entry("NAME".into())
            .or_insert_with(|| name.clone());
        metadata
            .entry("NAMESPACE".into())
            .or_insert_with(|| namespace.to_owned());
        metadata
            .entry("CLUSTER_ID".into())
            .or_insert_with(|| "Kubernetes".to_owned());
        let workload = metadata
            .entry("WORKLOAD_NAME".into())
            .or_insert_with(|| "istio-ingressgateway".to_owned())
            .clone();
        NodeIdentity {
            id: format!("router~{ip}~{name}.{namespace}~{namespace}.svc.{domain_suffix}"),
            cluster: format!("{workload}.{namespace}"),
            metadata,
            labels: labels.clone(),
        }
    }

    /// The property at `path` (the segments after `xds.node` / `node`), encoded as Envoy
    /// encodes it: strings as bytes, a map as serialized pairs.
    pub fn property(&self, path: &[&[u8]]) -> Option<Vec<u8>> {
        let text = |s: &str| Some(s.as_bytes().to_vec());
        let key = |k: &[u8]| std::str::from_utf8(k).ok().map(str::to_owned);
        match path {
            [b"id"] => text(&self.id),
            [b"cluster"] => text(&self.cluster),
            [b"metadata", b"LABELS"] => {
                let pairs: Vec<(&[u8], &[u8])> = (self.labels.iter())
                    .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                    .collect();
                Some(meshgate_wasm::encode_pairs(&pairs))
            }
            [b"metadata", b"LABELS", k] => self.labels.get(&key(k)?).and_then(|v| text(v)),
            [b"metadata", k] => self.metadata.get(&key(k)?).and_then(|v| text(v)),
            _ => None,
        }
    }
}
