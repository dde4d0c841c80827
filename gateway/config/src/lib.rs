//! meshgate-config: Istio configuration in, an immutable compiled snapshot out.
//!
//! `yaml` reads text with line numbers, `model` mirrors istio/api, `load` turns files into
//! typed resources, `validate` applies Istio's rules, `compile` builds the [`Snapshot`] that
//! the data plane reads without locks. No I/O beyond reading files; no async runtime.

pub mod compile;
pub mod diag;
pub mod load;
pub mod model;
pub mod resource;
pub mod snapshot;
pub mod validate;
pub mod yaml;

pub use compile::{compile, CompileOptions, Compiled};
pub use diag::{Diagnostic, Severity};
pub use load::{load_paths, load_text, LoadOptions, Loaded};
pub use resource::{Kind, Resource, ResourceSet, Spec};
pub use snapshot::Snapshot;
