//! gRPC callouts. `proxy_grpc_call` (unary) is queued like an HTTP callout; the answer comes back
//! as `proxy_on_grpc_receive` (the message in the gRPC receive buffer) or `proxy_on_grpc_close`
//! (the status, its message through `proxy_get_status`). Streams (`proxy_grpc_stream`) are not
//! served yet and answer `InternalFailure`, which the SDKs report as a failed dispatch.

use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use super::http_call::{owned, MAX_PENDING};
use super::{decode_pairs, read, write_u32, Status};
use crate::context::{Callout, GrpcCall};
use crate::state::VmState;

/// The cluster a `GrpcService` names: a plain cluster name, or a serialized
/// `envoy.config.core.v3.GrpcService` whose `envoy_grpc.cluster_name` is set (what Envoy reads).
fn upstream_of(raw: &[u8]) -> Option<String> {
    // Field 1 (envoy_grpc, a message) holding field 1 (cluster_name, a string).
    let field = |b: &[u8]| -> Option<Vec<u8>> {
        let (&tag, rest) = b.split_first()?;
        if tag != 0x0a {
            return None;
        }
        let (&len, rest) = rest.split_first()?;
        (len < 0x80).then_some(())?;
        rest.get(..len as usize).map(<[u8]>::to_vec)
    };
    if let Some(inner) = field(raw) {
        if let Some(name) = field(&inner) {
            if let Ok(s) = String::from_utf8(name) {
                return Some(s);
            }
        }
    }
    String::from_utf8(raw.to_vec())
        .ok()
        .filter(|s| !s.is_empty())
}

fn cancel(c: &mut Caller<'_, VmState>, token: i32) -> i32 {
    let st = c.data_mut();
    let token = token as u32;
    if token == 0 || token >= st.next_token {
        return Status::NotFound.code();
    }
    if !st.cancelled.contains(&token) {
        st.cancelled.push(token);
    }
    Status::Ok.code()
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: Caller<'_, VmState>,
         up_ptr: i32,
         up_len: i32,
         svc_ptr: i32,
         svc_len: i32,
         m_ptr: i32,
         m_len: i32,
         md_ptr: i32,
         md_len: i32,
         msg_ptr: i32,
         msg_len: i32,
         timeout_ms: i32,
         token_ptr: i32|
         -> i32 {
            let r = (|| {
                let raw = read(&mut c, up_ptr, up_len)?;
                let service = String::from_utf8(read(&mut c, svc_ptr, svc_len)?)
                    .map_err(|_| Status::BadArgument)?;
                let method = String::from_utf8(read(&mut c, m_ptr, m_len)?)
                    .map_err(|_| Status::BadArgument)?;
                let raw_md = read(&mut c, md_ptr, md_len)?;
                let message = read(&mut c, msg_ptr, msg_len)?;
                let metadata = owned(decode_pairs(&raw_md).ok_or(Status::SerializationFailure)?);
                let upstream = upstream_of(&raw).ok_or(Status::ParseFailure)?;
                if !c.data().host.has_upstream(&upstream) {
                    return Err(Status::ParseFailure);
                }
                let st = c.data_mut();
                if st.calls.len() >= MAX_PENDING {
                    return Err(Status::InternalFailure);
                }
                let token = st.next_token;
                st.next_token = st.next_token.wrapping_add(1).max(1);
                st.calls.push(Callout::Grpc(GrpcCall {
                    token,
                    upstream,
                    service,
                    method,
                    metadata,
                    message: Bytes::from(message),
                    timeout: Duration::from_millis(u64::from(timeout_ms as u32)),
                }));
                write_u32(&mut c, token_ptr, token)
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_c: Caller<'_, VmState>,
         _a: i32,
         _b: i32,
         _c2: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32|
         -> i32 { Status::InternalFailure.code() },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_c: Caller<'_, VmState>, _t: i32, _p: i32, _n: i32, _e: i32| -> i32 {
            Status::NotFound.code()
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut c: Caller<'_, VmState>, t: i32| -> i32 { cancel(&mut c, t) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_close",
        |mut c: Caller<'_, VmState>, t: i32| -> i32 { cancel(&mut c, t) },
    )?;
    Ok(())
}
