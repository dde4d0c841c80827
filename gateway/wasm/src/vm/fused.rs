//! What the host's one-entry modules ([`super::start`], [`super::whole`], [`super::ending`])
//! share: a one-page memory of the host's, and the deadline each callback gets on its own.
//!
//! A module that calls several callbacks in one entry writes, before each, its index into the
//! memory's first word ([`Fused`]; a global would do, but wasmtime's typed global accessors
//! cost the host several times more than a memory read): a plain wasm store, where a call back
//! into the host would cost more than a small callback itself. The host reads it where it
//! needs to know which callback runs: to blame a trap, to catch a stream's state up with the
//! callbacks that ran ([`super::whole::catch_up`]), and to give each callback its own CPU
//! budget. For that last,
//! the deadline of a fused entry is one epoch tick away and [`on_deadline`] runs at each tick:
//! a new stage starts a new count, and the entry is interrupted once the same callback has been
//! seen running for the budget's ticks, as a separate entry with that budget would be.
//!
//! The modules decide by themselves only the plain case: a callback that returned `Continue`
//! (0) while nothing happened that the host must look at. Anything else goes through the
//! host's `next` (or `between`): a callback's other return values, and the host calls that set
//! the second word, `dirty` ([`mark_dirty`]): a local reply, a body or effective context the
//! plugin set; and, for a whole response, the callbacks around one picked for timing.

use wasmtime::{
    AsContext, AsContextMut, Memory, MemoryType, Store, StoreContextMut, UpdateDeadline,
};

use crate::state::VmState;

/// Where the modules keep the stage running and the `dirty` flag.
const STAGE: usize = 0;
const DIRTY: usize = 4;

/// The memory and the deadline count of a VM's fused entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fused {
    /// The modules' memory: the stage running and `dirty`, each a little-endian i32.
    pub(crate) memory: Memory,
    /// A fused entry is running.
    active: bool,
    /// The stage last seen at a tick, and for how many ticks in a row.
    seen: i32,
    spent: u64,
    /// The budget of each callback, in ticks.
    ticks: u64,
    /// The stage the last fused entry failed in.
    last: usize,
}

impl Fused {
    /// The memory for `store`, to import into the one-entry modules.
    pub(crate) fn new(store: &mut Store<VmState>) -> wasmtime::Result<Fused> {
        Ok(Fused {
            memory: Memory::new(&mut *store, MemoryType::new(1, Some(1)))?,
            active: false,
            seen: 0,
            spent: 0,
            ticks: 1,
            last: 0,
        })
    }

    /// The stage the last fused entry failed in (0 if it did not).
    pub(crate) fn last(&self) -> usize {
        self.last
    }

    fn word(&self, store: impl AsContext, at: usize) -> i32 {
        let data = self.memory.data(&store);
        data.get(at..at + 4)
            .and_then(|w| w.try_into().ok())
            .map_or(0, i32::from_le_bytes)
    }
}

/// Starts a fused entry whose callbacks get `ticks` of CPU each (the module itself notes its
/// stages and clears `dirty`).
pub(crate) fn begin(store: &mut Store<VmState>, ticks: u64) {
    if let Some(f) = store.data_mut().fused.as_mut() {
        f.active = true;
        f.seen = 0;
        f.spent = 0;
        f.ticks = ticks.max(1);
        store.set_epoch_deadline(1);
    }
}

/// Ends the fused entry that ran, if one did, noting the stage it ended in if `note`.
pub(crate) fn finish(store: &mut Store<VmState>, note: bool) {
    let Some(f) = store.data().fused.filter(|f| f.active) else {
        return;
    };
    let stage = if note { f.word(&*store, STAGE) } else { 0 };
    if let Some(f) = store.data_mut().fused.as_mut() {
        f.active = false;
        f.last = usize::try_from(stage).unwrap_or(0);
    }
}

/// The stage running, inside a fused entry.
pub(crate) fn running(c: impl AsContext<Data = VmState>) -> Option<usize> {
    let f = c.as_context().data().fused.filter(|f| f.active)?;
    usize::try_from(f.word(&c, STAGE)).ok()
}

/// Makes the running fused entry ask the host after the callback running now.
pub(crate) fn mark_dirty(mut c: impl AsContextMut<Data = VmState>) {
    let Some(f) = c.as_context().data().fused.filter(|f| f.active) else {
        return;
    };
    if let Some(w) = f.memory.data_mut(&mut c).get_mut(DIRTY..DIRTY + 4) {
        w.copy_from_slice(&1i32.to_le_bytes());
    }
}

/// The store's epoch deadline callback: outside fused entries a deadline interrupts, as
/// without a callback; inside, at each tick, the callback running is interrupted once it has
/// been seen at `ticks` ticks in a row.
pub(crate) fn on_deadline(cx: StoreContextMut<'_, VmState>) -> wasmtime::Result<UpdateDeadline> {
    let Some(f) = cx.data().fused.filter(|f| f.active) else {
        return Ok(UpdateDeadline::Interrupt);
    };
    let stage = f.word(&cx, STAGE);
    let mut cx = cx;
    let Some(f) = cx.data_mut().fused.as_mut() else {
        return Ok(UpdateDeadline::Interrupt);
    };
    if stage != f.seen {
        f.seen = stage;
        f.spent = 0;
    }
    f.spent += 1;
    Ok(if f.spent >= f.ticks {
        UpdateDeadline::Interrupt
    } else {
        UpdateDeadline::Continue(1)
    })
}
