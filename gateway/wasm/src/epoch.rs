//! The epoch clock callback deadlines are counted in: one thread advances the engine's epoch
//! every tick while some VM runs guest code, and only every [`IDLE_TICK`] otherwise.
//!
//! Ticking every 5 ms forever would wake the gateway 200 times a second for nothing: most of
//! the time no guest code runs (callbacks last microseconds). Each VM marks, with a plain store
//! into a flag of its own (no shared counter on the hot path), when it is inside guest code; the
//! clock thread reads the flags before it sleeps. A callback that starts while the clock sleeps
//! long gets its first tick at most [`IDLE_TICK`] late, so a deadline fires between the
//! deadline and [`IDLE_TICK`] after it, never early.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long the clock sleeps while no VM runs guest code.
pub(crate) const IDLE_TICK: Duration = Duration::from_millis(50);

/// The clock's view of the VMs.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// One flag per live VM: set while it runs guest code.
    flags: Mutex<Vec<Weak<AtomicBool>>>,
}

/// A VM's flag: set while it runs guest code.
#[derive(Debug)]
pub(crate) struct InGuest(Arc<AtomicBool>);

impl InGuest {
    pub(crate) fn enter(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Clock {
    /// A flag for a new VM.
    pub(crate) fn register(&self) -> InGuest {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut flags) = self.flags.lock() {
            flags.push(Arc::downgrade(&flag));
        }
        InGuest(flag)
    }

    /// Whether some VM runs guest code (the flags of dropped VMs are forgotten on the way).
    fn busy(&self) -> bool {
        let Ok(mut flags) = self.flags.lock() else {
            return true;
        };
        let mut busy = false;
        flags.retain(|f| match f.upgrade() {
            Some(f) => {
                busy |= f.load(Ordering::Relaxed);
                true
            }
            None => false,
        });
        busy
    }

    /// Starts the thread that advances `engine`'s epoch; it stops once the engine is gone.
    pub(crate) fn start(
        clock: Arc<Clock>,
        engine: wasmtime::EngineWeak,
        tick: Duration,
    ) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(if clock.busy() { tick } else { IDLE_TICK });
                match engine.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_busy_only_while_a_live_vm_is_in_guest_code() {
        let clock = Clock::default();
        let a = clock.register();
        let b = clock.register();
        assert!(!clock.busy());
        b.enter();
        assert!(clock.busy());
        b.leave();
        assert!(!clock.busy());
        a.enter();
        drop(a);
        assert!(!clock.busy(), "a dropped VM's flag is forgotten");
        assert_eq!(clock.flags.lock().map(|f| f.len()).unwrap_or(0), 1);
    }
}
