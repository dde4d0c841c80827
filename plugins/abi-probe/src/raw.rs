//! Host calls made without the SDK's wrappers, so the probe can report the host's raw status
//! numbers (the SDK panics on statuses it does not expect, or maps several to one).

use std::ptr::{null, null_mut};

/// What a host call that may hand back bytes answered.
pub enum Got {
    /// Status 0 with data (`Some`) or with a null pointer (`None`).
    Ok(Option<Vec<u8>>),
    /// Any other status, as the number the host returned.
    Status(u32),
}

impl Got {
    /// `hex` for data, `null` for Ok-without-data and for NotFound (1), `{"status": n}` else.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Got::Ok(Some(bytes)) => hex(bytes).into(),
            Got::Ok(None) | Got::Status(1) => serde_json::Value::Null,
            Got::Status(n) => serde_json::json!({ "status": n }),
        }
    }

    /// Like `to_json` but keeps every status apart: `{"ok": hex | null}` or `{"status": n}`.
    pub fn raw_json(&self) -> serde_json::Value {
        match self {
            Got::Ok(bytes) => serde_json::json!({ "ok": bytes.as_deref().map(hex) }),
            Got::Status(n) => serde_json::json!({ "status": n }),
        }
    }

    pub fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Got::Ok(bytes) => bytes,
            Got::Status(_) => None,
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_log_level(level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value: *const u8, value_size: usize) -> u32;
    fn proxy_dequeue_shared_queue(queue_id: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_resolve_shared_queue(
        vm_id: *const u8,
        vm_id_size: usize,
        name: *const u8,
        name_size: usize,
        queue_id: *mut u32,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name: *const u8, size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_metric(metric_id: u32, value: *mut u64) -> u32;
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        args: *const u8,
        args_size: usize,
        ret: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
}

/// Takes ownership of a buffer the host filled through proxy_on_memory_allocate (the SDK's
/// allocator hands out `Vec<u8>` storage of exactly `size` bytes).
fn take(status: u32, data: *mut u8, size: usize) -> Got {
    if status != 0 {
        return Got::Status(status);
    }
    if data.is_null() {
        return Got::Ok(None);
    }
    // SAFETY: the host returned Ok with a pointer it got from our allocator for `size` bytes.
    Got::Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) }))
}

pub fn log(level: u32, message: &str) -> u32 {
    // SAFETY: the pointer and length describe a live string.
    unsafe { proxy_log(level, message.as_ptr(), message.len()) }
}

pub fn log_level() -> (u32, u32) {
    let mut level = u32::MAX;
    // SAFETY: the host writes one u32 into a local.
    let status = unsafe { proxy_get_log_level(&mut level) };
    (status, level)
}

pub fn time_nanos() -> (u32, u64) {
    let mut nanos = 0;
    // SAFETY: the host writes one u64 into a local.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    (status, nanos)
}

/// Segments joined by NUL, as the ABI's property paths are.
pub fn property(path: &[&str]) -> Got {
    let serialized = path.join("\0");
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: in-pointers describe a live buffer, out-pointers are locals.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    take(status, data, size)
}

pub fn buffer(buffer_type: u32) -> Got {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: out-pointers are locals.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer_type, 0, usize::MAX, &mut data, &mut size) };
    take(status, data, size)
}

/// The serialized pairs of a header map.
pub fn header_pairs(map_type: u32) -> Got {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: out-pointers are locals.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    take(status, data, size)
}

/// The pair count of a serialized header map (its first four bytes, little-endian).
pub fn pair_count(serialized: &[u8]) -> Option<u32> {
    word(serialized, 0)
}

/// The names of a serialized header map, in order (`None` if it is malformed): after the
/// count, a key and a value size per pair, then each key and value with a NUL after it.
pub fn pair_names(serialized: &[u8]) -> Option<Vec<String>> {
    let count = pair_count(serialized)? as usize;
    let size = |at: usize| word(serialized, at).map(|n| n as usize);
    let mut at = count.checked_mul(8)?.checked_add(4)?;
    let mut names = Vec::new();
    for i in 0..count {
        let (k, v) = (size(4 + i * 8)?, size(8 + i * 8)?);
        names.push(String::from_utf8_lossy(serialized.get(at..at.checked_add(k)?)?).into_owned());
        at = at.checked_add(k + v + 2)?;
    }
    Some(names)
}

/// The little-endian u32 at `at`.
fn word(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub fn header(map_type: u32, name: &str) -> Got {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: in-pointers describe a live string, out-pointers are locals.
    let status = unsafe {
        proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    take(status, data, size)
}

pub fn get_shared(key: &str) -> (Got, u32) {
    let (mut data, mut size, mut cas) = (null_mut(), 0, 0);
    // SAFETY: in-pointers describe a live string, out-pointers are locals.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    (take(status, data, size), cas)
}

pub fn set_shared(key: &str, value: &[u8], cas: u32) -> u32 {
    // SAFETY: the pointers and lengths describe live buffers.
    unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) }
}

