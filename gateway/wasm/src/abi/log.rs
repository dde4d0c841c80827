//! `proxy_log` and `proxy_get_log_level`: guest log lines go to the gateway's log (target
//! `wasm`), prefixed with the plugin's name as Envoy prefixes them.

use wasmtime::{Caller, Linker};

use super::{read, write_u32, LogLevel, Status};
use crate::state::VmState;

/// The level the gateway logs wasm lines at, in the ABI's numbering.
fn current_level() -> u32 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => 0,
        LevelFilter::DEBUG => 1,
        LevelFilter::INFO => 2,
        LevelFilter::WARN => 3,
        LevelFilter::ERROR => 4,
        _ => 5,
    }
}

/// Writes one guest log line at ABI `level` (0..=5; above is critical).
pub(crate) fn emit(st: &VmState, level: i32, msg: &str) {
    let cfg = &st.plugin.config;
    st.host.log(LogLevel::from_abi(level), msg);
    // Envoy's prefix: `wasm log <plugin name> <root id> <vm id>: <message>`.
    let (name, root, vm) = (&cfg.name, &cfg.root_id, &cfg.vm_id);
    match level {
        0 => tracing::trace!(target: "wasm", "wasm log {name} {root} {vm}: {msg}"),
        1 => tracing::debug!(target: "wasm", "wasm log {name} {root} {vm}: {msg}"),
        2 => tracing::info!(target: "wasm", "wasm log {name} {root} {vm}: {msg}"),
        3 => tracing::warn!(target: "wasm", "wasm log {name} {root} {vm}: {msg}"),
        _ => tracing::error!(target: "wasm", "wasm log {name} {root} {vm}: {msg}"),
    }
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, VmState>, level: i32, ptr: i32, len: i32| -> i32 {
            if !(0..=5).contains(&level) {
                return Status::BadArgument.code();
            }
            match read(&mut c, ptr, len) {
                Ok(bytes) => {
                    emit(c.data(), level, &String::from_utf8_lossy(&bytes));
                    Status::Ok.code()
                }
                Err(s) => s.code(),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: Caller<'_, VmState>, ret: i32| -> i32 {
            match write_u32(&mut c, ret, current_level()) {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            }
        },
    )?;
    Ok(())
}
