//! `proxy_call_foreign_function`: meshgate offers none of Envoy's foreign functions yet, so
//! every name is `NotFound`, which is what Envoy answers for a name it does not know.

use wasmtime::{Caller, Linker};

use super::Status;
use crate::state::VmState;

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_c: Caller<'_, VmState>,
         _name: i32,
         _name_len: i32,
         _args: i32,
         _args_len: i32,
         _ret: i32,
         _ret_len: i32|
         -> i32 { Status::NotFound.code() },
    )?;
    Ok(())
}
