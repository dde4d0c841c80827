//! gRPC callouts. `proxy_grpc_call` (unary) is queued like an HTTP callout; the answer comes back
//! as `proxy_on_grpc_receive` (the message in the gRPC receive buffer) or `proxy_on_grpc_close`
//! (the status, its message through `proxy_get_status`). A stream (`proxy_grpc_stream`,
//! `proxy_grpc_send`) brings back initial metadata, messages, trailing metadata and the close.

use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use super::http_call::MAX_PENDING;
use super::{decode_pairs, owned, read, write_u32, Status};
use crate::context::{Callout, GrpcCall, GrpcStreamOpen};
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

/// `proxy_grpc_cancel` (`half_close`: `proxy_grpc_close`): a stream is dropped (or
/// half-closed); a unary call's answer will not be delivered.
fn cancel(c: &mut Caller<'_, VmState>, token: i32, half_close: bool) -> i32 {
    let st = c.data_mut();
    let token = token as u32;
    if let Some(i) = st.grpc_streams.iter().position(|t| *t == token) {
        if half_close {
            st.calls.push(Callout::GrpcHalfClose(token));
        } else {
            st.grpc_streams.swap_remove(i);
            st.calls.push(Callout::GrpcCancel(token));
        }
        return Status::Ok.code();
    }
    if token == 0 || token >= st.next_token {
        return Status::NotFound.code();
    }
    if !st.cancelled.contains(&token) {
        st.cancelled.push(token);
    }
    Status::Ok.code()
}

/// What a gRPC callout is sent to: upstream, service, method, metadata.
type Target = (String, String, String, Vec<(String, Bytes)>);

/// Reads and checks the target of a gRPC callout.
fn target(
    c: &mut Caller<'_, VmState>,
    up: (i32, i32),
    svc: (i32, i32),
    m: (i32, i32),
    md: (i32, i32),
) -> Result<Target, Status> {
    let raw = read(c, up.0, up.1)?;
    let service = String::from_utf8(read(c, svc.0, svc.1)?).map_err(|_| Status::BadArgument)?;
    let method = String::from_utf8(read(c, m.0, m.1)?).map_err(|_| Status::BadArgument)?;
    let raw_md = read(c, md.0, md.1)?;
    let metadata = owned(decode_pairs(&raw_md).ok_or(Status::SerializationFailure)?);
    let upstream = upstream_of(&raw).ok_or(Status::ParseFailure)?;
    if !c.data().host.has_upstream(&upstream) {
        return Err(Status::ParseFailure);
    }
    if c.data().calls.len() >= MAX_PENDING {
        return Err(Status::InternalFailure);
    }
    Ok((upstream, service, method, metadata))
}

fn next_token(st: &mut VmState) -> u32 {
    let token = st.next_token;
    st.next_token = st.next_token.wrapping_add(1).max(1);
    token
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
                let (upstream, service, method, metadata) = target(
                    &mut c,
                    (up_ptr, up_len),
                    (svc_ptr, svc_len),
                    (m_ptr, m_len),
                    (md_ptr, md_len),
                )?;
                let message = Bytes::from(read(&mut c, msg_ptr, msg_len)?);
                let st = c.data_mut();
                let token = next_token(st);
                st.calls.push(Callout::Grpc(GrpcCall {
                    token,
                    upstream,
                    service,
                    method,
                    metadata,
                    message,
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
        |mut c: Caller<'_, VmState>,
         up_ptr: i32,
         up_len: i32,
         svc_ptr: i32,
         svc_len: i32,
         m_ptr: i32,
         m_len: i32,
         md_ptr: i32,
         md_len: i32,
         token_ptr: i32|
         -> i32 {
            let r = (|| {
                let (upstream, service, method, metadata) = target(
                    &mut c,
                    (up_ptr, up_len),
                    (svc_ptr, svc_len),
                    (m_ptr, m_len),
                    (md_ptr, md_len),
                )?;
                let st = c.data_mut();
                let token = next_token(st);
                st.grpc_streams.push(token);
                st.calls.push(Callout::GrpcStream(GrpcStreamOpen {
                    token,
                    upstream,
                    service,
                    method,
                    metadata,
                }));
                write_u32(&mut c, token_ptr, token)
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: Caller<'_, VmState>, token: i32, ptr: i32, len: i32, end: i32| -> i32 {
            let r = (|| {
                let token = token as u32;
                if !c.data().grpc_streams.contains(&token) {
                    return Err(Status::NotFound);
                }
                let message = Bytes::from(read(&mut c, ptr, len)?);
                let st = c.data_mut();
                if st.calls.len() >= MAX_PENDING {
                    return Err(Status::BadArgument);
                }
                st.calls.push(Callout::GrpcSend {
                    token,
                    message,
                    end_stream: end != 0,
                });
                Ok(())
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut c: Caller<'_, VmState>, t: i32| -> i32 { cancel(&mut c, t, false) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_close",
        |mut c: Caller<'_, VmState>, t: i32| -> i32 { cancel(&mut c, t, true) },
    )?;
    Ok(())
}
