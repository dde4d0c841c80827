//! Shared data: a key-value store shared by all VMs of a plugin (one per worker), with
//! compare-and-swap. [`update`] is the read-modify-write loop everybody writes by hand.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Bytes, Status};

/// How often [`update`] retries when another VM changed the value in between.
pub const UPDATE_ATTEMPTS: usize = 8;

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Option<Bytes> {
    hostcalls::get_shared_data(key).ok().and_then(|(v, _)| v)
}

/// Replaces the value under `key` with `f(current)`, retrying on a compare-and-swap conflict
/// up to [`UPDATE_ATTEMPTS`] times. `f` returns `None` to leave the value alone. Returns the
/// value stored (or the current one when `f` declined), or the host's error (`CasMismatch`
/// when every attempt lost the race).
pub fn update<F>(key: &str, mut f: F) -> Result<Option<Bytes>, Status>
where
    F: FnMut(Option<&[u8]>) -> Option<Bytes>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let (current, cas) = hostcalls::get_shared_data(key)?;
        let Some(next) = f(current.as_deref()) else {
            return Ok(current);
        };
        match hostcalls::set_shared_data(key, Some(&next), cas) {
            Ok(()) => return Ok(Some(next)),
            Err(Status::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Status::CasMismatch)
}
