//! Buffers (`proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`):
//! the request and response bodies the plugin has buffered, a callout's response body, and the
//! VM and plugin configuration.

use bytes::{Bytes, BytesMut};
use wasmtime::{Caller, Linker};

use super::{finish, hand_over, read, write_u32, BufferType, HostError, Status};
use crate::body_buffer::BodyBuffer;
use crate::state::VmState;

/// Buffer `t`: a body the plugin holds, or bytes of the host's.
enum Buffer<'a> {
    Body(&'a BodyBuffer),
    Bytes(Bytes),
}

impl Buffer<'_> {
    fn len(&self) -> usize {
        match self {
            Buffer::Body(b) => b.len(),
            Buffer::Bytes(b) => b.len(),
        }
    }

    /// Bytes `start..end` (within the buffer), shared where they can be.
    fn range(&self, start: usize, end: usize) -> Bytes {
        match self {
            Buffer::Body(b) => b.range(start, end),
            Buffer::Bytes(b) => b.slice(start..end),
        }
    }
}

/// Buffer `t` as the guest may read it.
fn buffer(st: &mut VmState, t: BufferType) -> Result<Buffer<'_>, Status> {
    Ok(match t {
        BufferType::VmConfiguration => Buffer::Bytes(st.plugin.config.vm_configuration.clone()),
        BufferType::PluginConfiguration => Buffer::Bytes(st.plugin.config.configuration.clone()),
        BufferType::HttpCallResponseBody => Buffer::Bytes(
            st.call_response
                .as_ref()
                .map(|r| r.body.clone())
                .ok_or(Status::NotFound)?,
        ),
        BufferType::GrpcReceiveBuffer => {
            Buffer::Bytes(st.grpc_message.clone().ok_or(Status::NotFound)?)
        }
        BufferType::RequestBody => Buffer::Body(&st.stream().ok_or(Status::NotFound)?.request_body),
        BufferType::ResponseBody => {
            Buffer::Body(&st.stream().ok_or(Status::NotFound)?.response_body)
        }
        _ => return Err(Status::NotFound),
    })
}

fn body_mut(st: &mut VmState, t: BufferType) -> Result<&mut BodyBuffer, Status> {
    let s = st.stream().ok_or(Status::NotFound)?;
    match t {
        BufferType::RequestBody => Ok(&mut s.request_body),
        BufferType::ResponseBody => Ok(&mut s.response_body),
        _ => Err(Status::BadArgument),
    }
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, VmState>,
         t: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> wasmtime::Result<i32> {
            super::sync(&mut c);
            let r = (|| -> Result<(), HostError> {
                let t = BufferType::from_i32(t).ok_or(Status::BadArgument)?;
                let (start, max) = (start as u32 as usize, max as u32 as usize);
                // Only the range asked for is copied out of a gathered body.
                let part = {
                    let all = buffer(c.data_mut(), t)?;
                    if start > all.len() {
                        return Err(Status::BadArgument.into());
                    }
                    all.range(start, start.saturating_add(max).min(all.len()))
                };
                hand_over(&mut c, &part, ret_ptr, ret_size)
            })();
            finish(r)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_, VmState>,
         t: i32,
         start: i32,
         size: i32,
         data_ptr: i32,
         data_len: i32|
         -> i32 {
            super::sync(&mut c);
            crate::vm::fused::mark_dirty(&mut c);
            let r = (|| {
                let t = BufferType::from_i32(t).ok_or(Status::BadArgument)?;
                let data = read(&mut c, data_ptr, data_len)?;
                let (start, size) = (start as u32 as usize, size as u32 as usize);
                let buf = body_mut(c.data_mut(), t)?;
                let old = buf.bytes();
                if start > old.len() {
                    return Err(Status::BadArgument);
                }
                let end = start.saturating_add(size).min(old.len());
                let mut out = BytesMut::with_capacity(old.len() - (end - start) + data.len());
                out.extend_from_slice(&old[..start]);
                out.extend_from_slice(&data);
                out.extend_from_slice(&old[end..]);
                buf.set(out);
                Ok(())
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Caller<'_, VmState>, t: i32, len_ptr: i32, flags_ptr: i32| -> i32 {
            super::sync(&mut c);
            let r = (|| {
                let t = BufferType::from_i32(t).ok_or(Status::BadArgument)?;
                let len = buffer(c.data_mut(), t)?.len() as u32;
                write_u32(&mut c, len_ptr, len)?;
                write_u32(&mut c, flags_ptr, 0)
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    Ok(())
}
