//! `WorkloadEntry` and `WorkloadGroup` (stub: replaced by the full model).

use serde::{Deserialize, Serialize};

/// The spec of a `WorkloadEntry`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {}

/// The spec of a `WorkloadGroup`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadGroup {}
