//! Validation of `ServiceEntry` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::ServiceEntry;

/// Validates a `ServiceEntry` spec.
pub fn validate(_spec: &ServiceEntry, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
