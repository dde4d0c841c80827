//! Endpoint resolution: static addresses at once, DNS names on the control thread, refreshed
//! periodically. A failed lookup keeps the last good answer (Envoy does the same for
//! STRICT_DNS clusters), so a DNS outage does not empty a cluster.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meshgate_config::snapshot::cluster::{Cluster, Discovery};
use tracing::{debug, warn};

use super::cluster::{ClusterState, Resolved};
use crate::live::Shared;

/// Envoy's default `dns_refresh_rate`.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Resolves a cluster's endpoints. `None` means "lookup failed, keep what you have".
pub async fn resolve(c: &Cluster) -> Option<Vec<Resolved>> {
    let mut out = Vec::new();
    let mut failed = false;
    for (i, ep) in c.endpoints.iter().enumerate() {
        if let Ok(ip) = ep.address.parse::<IpAddr>() {
            out.push((SocketAddr::new(ip, ep.port), ep.weight, i));
            continue;
        }
        if c.discovery == Discovery::Static || ep.address.starts_with("unix://") {
            continue;
        }
        match tokio::net::lookup_host((ep.address.as_str(), ep.port)).await {
            Ok(addrs) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.sort();
                addrs.dedup();
                if c.discovery == Discovery::LogicalDns {
                    addrs.truncate(1);
                }
                out.extend(addrs.into_iter().map(|a| (a, ep.weight, i)));
            }
            Err(e) => {
                debug!(cluster = %c.name, host = %ep.address, error = %e, "DNS lookup failed");
                failed = true;
            }
        }
        if c.discovery == Discovery::LogicalDns && !out.is_empty() {
            break;
        }
    }
    if failed && out.is_empty() {
        return None;
    }
    Some(out)
}

/// Resolves one cluster's endpoints and installs them.
pub async fn refresh(state: &ClusterState) {
    if let Some(eps) = resolve(&state.config).await {
        state.set_endpoints(eps);
    } else if state.endpoints.load().endpoints.is_empty() {
        warn!(cluster = %state.config.name, "no endpoint could be resolved");
    }
}

/// Resolves every cluster of the current live view once (used before reporting ready).
pub async fn refresh_all(shared: &Shared) {
    let live = shared.live.load_full();
    let states: Vec<Arc<ClusterState>> = live.clusters.values().cloned().collect();
    let tasks: Vec<_> = states
        .into_iter()
        .map(|s| tokio::spawn(async move { refresh(&s).await }))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Keeps DNS answers fresh until the process ends.
pub async fn refresh_loop(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        refresh_all(&shared).await;
    }
}
