//! `proxy_http_call`: the plugin's callout is checked (a known upstream, `:method`, `:path` and
//! `:authority` present, as Envoy demands) and queued with a fresh token; the filter sends it
//! and delivers the answer through `proxy_on_http_call_response`.

use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use super::{decode_pairs, owned, read, write_u32, Status};
use crate::context::{Callout, HttpCall};
use crate::state::VmState;

/// At most this many callouts may be waiting per VM.
pub(super) const MAX_PENDING: usize = 1024;

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_, VmState>,
         up_ptr: i32,
         up_len: i32,
         h_ptr: i32,
         h_len: i32,
         b_ptr: i32,
         b_len: i32,
         t_ptr: i32,
         t_len: i32,
         timeout_ms: i32,
         token_ptr: i32|
         -> i32 {
            let r = (|| {
                let upstream = String::from_utf8(read(&mut c, up_ptr, up_len)?)
                    .map_err(|_| Status::BadArgument)?;
                let raw_h = read(&mut c, h_ptr, h_len)?;
                let body = read(&mut c, b_ptr, b_len)?;
                let raw_t = read(&mut c, t_ptr, t_len)?;
                let headers = owned(decode_pairs(&raw_h).ok_or(Status::SerializationFailure)?);
                let trailers = owned(decode_pairs(&raw_t).ok_or(Status::SerializationFailure)?);
                let has = |n: &str| headers.iter().any(|(k, v)| k == n && !v.is_empty());
                if !has(":method") || !has(":path") || !has(":authority") {
                    return Err(Status::BadArgument);
                }
                if !c.data().host.has_upstream(&upstream) {
                    return Err(Status::BadArgument);
                }
                let st = c.data_mut();
                if st.calls.len() >= MAX_PENDING {
                    return Err(Status::BadArgument);
                }
                let token = st.next_token;
                st.next_token = st.next_token.wrapping_add(1).max(1);
                st.calls.push(Callout::Http(HttpCall {
                    token,
                    context_id: st.effective,
                    upstream,
                    headers,
                    body: Bytes::from(body),
                    trailers,
                    timeout: Duration::from_millis(u64::from(timeout_ms as u32)),
                }));
                write_u32(&mut c, token_ptr, token)
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    Ok(())
}
