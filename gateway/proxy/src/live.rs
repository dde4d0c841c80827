//! What all workers share: the current compiled snapshot with its live cluster state, swapped
//! atomically as one value, plus process-wide readiness.
//!
//! A request loads the `Live` once and keeps it to the end, so a swap never changes config
//! under a request. Cluster state (endpoints, counters) is carried from the old `Live` to the
//! new one by cluster name, so an update does not forget DNS answers or statistics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use meshgate_config::snapshot::Listener;
use meshgate_config::Snapshot;

use crate::telemetry::Metrics;
use crate::upstream::cluster::ClusterState;
use crate::upstream::locality::Node;

/// The hasher of maps looked up on every request (keys come from config, not from clients,
/// so SipHash's resistance to chosen keys buys nothing there; foldhash is several times
/// faster on short strings).
pub type FastHash = foldhash::fast::RandomState;

/// One consistent view of config plus live cluster state.
pub struct Live {
    /// The compiled config.
    pub snapshot: Arc<Snapshot>,
    /// Listener index by listening port.
    listeners: HashMap<u16, usize, FastHash>,
    /// Live state by cluster name.
    pub clusters: HashMap<Arc<str>, Arc<ClusterState>, FastHash>,
    /// Increases with every swap.
    pub generation: u64,
    /// The snapshot's WasmPlugins, loaded, in filter-chain order.
    pub plugins: Vec<Arc<crate::wasm::LoadedPlugin>>,
}

impl Live {
    /// Builds the live view of `snapshot`, reusing cluster state from `previous` when the
    /// cluster's config did not change.
    pub fn new(
        snapshot: Arc<Snapshot>,
        previous: Option<&Live>,
        node: &Node,
        wasm: &crate::wasm::Runtime,
    ) -> Self {
        let listeners = snapshot
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (l.port, i))
            .collect();
        let clusters = snapshot
            .clusters
            .iter()
            .map(|c| {
                let old = previous.and_then(|p| p.clusters.get(&c.name));
                let reused = old.filter(|old| old.same_config(c)).cloned();
                (
                    c.name.clone(),
                    reused.unwrap_or_else(|| {
                        Arc::new(ClusterState::new(c.clone(), node, old.map(|o| &**o)))
                    }),
                )
            })
            .collect();
        Live {
            listeners,
            clusters,
            generation: previous.map_or(1, |p| p.generation + 1),
            plugins: wasm.load_all(
                &snapshot.plugins,
                previous.map_or(&[][..], |p| &p.plugins[..]),
            ),
            snapshot,
        }
    }

    /// The loaded plugins a request on `port` that matched route `route` runs through.
    pub fn plugins_for<'a>(
        &'a self,
        route: Option<&'a str>,
        port: u16,
    ) -> impl Iterator<Item = &'a Arc<crate::wasm::LoadedPlugin>> + 'a {
        self.plugins
            .iter()
            .filter(move |p| p.spec.applies(route, port))
    }

    /// The listener on a listening port.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners
            .get(&port)
            .map(|i| &self.snapshot.listeners[*i])
    }

    /// Live state of a cluster.
    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterState>> {
        self.clusters.get(name)
    }
}

/// Edge behaviour switches (Envoy HTTP connection manager options as Istio sets them).
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// Keep a client's `x-request-id` (Envoy's `preserve_external_request_id`; Istio: false).
    pub preserve_external_request_id: bool,
    /// Where access log lines go (`None`: no access log, Istio's default).
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// The gateway's locality and labels (locality load balancing).
    pub node: Node,
    /// Where compiled wasm modules are cached across restarts (`None`: memory only).
    pub wasm_cache: Option<std::path::PathBuf>,
    /// The gateway as plugins see it (`xds.node.*`).
    pub wasm_node: crate::wasm::node::NodeIdentity,
    /// How remote WasmPlugin modules are fetched and cached.
    pub wasm_pull: crate::wasm::PullSettings,
}

/// Process-wide shared state.
pub struct Shared {
    /// Edge behaviour switches.
    pub settings: ProxySettings,
    /// The current live view.
    pub live: ArcSwap<Live>,
    /// Metrics registry and families.
    pub metrics: Metrics,
    /// Listeners are bound and endpoints resolved once.
    pub ready: AtomicBool,
    /// Shutdown has begun: stop accepting, finish in-flight requests.
    pub draining: AtomicBool,
    /// The wasm engine and plugin loader.
    pub wasm: crate::wasm::Runtime,
}

impl Shared {
    /// Shared state starting at `snapshot`.
    pub fn new(snapshot: Snapshot, settings: ProxySettings) -> Arc<Self> {
        let wasm = crate::wasm::Runtime::new(
            settings.wasm_cache.clone(),
            settings.wasm_node.clone(),
            settings.wasm_pull.clone(),
        );
        let live = Live::new(Arc::new(snapshot), None, &settings.node, &wasm);
        Arc::new(Shared {
            wasm,
            settings,
            live: ArcSwap::from_pointee(live),
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    /// Swaps in a new snapshot (keeping live cluster state where config is unchanged).
    pub fn install(&self, snapshot: Snapshot) {
        let old = self.live.load();
        let next = Live::new(
            Arc::new(snapshot),
            Some(&old),
            &self.settings.node,
            &self.wasm,
        );
        self.live.store(Arc::new(next));
    }

    /// True once ready and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}
