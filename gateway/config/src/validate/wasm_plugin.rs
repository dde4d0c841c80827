//! Validation of `WasmPlugin` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::WasmPlugin;

/// Validates a `WasmPlugin` spec.
pub fn validate(_spec: &WasmPlugin, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
