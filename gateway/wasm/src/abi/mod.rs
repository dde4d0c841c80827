//! The ABI's host side: its enums as the spec numbers them, guest-memory access, and the
//! linker that gives a module every import, one file per area as in proxy-wasm-cpp-host.
//!
//! Host calls never trust the guest: every pointer is bounds-checked and a bad one returns
//! `InvalidMemoryAccess`; only a guest allocator that misbehaves makes the call trap.

mod buffers;
mod foreign;
mod grpc;
mod headers;
pub(crate) use headers::request_header_count;
mod http_call;
mod log;
mod metrics;
mod properties;
mod shared_data;
mod stream;
mod time;
mod wasi;

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use crate::state::VmState;

/// The result of a host call, as the guest reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// The key, context, queue or token does not exist.
    NotFound = 1,
    /// An argument is out of range.
    BadArgument = 2,
    /// Encoded data could not be decoded.
    SerializationFailure = 3,
    /// A value could not be parsed.
    ParseFailure = 4,
    /// A pointer or length lies outside the guest's memory.
    InvalidMemoryAccess = 6,
    /// The queue is empty.
    Empty = 7,
    /// Shared data changed since its cas was read.
    CasMismatch = 8,
    /// The host failed.
    InternalFailure = 10,
    /// Not available in this context or on this host.
    Unimplemented = 12,
}

impl Status {
    pub(crate) fn code(self) -> i32 {
        self as i32
    }
}

/// Log levels as the ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5
    Critical,
}

impl LogLevel {
    /// The level the ABI numbers `v` (0 trace ... 5 critical; out of range: critical).
    pub fn from_abi(v: i32) -> LogLevel {
        match v {
            i32::MIN..=0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }
}

/// The header maps a guest can address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// 0
    RequestHeaders,
    /// 1
    RequestTrailers,
    /// 2
    ResponseHeaders,
    /// 3
    ResponseTrailers,
    /// 4
    GrpcInitialMetadata,
    /// 5
    GrpcTrailingMetadata,
    /// 6
    HttpCallResponseHeaders,
    /// 7
    HttpCallResponseTrailers,
}

