//! Shared data (key/value with compare-and-swap) and shared queues: one set per `vm_id`,
//! visible to that plugin's VMs on every worker. Guarded by mutexes held only for one host call.
//!
//! A queue is delivered to the root context of the VM that registered it last, on its worker:
//! enqueueing marks the queue ready in that VM's inbox and wakes the worker's VM driver.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use bytes::Bytes;

use crate::abi::Status;

/// The shared data and queues of all plugins, by vm id.
#[derive(Debug, Default)]
pub struct SharedState {
    data: Mutex<HashMap<ScopedKey, (Bytes, u32)>>,
    queues: Mutex<Queues>,
}

/// A key within a vm id's namespace.
type ScopedKey = (String, Vec<u8>);

#[derive(Debug, Default)]
struct Queues {
    by_name: HashMap<(String, Vec<u8>), u32>,
    list: Vec<Queue>,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Bytes>,
    owner: Arc<Inbox>,
}

/// Where a VM learns that its queues have data: the ids of ready queues and the waker of the
/// task that delivers them.
#[derive(Debug, Default)]
pub struct Inbox {
    inner: Mutex<(Vec<u32>, Option<Waker>)>,
}

impl Inbox {
    fn push(&self, id: u32) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !g.0.contains(&id) {
            g.0.push(id);
        }
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }

    /// Takes the ready queue ids; when there are none, keeps `waker` to wake later.
    pub fn take(&self, waker: &Waker) -> Vec<u32> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.is_empty() {
            g.1 = Some(waker.clone());
        }
        std::mem::take(&mut g.0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SharedState {
    /// The value of `key` in `vm`'s namespace and its cas.
    pub fn get(&self, vm: &str, key: &[u8]) -> Option<(Bytes, u32)> {
        lock(&self.data)
            .get(&(vm.to_owned(), key.to_vec()))
            .cloned()
    }

    /// Sets `key` in `vm`'s namespace; for a key that exists, a non-zero `cas` must match the
    /// current one. Every set moves the cas on. A missing key is created whatever the `cas`, as
    /// Envoy (proxy-wasm-cpp-host) does: a guest creates a key atomically by setting it with a
    /// cas no entry has, which fails with `CasMismatch` once another VM created it first.
    pub fn set(&self, vm: &str, key: &[u8], value: &[u8], cas: u32) -> Status {
        let mut data = lock(&self.data);
        let entry = data.entry((vm.to_owned(), key.to_vec()));
        match entry {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let (v, c) = e.get_mut();
                if cas != 0 && cas != *c {
                    return Status::CasMismatch;
                }
                *v = Bytes::copy_from_slice(value);
                *c = c.wrapping_add(1).max(1);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((Bytes::copy_from_slice(value), 1));
            }
        }
        Status::Ok
    }

    /// Registers (or re-registers) queue `name` of `vm`, delivered to `owner`.
    pub(crate) fn register_queue(&self, vm: &str, name: &[u8], owner: &Arc<Inbox>) -> u32 {
        let mut q = lock(&self.queues);
        if let Some(&id) = q.by_name.get(&(vm.to_owned(), name.to_vec())) {
            if let Some(queue) = q.list.get_mut(id as usize - 1) {
                queue.owner = owner.clone();
            }
            return id;
        }
        q.list.push(Queue {
            items: VecDeque::new(),
            owner: owner.clone(),
        });
        let id = q.list.len() as u32;
        q.by_name.insert((vm.to_owned(), name.to_vec()), id);
        id
    }

    /// The id of queue `name` of `vm`.
    pub fn resolve_queue(&self, vm: &str, name: &[u8]) -> Option<u32> {
        lock(&self.queues)
            .by_name
            .get(&(vm.to_owned(), name.to_vec()))
            .copied()
    }

    /// Appends to queue `id` and tells its owner.
    pub fn enqueue(&self, id: u32, value: &[u8]) -> Status {
        let mut q = lock(&self.queues);
        let Some(queue) = id.checked_sub(1).and_then(|i| q.list.get_mut(i as usize)) else {
            return Status::NotFound;
        };
        // A queue nobody drains must not eat the process's memory.
        if queue.items.len() >= 10_000 {
            return Status::Unimplemented;
        }
        queue.items.push_back(Bytes::copy_from_slice(value));
        let owner = queue.owner.clone();
        drop(q);
        owner.push(id);
        Status::Ok
    }

    /// Takes the oldest item of queue `id`.
    pub fn dequeue(&self, id: u32) -> Result<Bytes, Status> {
        let mut q = lock(&self.queues);
        let queue = id
            .checked_sub(1)
            .and_then(|i| q.list.get_mut(i as usize))
            .ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_guards_existing_keys_and_any_cas_creates_a_missing_one() {
        let s = SharedState::default();
        // Created whatever the cas (Envoy's rule), so a never-matching cas creates atomically.
        assert_eq!(s.set("vm", b"k", b"a", u32::MAX), Status::Ok);
        let (v, cas) = s.get("vm", b"k").expect("created");
        assert_eq!(&v[..], b"a");
        // Now it exists: the same never-matching cas is refused, the right one accepted.
        assert_eq!(s.set("vm", b"k", b"b", u32::MAX), Status::CasMismatch);
        assert_eq!(s.set("vm", b"k", b"b", cas), Status::Ok);
        assert_eq!(s.set("vm", b"k", b"c", cas), Status::CasMismatch);
        // cas 0: unconditional.
        assert_eq!(s.set("vm", b"k", b"d", 0), Status::Ok);
        assert_eq!(&s.get("vm", b"k").expect("set").0[..], b"d");
        // Namespaces are apart.
        assert!(s.get("other", b"k").is_none());
    }
}
