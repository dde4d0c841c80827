//! The compiled snapshot: everything the data plane needs, immutable and lock-free to read.
//!
//! A `Snapshot` is built once by `compile` from a validated resource set and then shared as an
//! `Arc` (swapped atomically on update). Lookups here run on the request path: host lookup is a
//! hash probe per domain label, never a scan over all hosts.

pub mod cluster;
pub mod cors;
pub mod plugin;
pub mod retry;
pub mod route;
pub mod route_table;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

pub use cluster::{Cluster, Discovery, Endpoint};
pub use plugin::{EnvValue, Phase, Plugin, PluginSource, PluginType};
pub use route::{Route, RouteAction, RouteMatch};
pub use route_table::{RouteTable, VirtualHost};

use crate::model::gateway::ServerTlsSettings;

/// What a listener speaks, from the Gateway server's `port.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    /// Plain HTTP/1.1 and h2c.
    Http,
    /// TLS-terminated HTTP (HTTPS, or HTTP with a `tls` block).
    Https,
    /// TLS passed through or terminated, then TCP routing (`tls` routes).
    Tls,
    /// Plain TCP (`tcp` routes).
    Tcp,
}

/// One Gateway server bound to a listener.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerBinding {
    /// The Gateway (`namespace/name`).
    pub gateway: Arc<str>,
    /// Server name or index.
    pub name: String,
    /// The server's hosts as written (`ns/host`).
    pub hosts: Vec<String>,
    /// TLS settings of the server, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
}

/// One port the gateway listens on.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// `0.0.0.0_PORT` (or `BIND_PORT`), Envoy's listener naming.
    pub name: String,
    /// Bind address (`0.0.0.0` unless a server sets `bind`).
    pub address: String,
    /// The port to listen on (the server's `targetPort`, else its `number`).
    pub port: u16,
    /// The service port named in the Gateway (`port.number`).
    pub service_port: u16,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Gateway servers merged into this listener.
    pub servers: Vec<ServerBinding>,
    /// Virtual hosts and routes (HTTP/HTTPS listeners).
    pub routes: RouteTable,
}

/// What one resource became in the snapshot (for `config_dump`).
#[derive(Debug, Clone, Serialize)]
pub struct ResourceOutcome {
    /// `Kind namespace/name`.
    pub resource: String,
    /// `file:line`.
    pub source: String,
    /// What it produced, or why it produced nothing.
    pub became: Vec<String>,
}

/// The compiled, immutable configuration of one gateway.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Listeners, sorted by port.
    pub listeners: Vec<Listener>,
    /// Clusters, sorted by name.
    pub clusters: Vec<Arc<Cluster>>,
    /// WasmPlugins that apply to this gateway, in filter-chain order (phase, then priority
    /// descending, then the gateway's own namespace before the root namespace, then name).
    pub plugins: Vec<Arc<Plugin>>,
    /// What each resource became.
    pub resources: Vec<ResourceOutcome>,
    #[serde(skip)]
    cluster_index: HashMap<Arc<str>, usize>,
}

impl Snapshot {
    /// Builds a snapshot from its parts (sorts and indexes listeners and clusters; `plugins`
    /// are kept in the filter-chain order they come in).
    pub fn new(
        mut listeners: Vec<Listener>,
        mut clusters: Vec<Arc<Cluster>>,
        plugins: Vec<Arc<Plugin>>,
        resources: Vec<ResourceOutcome>,
    ) -> Self {
        listeners.sort_by(|a, b| a.port.cmp(&b.port).then(a.address.cmp(&b.address)));
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let cluster_index = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Snapshot {
            listeners,
            clusters,
            plugins,
            resources,
            cluster_index,
        }
    }

    /// The listener on `port`, if any.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }

    /// A cluster by name (`outbound|PORT|SUBSET|HOST`).
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.cluster_index.get(name).map(|i| &self.clusters[*i])
    }

    /// The HTTP plugins that run, in order, on a request to listener `port` that matched the
    /// route named `route_name` (`None` when no route matched: only plugins not limited to
    /// routes).
    pub fn plugins_for<'a>(
        &'a self,
        route_name: Option<&'a str>,
        port: u16,
    ) -> impl Iterator<Item = &'a Arc<Plugin>> + 'a {
        self.plugins
            .iter()
            .filter(move |p| p.applies(route_name, port))
    }
}