impl MapType {
    fn from_i32(v: i32) -> Option<MapType> {
        Some(match v {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// The buffers a guest can address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    /// 0
    RequestBody,
    /// 1
    ResponseBody,
    /// 2
    DownstreamData,
    /// 3
    UpstreamData,
    /// 4
    HttpCallResponseBody,
    /// 5
    GrpcReceiveBuffer,
    /// 6
    VmConfiguration,
    /// 7
    PluginConfiguration,
    /// 8
    CallData,
}

impl BufferType {
    fn from_i32(v: i32) -> Option<BufferType> {
        Some(match v {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return None,
        })
    }
}

/// Registers every host function of every supported ABI version on `linker`.
pub(crate) fn link(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    log::link(linker)?;
    time::link(linker)?;
    buffers::link(linker)?;
    headers::link(linker)?;
    properties::link(linker)?;
    shared_data::link(linker)?;
    http_call::link(linker)?;
    grpc::link(linker)?;
    metrics::link(linker)?;
    stream::link(linker)?;
    foreign::link(linker)?;
    wasi::link(linker)?;
    Ok(())
}

/// Before a host call looks at its stream: in a whole response's run through the plugin, the
/// stream's state catches up with the callbacks the host's module went past by itself
/// (`vm::whole`).
fn sync(c: &mut Caller<'_, VmState>) {
    if !c.data().whole.active {
        return;
    }
    if let Some(stage) = crate::vm::fused::running(&*c) {
        crate::vm::whole::catch_up(c.data_mut(), stage);
    }
}

/// The guest's exported memory, if it has one.
fn memory(caller: &mut Caller<'_, VmState>) -> Option<wasmtime::Memory> {
    if let Some(m) = caller.data().memory {
        return Some(m);
    }
    let m = caller.get_export("memory")?.into_memory()?;
    caller.data_mut().memory = Some(m);
    Some(m)
}

/// The `len` bytes at `ptr` in `mem`, or `None` when they fall outside it.
fn slice(mem: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
    // Guest pointers and sizes are unsigned 32-bit values.
    let start = ptr as u32 as usize;
    let len = len as u32 as usize;
    mem.get(start..start.checked_add(len)?)
}

/// Copies the guest bytes at `ptr..ptr+len`.
fn read(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let mem = memory(caller).ok_or(Status::InvalidMemoryAccess)?;
    slice(mem.data(&*caller), ptr, len)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

/// Writes `bytes` at `ptr` in guest memory.
fn write(caller: &mut Caller<'_, VmState>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let mem = memory(caller).ok_or(Status::InvalidMemoryAccess)?;
    let start = ptr as u32 as usize;
    let data = mem.data_mut(&mut *caller);
    let end = start
        .checked_add(bytes.len())
        .ok_or(Status::InvalidMemoryAccess)?;
    data.get_mut(start..end)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian u32 at `ptr`.
fn write_u32(caller: &mut Caller<'_, VmState>, ptr: i32, v: u32) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Hands `bytes` to the guest the ABI's way: allocates them in guest memory with the guest's
/// allocator and writes the address and size to `ret_ptr` / `ret_size`.
///
/// An error from the allocator itself (a trap inside it) is returned as `Err(Err(..))` so the
/// host call traps as well; a bad return pointer is `Err(Ok(InvalidMemoryAccess))`.
fn hand_over(
    caller: &mut Caller<'_, VmState>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> Result<(), HostError> {
    let size = u32::try_from(bytes.len()).map_err(|_| HostError::Status(Status::BadArgument))?;
    let addr = if bytes.is_empty() {
        0
    } else {
        place(caller, bytes)?
    };
    write_u32(caller, ret_ptr, addr).map_err(HostError::Status)?;
    write_u32(caller, ret_size, size).map_err(HostError::Status)?;
    Ok(())
}

/// Copies `bytes` into memory the guest's allocator gives (even for no bytes) and returns its
/// address.
fn place(caller: &mut Caller<'_, VmState>, bytes: &[u8]) -> Result<u32, HostError> {
    let size = i32::try_from(bytes.len()).map_err(|_| HostError::Status(Status::BadArgument))?;
    let alloc = caller
        .data()
        .alloc
        .clone()
        .ok_or(HostError::Status(Status::Unimplemented))?;
    let addr = alloc.call(&mut *caller, size).map_err(HostError::Trap)?;
    if addr == 0 {
        return Err(HostError::Status(Status::InvalidMemoryAccess));
    }
    write(caller, addr, bytes).map_err(HostError::Status)?;
    Ok(addr as u32)
}

/// A host call's failure: a status for the guest, or a trap to propagate (one raised inside a
/// guest function the host called, like the allocator, or a deadline).
enum HostError {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for HostError {
    fn from(s: Status) -> Self {
        HostError::Status(s)
    }
}

/// The value a host function returns to the guest: the status code, or a trap.
fn finish(r: Result<(), HostError>) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(Status::Ok.code()),
        Err(HostError::Status(s)) => Ok(s.code()),
        Err(HostError::Trap(e)) => Err(e),
    }
}

/// Decodes the ABI's serialized header map: a u32 count, then a (key length, value length)
/// pair of u32 per entry, then each key and value followed by a NUL.
fn decode_pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let n = u32_at(0)?;
    let mut sizes = Vec::with_capacity(n.min(1024));
    let mut at = 4;
    for _ in 0..n {
        sizes.push((u32_at(at)?, u32_at(at + 4)?));
        at += 8;
    }
    let mut out = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = bytes.get(at..at.checked_add(k)?)?;
        at += k + 1;
        let value = bytes.get(at..at.checked_add(v)?)?;
        at += v + 1;
        out.push((key, value));
    }
    Some(out)
}

/// Decoded pairs as owned names and values.
pub(super) fn owned(pairs: Vec<(&[u8], &[u8])>) -> Vec<(String, Bytes)> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                Bytes::copy_from_slice(v),
            )
        })
        .collect()
}

/// Encodes pairs the ABI's way: a u32 count, a (key length, value length) pair of u32 per
/// entry, then each key and value followed by a NUL (little-endian throughout).
pub fn encode_pairs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + bytes);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_reject_truncation() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/a"), (b"x", b"")];
        let enc = encode_pairs(&pairs);
        assert_eq!(decode_pairs(&enc).as_deref(), Some(&pairs[..]));
        for cut in 1..enc.len() - 1 {
            let d = decode_pairs(&enc[..cut]);
            assert!(
                d.is_none() || d.as_ref().is_some_and(|d| d.len() < 2),
                "cut {cut}"
            );
        }
        assert_eq!(decode_pairs(&[]).as_deref(), Some(&[][..]));
        // A count far beyond the data does not allocate for it or panic.
        assert!(decode_pairs(&u32::MAX.to_le_bytes()).is_none());
    }
}
