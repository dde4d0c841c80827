//! Validation of `PeerAuthentication` (stub: replaced by the full rules).

use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::PeerAuthentication;

/// Validates a `PeerAuthentication` spec.
pub fn validate(_spec: &PeerAuthentication, _ctx: &Ctx<'_>, _at: &FieldPath, _r: &mut Report) {}
