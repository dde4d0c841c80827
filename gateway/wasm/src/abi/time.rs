//! `proxy_get_current_time_nanoseconds` and `proxy_set_tick_period_milliseconds` (the root
//! context's timer; the filter's VM driver calls `proxy_on_tick`).

use std::time::{Duration, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::{write, Status};
use crate::state::VmState;

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, VmState>, ret: i32| -> i32 {
            let now = c
                .data()
                .host
                .now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            match write(&mut c, ret, &now.to_le_bytes()) {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, VmState>, ms: i32| -> i32 {
            let st = c.data_mut();
            if st.effective != st.root_id {
                return Status::BadArgument.code();
            }
            let ms = ms as u32;
            st.tick_period = (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
            if let Some(w) = st.tick_waker.take() {
                w.wake();
            }
            Status::Ok.code()
        },
    )?;
    Ok(())
}
