//! Shared data (`proxy_get_shared_data`, `proxy_set_shared_data`, with cas) and shared queues
//! (`proxy_register_shared_queue`, `_resolve_`, `_enqueue_`, `_dequeue_`), scoped to the vm id.

use wasmtime::{Caller, Linker};

use super::{finish, hand_over, read, write_u32, HostError, Status};
use crate::state::VmState;

fn vm_id(c: &Caller<'_, VmState>) -> String {
    c.data().plugin.config.vm_id.clone()
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, VmState>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32,
         cas_ptr: i32|
         -> wasmtime::Result<i32> {
            let r = (|| -> Result<(), HostError> {
                let key = read(&mut c, kp, kl)?;
                let (value, cas) = c
                    .data()
                    .plugin
                    .shared
                    .get(&vm_id(&c), &key)
                    .ok_or(Status::NotFound)?;
                hand_over(&mut c, &value, vp, vl)?;
                write_u32(&mut c, cas_ptr, cas)?;
                Ok(())
            })();
            finish(r)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, VmState>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> i32 {
            let r = (|| {
                let key = read(&mut c, kp, kl)?;
                let value = read(&mut c, vp, vl)?;
                if key.len() + value.len() > 1 << 20 {
                    return Err(Status::BadArgument);
                }
                match c
                    .data()
                    .plugin
                    .shared
                    .set(&vm_id(&c), &key, &value, cas as u32)
                {
                    Status::Ok => Ok(()),
                    s => Err(s),
                }
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Caller<'_, VmState>, np: i32, nl: i32, ret: i32| -> i32 {
            let r = (|| {
                let name = read(&mut c, np, nl)?;
                let inbox = c.data().inbox.clone();
                let id = c
                    .data()
                    .plugin
                    .shared
                    .register_queue(&vm_id(&c), &name, &inbox);
                if !c.data().queues.contains(&id) {
                    c.data_mut().queues.push(id);
                }
                write_u32(&mut c, ret, id)
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Caller<'_, VmState>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> i32 {
            let r = (|| {
                let vm = read(&mut c, vp, vl)?;
                let name = read(&mut c, np, nl)?;
                let vm = if vm.is_empty() {
                    vm_id(&c)
                } else {
                    String::from_utf8_lossy(&vm).into_owned()
                };
                let id = c
                    .data()
                    .plugin
                    .shared
                    .resolve_queue(&vm, &name)
                    .ok_or(Status::NotFound)?;
                write_u32(&mut c, ret, id)
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Caller<'_, VmState>, id: i32, vp: i32, vl: i32| -> i32 {
            match read(&mut c, vp, vl) {
                Ok(v) if v.len() > 1 << 20 => Status::BadArgument.code(),
                Ok(v) => c.data().plugin.shared.enqueue(id as u32, &v).code(),
                Err(s) => s.code(),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Caller<'_, VmState>, id: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let r = (|| -> Result<(), HostError> {
                let v = c.data().plugin.shared.dequeue(id as u32)?;
                hand_over(&mut c, &v, vp, vl)
            })();
            finish(r)
        },
    )?;
    Ok(())
}
