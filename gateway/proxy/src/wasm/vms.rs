//! One VM per plugin per worker, as Envoy runs them: created on a worker's first request that
//! needs it, replaced after it fails (at most once a second, so a plugin that cannot start is
//! not restarted for every request), and driven by a task that delivers its ticks and queues.
//!
//! Lives on the worker thread; no locks. VMs are found by the loaded plugin they run, so a
//! config swap that keeps a plugin keeps its VMs.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use meshgate_wasm::{Host, Plugin, PluginVm};

use super::callout;
use super::loader::{LoadState, LoadedPlugin};
use crate::live::Shared;
use crate::worker::WorkerCtx;

/// A VM shared by the streams of one worker.
pub type SharedVm = Rc<RefCell<PluginVm>>;

struct Slot {
    vm: Option<SharedVm>,
    driver: Option<tokio::task::AbortHandle>,
    last_failure: Option<(Instant, String)>,
}

/// This worker's VMs, by loaded plugin (a short list: a scan beats hashing). A slot holds its
/// plugin weakly: once a config swap drops the plugin, the next lookup drops the slot and its VM
/// (and, while the slot exists, no other plugin can take the dropped one's address).
#[derive(Default)]
pub struct WorkerVms {
    slots: RefCell<Vec<(std::sync::Weak<LoadedPlugin>, Slot)>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

/// How long a plugin whose VM failed to start waits before the next try.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// What the gateway tells its VMs.
struct ProxyHost {
    shared: Arc<Shared>,
}

impl Host for ProxyHost {
    fn has_upstream(&self, upstream: &str) -> bool {
        callout::resolve(&self.shared.live.load(), upstream).is_some()
    }

    fn node_property(&self, path: &[&[u8]]) -> Option<Vec<u8>> {
        self.shared.wasm.node().property(path)
    }
}

impl WorkerVms {
    /// The VM of `loaded` on this worker, started or replaced as needed.
    ///
    /// A plugin still being fetched (or whose update failed) is served by its previous
    /// version's VMs when there is one. Lock-free: two atomic loads of the load state.
    pub fn get(&self, ctx: &Rc<WorkerCtx>, loaded: &Arc<LoadedPlugin>) -> Result<SharedVm, String> {
        let state = loaded.load_state();
        if let LoadState::Loaded { plugin, .. } = &**state {
            return self.get_loaded(ctx, loaded, plugin);
        }
        if let Some(previous) = &*loaded.fallback_guard() {
            let prev_state = previous.load_state();
            if let LoadState::Loaded { plugin, .. } = &**prev_state {
                return self.get_loaded(ctx, previous, plugin);
            }
        }
        Err(match &**state {
            LoadState::Failed(e) => e.clone(),
            _ => "the plugin's module is still being fetched".to_owned(),
        })
    }

    fn get_loaded(
        &self,
        ctx: &Rc<WorkerCtx>,
        loaded: &Arc<LoadedPlugin>,
        plugin: &Plugin,
    ) -> Result<SharedVm, String> {
        let mut slots = self.slots.borrow_mut();
        slots.retain(|(p, _)| p.strong_count() > 0);
        let at = match slots
            .iter()
            .position(|(p, _)| std::ptr::eq(p.as_ptr(), Arc::as_ptr(loaded)))
        {
            Some(i) => i,
            None => {
                let empty = Slot {
                    vm: None,
                    driver: None,
                    last_failure: None,
                };
                slots.push((Arc::downgrade(loaded), empty));
                slots.len() - 1
            }
        };
        let slot = &mut slots[at].1;
        if let Some(vm) = &slot.vm {
            if vm.borrow().failed().is_none() {
                return Ok(vm.clone());
            }
            // The failed VM is dropped once its last stream ends; new streams get a new one.
            plugin.stats().bump_recycle();
            slot.vm = None;
            if let Some(d) = slot.driver.take() {
                d.abort();
            }
        }
        if let Some((at, why)) = &slot.last_failure {
            if at.elapsed() < RESTART_BACKOFF {
                return Err(why.clone());
            }
        }
        match start(ctx, plugin) {
            Ok((vm, driver)) => {
                slot.vm = Some(vm.clone());
                slot.driver = Some(driver);
                slot.last_failure = None;
                Ok(vm)
            }
            Err(e) => {
                slot.last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }
}

fn start(
    ctx: &Rc<WorkerCtx>,
    plugin: &Plugin,
) -> Result<(SharedVm, tokio::task::AbortHandle), String> {
    let host: Rc<dyn Host> = Rc::new(ProxyHost {
        shared: ctx.shared.clone(),
    });
    let mut vm = PluginVm::start(plugin, host).map_err(|e| e.to_string())?;
    let calls = vm.take_calls();
    let vm = Rc::new(RefCell::new(vm));
    callout::dispatch(ctx, &vm, calls);
    let driver = tokio::task::spawn_local(drive(ctx.clone(), Rc::downgrade(&vm))).abort_handle();
    Ok((vm, driver))
}

/// Delivers a VM's ticks and ready queues until the VM fails or is dropped.
async fn drive(ctx: Rc<WorkerCtx>, weak: Weak<RefCell<PluginVm>>) {
    let inbox = match weak.upgrade() {
        Some(vm) => vm.borrow().inbox(),
        None => return,
    };
    let mut sleep: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| loop {
        let Some(vm) = weak.upgrade() else {
            return Poll::Ready(());
        };
        if vm.borrow().failed().is_some() {
            return Poll::Ready(());
        }
        for q in inbox.take(cx.waker()) {
            let calls = {
                let mut v = vm.borrow_mut();
                let _ = v.on_queue_ready(q);
                v.take_calls()
            };
            callout::dispatch(&ctx, &vm, calls);
        }
        let period = vm.borrow_mut().tick_period(cx);
        let Some(period) = period else {
            sleep = None;
            return Poll::Pending;
        };
        let s = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(period)));
        if s.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        sleep = None;
        let calls = {
            let mut v = vm.borrow_mut();
            let _ = v.on_tick();
            v.take_calls()
        };
        callout::dispatch(&ctx, &vm, calls);
    })
    .await
}
