//! Validation of `RequestAuthentication` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::RequestAuthentication;

/// Validates a `RequestAuthentication` spec.
pub fn validate(_spec: &RequestAuthentication, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
