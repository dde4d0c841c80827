//! Validation of `WorkloadEntry` and `WorkloadGroup` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::{WorkloadEntry, WorkloadGroup};

/// Validates a `WorkloadEntry` spec.
pub fn validate_entry(_spec: &WorkloadEntry, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}

/// Validates a `WorkloadGroup` spec.
pub fn validate_group(_spec: &WorkloadGroup, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
