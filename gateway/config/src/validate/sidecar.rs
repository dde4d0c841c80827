//! Validation of `Sidecar` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::Sidecar;

/// Validates a `Sidecar` spec.
pub fn validate(_spec: &Sidecar, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
