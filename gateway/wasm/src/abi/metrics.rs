//! `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`, `proxy_get_metric`:
//! ids index the VM's table of metrics, which point into the process-wide registry.

use wasmtime::{Caller, Linker};

use super::{read, write, write_u32, Status};
use crate::metrics::MetricKind;
use crate::state::VmState;

fn metric(c: &Caller<'_, VmState>, id: i32) -> Option<std::sync::Arc<crate::metrics::Metric>> {
    let i = u32::try_from(id).ok()?.checked_sub(1)? as usize;
    c.data().metrics.get(i).cloned()
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, VmState>, kind: i32, name_ptr: i32, name_len: i32, ret: i32| -> i32 {
            let Some(kind) = MetricKind::from_i32(kind) else {
                return Status::BadArgument.code();
            };
            let name = match read(&mut c, name_ptr, name_len) {
                Ok(n) => String::from_utf8_lossy(&n).into_owned(),
                Err(s) => return s.code(),
            };
            if name.is_empty() || c.data().metrics.len() >= 10_000 {
                return Status::BadArgument.code();
            }
            let m = c.data().plugin.metrics.define(&name, kind);
            let st = c.data_mut();
            let id = match st
                .metrics
                .iter()
                .position(|x| std::sync::Arc::ptr_eq(x, &m))
            {
                Some(i) => i + 1,
                None => {
                    st.metrics.push(m);
                    st.metrics.len()
                }
            };
            match write_u32(&mut c, ret, id as u32) {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Caller<'_, VmState>, id: i32, by: i64| -> i32 {
            match metric(&c, id) {
                Some(m) if m.kind == MetricKind::Histogram => Status::BadArgument.code(),
                Some(m) if m.kind == MetricKind::Counter && by < 0 => Status::BadArgument.code(),
                Some(m) => {
                    m.increment(by);
                    Status::Ok.code()
                }
                None => Status::NotFound.code(),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: Caller<'_, VmState>, id: i32, value: i64| -> i32 {
            match metric(&c, id) {
                Some(m) => {
                    match m.kind {
                        MetricKind::Histogram => m.record(value as u64),
                        MetricKind::Gauge => m.set(value),
                        MetricKind::Counter => {
                            // Envoy sets a counter by adding the difference when it grows.
                            let d = value - m.value();
                            if d > 0 {
                                m.increment(d);
                            }
                        }
                    }
                    Status::Ok.code()
                }
                None => Status::NotFound.code(),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Caller<'_, VmState>, id: i32, ret: i32| -> i32 {
            match metric(&c, id) {
                Some(m) if m.kind == MetricKind::Histogram => Status::BadArgument.code(),
                Some(m) => match write(&mut c, ret, &(m.value() as u64).to_le_bytes()) {
                    Ok(()) => Status::Ok.code(),
                    Err(s) => s.code(),
                },
                None => Status::NotFound.code(),
            }
        },
    )?;
    Ok(())
}