pub fn enqueue(queue_id: u32, value: &[u8]) -> u32 {
    // SAFETY: the pointer and length describe a live buffer.
    unsafe { proxy_enqueue_shared_queue(queue_id, value.as_ptr(), value.len()) }
}

pub fn dequeue(queue_id: u32) -> Got {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: out-pointers are locals.
    let status = unsafe { proxy_dequeue_shared_queue(queue_id, &mut data, &mut size) };
    take(status, data, size)
}

pub fn resolve_queue(vm_id: &str, name: &str) -> (u32, u32) {
    let mut id = 0;
    // SAFETY: in-pointers describe live strings, the out-pointer is a local.
    let status = unsafe {
        proxy_resolve_shared_queue(
            vm_id.as_ptr(),
            vm_id.len(),
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    };
    (status, id)
}

/// Metric types: 0 counter, 1 gauge, 2 histogram.
pub fn define_metric(metric_type: u32, name: &str) -> (u32, u32) {
    let mut id = 0;
    // SAFETY: the in-pointer describes a live string, the out-pointer is a local.
    let status = unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) };
    (status, id)
}

pub fn increment_metric(id: u32, offset: i64) -> u32 {
    // SAFETY: no pointers.
    unsafe { proxy_increment_metric(id, offset) }
}

pub fn record_metric(id: u32, value: u64) -> u32 {
    // SAFETY: no pointers.
    unsafe { proxy_record_metric(id, value) }
}

pub fn get_metric(id: u32) -> (u32, u64) {
    let mut value = 0;
    // SAFETY: the host writes one u64 into a local.
    let status = unsafe { proxy_get_metric(id, &mut value) };
    (status, value)
}

/// The ABI's header-map encoding: count, then (key length, value length) pairs, then each key
/// and value followed by a NUL.
pub fn serialize_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// A call whose token the SDK's dispatcher does not know: only for calls expected to fail.
pub fn http_call(cluster: &str, headers: &[(&str, &str)], timeout_ms: u32) -> (u32, u32) {
    let headers = serialize_map(headers);
    let trailers = serialize_map(&[]);
    let mut token = 0;
    // SAFETY: in-pointers describe live buffers (a null body of length 0), the out-pointer is a
    // local.
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            null(),
            0,
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    };
    (status, token)
}

/// What `proxy_call_foreign_function` answered, with the two return words as the host left
/// them (they start at `FOREIGN_UNSET`, so a word the host did not write shows).
pub struct Foreign {
    pub status: u32,
    /// The address word: `None` when it is still unset, else whether it is null.
    pub null: Option<bool>,
    pub size: Option<usize>,
    pub data: Option<Vec<u8>>,
}

pub const FOREIGN_UNSET: usize = 0xdead_0000;

/// Where the name, the arguments or the return words of a foreign call point: their real
/// buffers, or an address past the end of memory (a "bad pointer").
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ptr {
    Real,
    Bad,
    Null,
}

const BAD: usize = 0xffff_fff0;

pub fn foreign(name: &str, args: &[u8], name_at: Ptr, args_at: Ptr, ret_at: Ptr) -> Foreign {
    let (mut data, mut size): (*mut u8, usize) = (FOREIGN_UNSET as *mut u8, FOREIGN_UNSET);
    let pick = |p: Ptr, real: *const u8| match p {
        Ptr::Real => real,
        Ptr::Bad => BAD as *const u8,
        Ptr::Null => null(),
    };
    let ret: *mut *mut u8 = match ret_at {
        Ptr::Real => &mut data,
        Ptr::Bad => BAD as *mut *mut u8,
        Ptr::Null => null_mut(),
    };
    // SAFETY: real in-pointers describe live buffers and the real out-pointers are locals; the
    // bad and null ones are for the host to refuse (it bounds-checks every pointer).
    let status = unsafe {
        proxy_call_foreign_function(
            pick(name_at, name.as_ptr()),
            name.len(),
            pick(args_at, args.as_ptr()),
            args.len(),
            ret,
            &mut size,
        )
    };
    let addr = data as usize;
    let null = (addr != FOREIGN_UNSET).then_some(addr == 0);
    let got_size = (size != FOREIGN_UNSET).then_some(size);
    let bytes = if status == 0 && null == Some(false) {
        take(0, data, size).bytes()
    } else {
        None
    };
    Foreign {
        status,
        null,
        size: got_size,
        data: bytes,
    }
}
