//! The WASI preview1 imports Rust and Go guests link against, inside the sandbox: no files, no
//! sockets, no arguments; the environment is the plugin's `vmConfig.env` only; stdout and
//! stderr become log lines (info and error) of the gateway; `proc_exit` stops the VM.

use std::time::UNIX_EPOCH;

use wasmtime::{Caller, Linker};

use super::{memory, read, slice, write, write_u32};
use crate::state::VmState;

const M: &str = "wasi_snapshot_preview1";
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ENOTCAPABLE: i32 = 76;

/// A line of guest output longer than this is written out in pieces.
const MAX_LINE: usize = 4096;

fn errno(r: Result<(), super::Status>) -> i32 {
    if r.is_ok() {
        SUCCESS
    } else {
        EFAULT
    }
}

fn env_strings(c: &Caller<'_, VmState>) -> Vec<Vec<u8>> {
    c.data()
        .plugin
        .config
        .env
        .iter()
        .map(|(k, v)| {
            let mut s = format!("{k}={v}").into_bytes();
            s.push(0);
            s
        })
        .collect()
}

fn fd_write(c: &mut Caller<'_, VmState>, fd: i32, iovs: i32, n: i32, written: i32) -> i32 {
    if fd != 1 && fd != 2 {
        return EBADF;
    }
    let Some(mem) = memory(c) else {
        return EFAULT;
    };
    let mut data = Vec::new();
    {
        let m = mem.data(&*c);
        for i in 0..n.max(0) {
            let Some(iov) = slice(m, iovs.wrapping_add(i * 8), 8) else {
                return EFAULT;
            };
            let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
            let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
            let Some(bytes) = slice(m, ptr, len) else {
                return EFAULT;
            };
            data.extend_from_slice(bytes);
        }
    }
    let total = data.len() as u32;
    let level = if fd == 1 { 2 } else { 4 };
    let idx = (fd - 1) as usize;
    let mut buf = std::mem::take(&mut c.data_mut().stdio[idx]);
    buf.extend_from_slice(&data);
    while let Some(pos) = buf
        .iter()
        .position(|b| *b == b'\n')
        .or((buf.len() >= MAX_LINE).then_some(MAX_LINE))
    {
        let line: Vec<u8> = buf.drain(..pos.min(buf.len())).collect();
        if buf.first() == Some(&b'\n') {
            buf.remove(0);
        }
        super::log::emit(c.data(), level, &String::from_utf8_lossy(&line));
    }
    c.data_mut().stdio[idx] = buf;
    errno(write_u32(c, written, total))
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        M,
        "fd_write",
        |mut c: Caller<'_, VmState>, fd: i32, iovs: i32, n: i32, w: i32| -> i32 {
            fd_write(&mut c, fd, iovs, n, w)
        },
    )?;
    l.func_wrap(
        M,
        "environ_sizes_get",
        |mut c: Caller<'_, VmState>, count: i32, size: i32| -> i32 {
            let env = env_strings(&c);
            let total: usize = env.iter().map(Vec::len).sum();
            errno(
                write_u32(&mut c, count, env.len() as u32)
                    .and_then(|()| write_u32(&mut c, size, total as u32)),
            )
        },
    )?;
    l.func_wrap(
        M,
        "environ_get",
        |mut c: Caller<'_, VmState>, ptrs: i32, buf: i32| -> i32 {
            let mut at = buf;
            for (i, s) in env_strings(&c).iter().enumerate() {
                let r = write_u32(&mut c, ptrs.wrapping_add(i as i32 * 4), at as u32)
                    .and_then(|()| write(&mut c, at, s));
                if r.is_err() {
                    return EFAULT;
                }
                at = at.wrapping_add(s.len() as i32);
            }
            SUCCESS
        },
    )?;
    l.func_wrap(
        M,
        "args_sizes_get",
        |mut c: Caller<'_, VmState>, count: i32, size: i32| -> i32 {
            errno(write_u32(&mut c, count, 0).and_then(|()| write_u32(&mut c, size, 0)))
        },
    )?;
    l.func_wrap(
        M,
        "args_get",
        |_c: Caller<'_, VmState>, _p: i32, _b: i32| -> i32 { SUCCESS },
    )?;
    l.func_wrap(
        M,
        "clock_time_get",
        |mut c: Caller<'_, VmState>, id: i32, _precision: i64, ret: i32| -> i32 {
            let now = match id {
                // Realtime, and the monotonic and CPU clocks (read off the same wall clock).
                0..=3 => c
                    .data()
                    .host
                    .now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                _ => return EINVAL,
            };
            errno(write(&mut c, ret, &now.to_le_bytes()))
        },
    )?;
    l.func_wrap(
        M,
        "clock_res_get",
        |mut c: Caller<'_, VmState>, _id: i32, ret: i32| -> i32 {
            errno(write(&mut c, ret, &1u64.to_le_bytes()))
        },
    )?;
    l.func_wrap(
        M,
        "random_get",
        |mut c: Caller<'_, VmState>, buf: i32, len: i32| -> i32 {
            let n = len as u32;
            if n > 1 << 20 {
                return EINVAL;
            }
            let bytes: Vec<u8> = (0..n).map(|_| fastrand::u8(..)).collect();
            errno(write(&mut c, buf, &bytes))
        },
    )?;
    l.func_wrap(
        M,
        "proc_exit",
        |c: Caller<'_, VmState>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::format_err!(
                "plugin {} called proc_exit({code})",
                c.data().plugin.config.name
            ))
        },
    )?;
    l.func_wrap(M, "sched_yield", |_c: Caller<'_, VmState>| -> i32 {
        SUCCESS
    })?;
    l.func_wrap(M, "fd_close", |_c: Caller<'_, VmState>, _fd: i32| -> i32 {
        EBADF
    })?;
    l.func_wrap(M, "fd_sync", |_c: Caller<'_, VmState>, _fd: i32| -> i32 {
        EBADF
    })?;
    l.func_wrap(
        M,
        "fd_read",
        |_c: Caller<'_, VmState>, _fd: i32, _i: i32, _n: i32, _r: i32| -> i32 { EBADF },
    )?;
    l.func_wrap(
        M,
        "fd_seek",
        |_c: Caller<'_, VmState>, _fd: i32, _o: i64, _w: i32, _r: i32| -> i32 { EBADF },
    )?;
    l.func_wrap(
        M,
        "fd_tell",
        |_c: Caller<'_, VmState>, _fd: i32, _r: i32| -> i32 { EBADF },
    )?;
    l.func_wrap(
        M,
        "fd_fdstat_get",
        |mut c: Caller<'_, VmState>, fd: i32, ret: i32| -> i32 {
            if !(0..=2).contains(&fd) {
                return EBADF;
            }
            // A character device with no rights beyond writing (stdout, stderr).
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8..16].copy_from_slice(&(1u64 << 6).to_le_bytes());
            errno(write(&mut c, ret, &stat))
        },
    )?;
    l.func_wrap(
        M,
        "fd_filestat_get",
        |_c: Caller<'_, VmState>, _fd: i32, _r: i32| -> i32 { EBADF },
    )?;
    l.func_wrap(
        M,
        "fd_prestat_get",
        |_c: Caller<'_, VmState>, _fd: i32, _r: i32| -> i32 { EBADF },
    )?;
    l.func_wrap(
        M,
        "fd_prestat_dir_name",
        |_c: Caller<'_, VmState>, _fd: i32, _p: i32, _l: i32| -> i32 { EBADF },
    )?;
    l.func_wrap(
        M,
        "path_open",
        |_c: Caller<'_, VmState>,
         _fd: i32,
         _df: i32,
         _p: i32,
         _l: i32,
         _of: i32,
         _rb: i64,
         _ri: i64,
         _ff: i32,
         _r: i32|
         -> i32 { ENOTCAPABLE },
    )?;
    l.func_wrap(
        M,
        "poll_oneoff",
        |_c: Caller<'_, VmState>, _i: i32, _o: i32, _n: i32, _r: i32| -> i32 { ENOSYS },
    )?;
    l.func_wrap(M, "proc_raise", |_c: Caller<'_, VmState>, _s: i32| -> i32 {
        ENOSYS
    })?;
    let _ = read;
    Ok(())
}
