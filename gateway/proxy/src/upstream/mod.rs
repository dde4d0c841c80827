//! Upstreams: live cluster state, load balancing, DNS refresh and per-worker connection pools.
//!
//! Cluster state is shared by workers (atomics only); pools belong to one worker and are
//! never touched from another thread.

pub mod circuit;
pub mod cluster;
pub mod dns;
pub mod lb;
pub mod locality;
pub mod outlier;
pub mod pool;
pub mod stats;
