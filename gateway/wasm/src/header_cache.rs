//! The header names (and their last value) a VM's plugin writes, parsed once.
//!
//! A plugin tends to write the same few headers on every stream: parsing a name costs a table
//! lookup, a byte check and, for a non-standard name, an allocation, and a copied value is
//! another allocation that each later copy of the map (the record kept for late reads, the
//! HTTP/2 encoder's table) turns into one more. The cache hands out clones instead, which share
//! their bytes. It is per VM, so it needs no lock, and small, so a plugin that writes many
//! different names only evicts its own entries.

use http::header::{HeaderName, HeaderValue};

/// Names kept per VM.
const SLOTS: usize = 16;
/// Values up to this size are kept beside their name.
const MAX_VALUE: usize = 128;

struct Slot {
    name: HeaderName,
    value: Option<HeaderValue>,
}

/// A VM's cache of header names and values.
#[derive(Default)]
pub(crate) struct HeaderCache {
    slots: Vec<Slot>,
    /// The slot the next new name replaces once all are taken.
    next: usize,
}

/// Why a name or value cannot be a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

impl HeaderCache {
    /// The slot for `k`, parsing and keeping it if it is new.
    fn slot(&mut self, k: &[u8]) -> Result<usize, Invalid> {
        // Plugins mostly write names in lower case, as they are kept: compare bytes first. A
        // valid name differs from its parsed form only in letter case.
        let found = self
            .slots
            .iter()
            .position(|s| s.name.as_str().as_bytes() == k)
            .or_else(|| {
                self.slots
                    .iter()
                    .position(|s| s.name.as_str().as_bytes().eq_ignore_ascii_case(k))
            });
        if let Some(i) = found {
            return Ok(i);
        }
        let name = HeaderName::from_bytes(k).map_err(|_| Invalid)?;
        let slot = Slot { name, value: None };
        if self.slots.len() < SLOTS {
            self.slots.push(slot);
            return Ok(self.slots.len() - 1);
        }
        let i = self.next;
        self.next = (self.next + 1) % SLOTS;
        self.slots[i] = slot;
        Ok(i)
    }

    /// The header name `k` (any letter case).
    pub(crate) fn name(&mut self, k: &[u8]) -> Result<HeaderName, Invalid> {
        let i = self.slot(k)?;
        Ok(self.slots[i].name.clone())
    }

    /// The header `k: v`, sharing the bytes of the last value written under `k` when equal.
    pub(crate) fn pair(
        &mut self,
        k: &[u8],
        v: &[u8],
    ) -> Result<(HeaderName, HeaderValue), Invalid> {
        let i = self.slot(k)?;
        let slot = &mut self.slots[i];
        let value = match &slot.value {
            Some(cached) if cached.as_bytes() == v => cached.clone(),
            _ => {
                let value = HeaderValue::from_bytes(v).map_err(|_| Invalid)?;
                if v.len() <= MAX_VALUE {
                    slot.value = Some(value.clone());
                }
                value
            }
        };
        Ok((slot.name.clone(), value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_in_any_case_and_values_are_reused_only_when_equal() {
        let mut c = HeaderCache::default();
        let (n, v) = c.pair(b"X-Wasm", b"one").expect("valid");
        assert_eq!(n.as_str(), "x-wasm");
        assert_eq!(v, "one");
        let (n2, v2) = c.pair(b"x-wasm", b"one").expect("valid");
        assert_eq!(n2, n);
        assert_eq!(
            v2.as_bytes().as_ptr(),
            v.as_bytes().as_ptr(),
            "the cached value is shared"
        );
        let (_, v3) = c.pair(b"x-wasm", b"two").expect("valid");
        assert_eq!(v3, "two");
        assert_eq!(c.slots.len(), 1);
    }

    #[test]
    fn invalid_names_and_values_are_refused_and_not_kept() {
        let mut c = HeaderCache::default();
        assert_eq!(c.name(b"bad name"), Err(Invalid));
        assert_eq!(c.pair(b"x-ok", b"line\nbreak").map(|_| ()), Err(Invalid));
        assert_eq!(c.name(b"").map(|_| ()), Err(Invalid));
        assert_eq!(c.slots.len(), 1, "only the valid name is kept");
    }

    #[test]
    fn a_full_cache_replaces_its_oldest_slot() {
        let mut c = HeaderCache::default();
        for i in 0..SLOTS + 3 {
            let n = c.name(format!("x-h{i}").as_bytes()).expect("valid");
            assert_eq!(n.as_str(), format!("x-h{i}"));
        }
        assert_eq!(c.slots.len(), SLOTS);
        assert_eq!(c.slots[0].name.as_str(), format!("x-h{SLOTS}"));
        assert_eq!(c.slots[3].name.as_str(), "x-h3");
    }
}
