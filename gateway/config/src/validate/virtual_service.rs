//! Validation of `VirtualService` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::VirtualService;

/// Validates a `VirtualService` spec.
pub fn validate(_spec: &VirtualService, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
