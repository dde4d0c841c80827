//! Validation of `DestinationRule` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::DestinationRule;

/// Validates a `DestinationRule` spec.
pub fn validate(_spec: &DestinationRule, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
