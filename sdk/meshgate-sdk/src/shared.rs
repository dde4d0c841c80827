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

/// The cas [`update`] sets a missing key with: one no entry has (hosts count cas values up
/// from 1), so the set creates the key, or fails with `CasMismatch` when another VM created it
/// since it was read. (A cas of 0 would overwrite that VM's value unconditionally.) Envoy and
/// meshgate create a missing key whatever the cas.
pub const CREATE_CAS: u32 = u32::MAX;

/// The cas to set `key` with after reading it with `cas` (`None`: the key was missing).
pub fn cas_for(cas: Option<u32>) -> u32 {
    match cas {
        Some(c) if c != 0 => c,
        _ => CREATE_CAS,
    }
}

/// Replaces the value under `key` with `f(current)`, retrying on a compare-and-swap conflict
/// up to [`UPDATE_ATTEMPTS`] times. `f` returns `None` to leave the value alone. Returns the
/// value stored (or the current one when `f` declined), or the host's error (`CasMismatch`
/// when every attempt lost the race). Creating a missing key is guarded too ([`CREATE_CAS`]):
/// two VMs creating the same key at once cannot both succeed.
pub fn update<F>(key: &str, mut f: F) -> Result<Option<Bytes>, Status>
where
    F: FnMut(Option<&[u8]>) -> Option<Bytes>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let (current, cas) = hostcalls::get_shared_data(key)?;
        let Some(next) = f(current.as_deref()) else {
            return Ok(current);
        };
        match hostcalls::set_shared_data(key, Some(&next), Some(cas_for(cas))) {
            Ok(()) => return Ok(Some(next)),
            Err(Status::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Status::CasMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_set_with_the_create_cas() {
        assert_eq!(cas_for(None), CREATE_CAS);
        assert_eq!(cas_for(Some(0)), CREATE_CAS);
        assert_eq!(cas_for(Some(7)), 7);
    }
}
