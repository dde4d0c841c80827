//! `DestinationRule` (stub: replaced by the full model).

use serde::{Deserialize, Serialize};

/// The spec of a `DestinationRule`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRule {}
