//! The host function list is read off the real linker: a module importing any listed function
//! links, and the list has the ABI's and WASI's functions.

use meshgate_wasm::{Engine, EngineOptions};

#[test]
fn the_host_function_list_is_what_modules_can_link_against() {
    let engine = Engine::new(EngineOptions::default()).expect("engine");
    let list = engine.host_functions().expect("list");
    for f in [
        ("env", "proxy_log"),
        ("env", "proxy_http_call"),
        ("env", "proxy_send_local_response"),
        ("wasi_snapshot_preview1", "fd_write"),
    ] {
        assert!(
            list.iter().any(|(m, n)| (m.as_str(), n.as_str()) == f),
            "{f:?} missing from {list:?}"
        );
    }
    assert!(!list.iter().any(|(_, n)| n == "proxy_no_such_function"));
    let mut sorted = list.clone();
    sorted.sort();
    assert_eq!(sorted, list);
}
