//! Validation of `Gateway` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::Gateway;

/// Validates a `Gateway` spec.
pub fn validate(_spec: &Gateway, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
