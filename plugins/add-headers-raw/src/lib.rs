//! add-headers-raw: what add-headers does with no config (`x-wasm-request: added` on the
//! request, `x-wasm-response: added` on the response), written against the proxy-wasm ABI
//! 0.2.1 itself instead of through an SDK.
//!
//! The benchmark runs it beside add-headers to split a plugin's cost in two: what the host
//! does for any plugin (entering the VM for each callback, the stream's state, the header
//! edits), which this plugin costs almost alone, and what an SDK adds inside the guest (the
//! proxy-wasm crate's dispatch: a context map looked up in every callback, a context allocated
//! and freed per stream), which add-headers costs on top. Both hosts run the same module.
//!
//! Every callback a host may call for an HTTP stream is exported and does nothing but the two
//! header adds; the root context accepts any VM and plugin configuration.

#![no_std]

/// The ABI's map types.
const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
/// `Continue`, as a callback returns it.
const CONTINUE: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
}

fn add(map: u32, key: &str, value: &str) {
    // SAFETY: the host reads `key_len` and `value_len` bytes at the pointers, which are valid
    // for the call; its status (NotFound once a head has gone on) needs no handling here.
    unsafe {
        proxy_add_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len());
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Nothing is ever handed to this plugin that it keeps: one static scratch area serves every
/// allocation the host asks for (a configuration the plugin does not read), up to its size.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    const SIZE: usize = 4096;
    static mut SCRATCH: [u8; SIZE] = [0; SIZE];
    if size > SIZE {
        return core::ptr::null_mut();
    }
    // Only the address is taken: the host writes the bytes, the plugin never reads them.
    core::ptr::addr_of_mut!(SCRATCH).cast()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context: u32, _root: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _size: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: u32, _end: u32) -> u32 {
    add(REQUEST_HEADERS, "x-wasm-request", "added");
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context: u32, _size: u32, _end: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_context: u32, _trailers: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context: u32, _headers: u32, _end: u32) -> u32 {
    add(RESPONSE_HEADERS, "x-wasm-response", "added");
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_context: u32, _size: u32, _end: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context: u32, _trailers: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_context: u32) {}

/// The stream may be deleted at once.
#[no_mangle]
pub extern "C" fn proxy_on_done(_context: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(_context: u32) {}
