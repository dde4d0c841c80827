//! `RequestAuthentication` (stub: replaced by the full model).

use serde::{Deserialize, Serialize};

/// The spec of a `RequestAuthentication`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthentication {}
