//! Typed Istio API: serde types that mirror istio/api field for field.
//!
//! One module per kind (the spec type is named after the kind); shared types live in
//! [`common`]. Parsing only: rules live in `validate`, behaviour in `compile`.
//! JSON names are Istio's camelCase; enums use Istio's SCREAMING_CASE values.

pub mod authorization_policy;
pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod peer_authentication;
pub mod request_authentication;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;
pub mod wasm_plugin;
pub mod workload;

pub use authorization_policy::AuthorizationPolicy;
pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use peer_authentication::PeerAuthentication;
pub use request_authentication::RequestAuthentication;
pub use service_entry::ServiceEntry;
pub use sidecar::Sidecar;
pub use virtual_service::VirtualService;
pub use wasm_plugin::WasmPlugin;
pub use workload::{WorkloadEntry, WorkloadGroup};
