//! gRPC callouts (`proxy_grpc_call`, `_stream`, `_send`, `_cancel`, `_close`): not served yet.
//! Each answers `Unimplemented`, so a plugin sees a clean failure instead of a missing import.

use wasmtime::{Caller, Linker};

use super::Status;
use crate::state::VmState;

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |_c: Caller<'_, VmState>,
         _a: i32,
         _b: i32,
         _c2: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _k: i32,
         _l: i32|
         -> i32 { Status::Unimplemented.code() },
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
         -> i32 { Status::Unimplemented.code() },
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
        |_c: Caller<'_, VmState>, _t: i32| -> i32 { Status::NotFound.code() },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_close",
        |_c: Caller<'_, VmState>, _t: i32| -> i32 { Status::NotFound.code() },
    )?;
    Ok(())
}
