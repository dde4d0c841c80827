//! Validation of `AuthorizationPolicy` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::AuthorizationPolicy;

/// Validates a `AuthorizationPolicy` spec.
pub fn validate(_spec: &AuthorizationPolicy, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
