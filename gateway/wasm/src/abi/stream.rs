//! Stream control: `proxy_continue_stream` / `proxy_close_stream` (and ABI 0.1.0's
//! `proxy_continue_request` / `_response`), `proxy_send_local_response`,
//! `proxy_set_effective_context`, `proxy_done`, `proxy_get_status`, `proxy_clear_route_cache`.

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use super::{decode_pairs, finish, hand_over, owned, read, write_u32, HostError, Status};
use crate::context::LocalResponse;
use crate::state::VmState;

fn resume(c: &mut Caller<'_, VmState>, response: bool) -> i32 {
    super::sync(c);
    match c.data_mut().stream() {
        Some(s) => {
            if response {
                s.resumed_response = true;
            } else {
                s.resumed_request = true;
            }
            s.wake();
            Status::Ok.code()
        }
        None => Status::NotFound.code(),
    }
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Caller<'_, VmState>, stream: i32| -> i32 {
            match stream {
                0 => resume(&mut c, false),
                1 => resume(&mut c, true),
                2 | 3 => Status::Unimplemented.code(),
                _ => Status::BadArgument.code(),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_request",
        |mut c: Caller<'_, VmState>| -> i32 { resume(&mut c, false) },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_response",
        |mut c: Caller<'_, VmState>| -> i32 { resume(&mut c, true) },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: Caller<'_, VmState>, stream: i32| -> i32 {
            super::sync(&mut c);
            if !(0..=3).contains(&stream) {
                return Status::BadArgument.code();
            }
            match c.data_mut().stream() {
                Some(s) => {
                    s.closed = true;
                    s.wake();
                    Status::Ok.code()
                }
                None => Status::NotFound.code(),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, VmState>,
         status: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         grpc_status: i32|
         -> i32 {
            super::sync(&mut c);
            crate::vm::fused::mark_dirty(&mut c);
            let r = (|| {
                let details = read(&mut c, details_ptr, details_len)?;
                let body = read(&mut c, body_ptr, body_len)?;
                let raw = read(&mut c, headers_ptr, headers_len)?;
                let pairs = decode_pairs(&raw).ok_or(Status::SerializationFailure)?;
                if !(100..=999).contains(&status) {
                    return Err(Status::BadArgument);
                }
                let headers = owned(pairs);
                let reply = LocalResponse {
                    status: status as u16,
                    details: String::from_utf8_lossy(&details).into_owned(),
                    body: Bytes::from(body),
                    headers,
                    grpc_status: u32::try_from(grpc_status).ok(),
                };
                let s = c.data_mut().stream().ok_or(Status::NotFound)?;
                s.local_response = Some(reply);
                s.wake();
                Ok(())
            })();
            match r {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Caller<'_, VmState>, id: i32| -> i32 {
            crate::vm::fused::mark_dirty(&mut c);
            let st = c.data_mut();
            let id = id as u32;
            if id == st.root_id || st.streams.contains_key(&id) {
                st.effective = id;
                Status::Ok.code()
            } else {
                Status::BadArgument.code()
            }
        },
    )?;
    l.func_wrap("env", "proxy_done", |mut c: Caller<'_, VmState>| -> i32 {
        c.data_mut().done = true;
        Status::Ok.code()
    })?;
    l.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |_c: Caller<'_, VmState>| -> i32 { Status::Ok.code() },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Caller<'_, VmState>,
         code_ptr: i32,
         msg_ptr: i32,
         msg_len: i32|
         -> wasmtime::Result<i32> {
            let (code, msg) = c.data().status.clone();
            let r = (|| -> Result<(), HostError> {
                write_u32(&mut c, code_ptr, code)?;
                hand_over(&mut c, &msg, msg_ptr, msg_len)
            })();
            finish(r)
        },
    )?;
    Ok(())
}
