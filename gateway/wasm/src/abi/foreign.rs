//! `proxy_call_foreign_function`: the foreign functions Envoy registers for every plugin that
//! meshgate can honour — `compress` and `uncompress` (zlib streams, as Envoy's zlib `compress` /
//! `uncompress` make and read them) and `clear_route_cache`. Every other name, Envoy's
//! `declare_property`, `set_envoy_filter_state`, `sign`, `verify_signature` and the CEL
//! `expr_*` functions included, is `NotFound`, which is what Envoy answers for a name it does
//! not know (`docs/wasm.md` says why each is left out).
//!
//! As in proxy-wasm-cpp-host, the name and the arguments are bounds-checked first
//! (`InvalidMemoryAccess`), then the name is looked up; whatever the function answers, the
//! result's address and size are written to the two return words the guest passed (0 and 0
//! when the function produced nothing; a return word of 0 is skipped). The result is copied
//! into memory from the guest's own allocator, even when it is empty.

use std::io::Write;

use flate2::{Compression, Decompress, FlushDecompress, Status as Inflate};
use wasmtime::{Caller, Linker};

use super::{finish, place, read, write_u32, HostError, Status};
use crate::state::VmState;

/// The functions meshgate offers, by the name a plugin calls them with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Foreign {
    Compress,
    Uncompress,
    ClearRouteCache,
}

impl Foreign {
    fn by_name(name: &[u8]) -> Option<Foreign> {
        match name {
            b"compress" => Some(Foreign::Compress),
            b"uncompress" => Some(Foreign::Uncompress),
            b"clear_route_cache" => Some(Foreign::ClearRouteCache),
            _ => None,
        }
    }
}

/// A zlib stream (default level, as zlib's `compress`) of `input`.
fn compress(input: &[u8]) -> Result<Vec<u8>, Status> {
    let mut enc = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(input.len() / 2 + 16),
        Compression::default(),
    );
    enc.write_all(input)
        .map_err(|_| Status::SerializationFailure)?;
    enc.finish().map_err(|_| Status::SerializationFailure)
}

/// The data of the complete zlib stream `input`, as zlib's `uncompress` reads it: a corrupt,
/// truncated or dictionary-needing stream is `SerializationFailure` (Envoy's status); bytes
/// after the end of the stream are ignored. Output over `cap` bytes stops the inflation and is
/// `InternalFailure`: it could never be handed to the guest (`cap` is the VM's memory limit),
/// and a small bomb must not make the host allocate without bound.
fn uncompress(input: &[u8], cap: usize) -> Result<Vec<u8>, Status> {
    let mut inflater = Decompress::new(true);
    // Envoy's first guess; the buffer grows (up to one byte past the cap) as the stream needs.
    let limit = cap.saturating_add(1);
    let mut out = Vec::with_capacity((input.len().saturating_mul(2) + 2).min(limit));
    loop {
        if out.len() > cap {
            return Err(Status::InternalFailure);
        }
        let room = out.capacity() - out.len();
        if room < CHUNK {
            out.reserve_exact(CHUNK.max(out.len()).min(limit - out.len()));
        }
        let consumed = usize::try_from(inflater.total_in()).map_err(|_| Status::InternalFailure)?;
        let rest = input.get(consumed..).unwrap_or_default();
        let before = (inflater.total_in(), inflater.total_out());
        match inflater.decompress_vec(rest, &mut out, FlushDecompress::None) {
            Ok(Inflate::StreamEnd) if out.len() <= cap => return Ok(out),
            Ok(Inflate::StreamEnd) => return Err(Status::InternalFailure),
            Ok(Inflate::Ok | Inflate::BufError) => {
                // Stuck with room to spare: the input ended before the stream did.
                let stuck = (inflater.total_in(), inflater.total_out()) == before;
                if stuck && out.len() < out.capacity() {
                    return Err(Status::SerializationFailure);
                }
            }
            Err(_) => return Err(Status::SerializationFailure),
        }
    }
}

/// How much room the inflater gets at least per step.
const CHUNK: usize = 32 << 10;

fn call(
    c: &mut Caller<'_, VmState>,
    name: i32,
    name_len: i32,
    args: i32,
    args_len: i32,
    ret: i32,
    ret_len: i32,
) -> Result<(), HostError> {
    let name = read(c, name, name_len)?;
    let args = read(c, args, args_len)?;
    let f = Foreign::by_name(&name).ok_or(Status::NotFound)?;
    let answer = match f {
        Foreign::Compress => compress(&args).map(Some),
        Foreign::Uncompress => uncompress(&args, c.data().limits.memory).map(Some),
        // meshgate chooses the route again after the plugins' request-headers phase in any
        // case (see `docs/wasm.md`), so there is no cache to clear.
        Foreign::ClearRouteCache => Ok(None),
    };
    let (addr, size) = match &answer {
        Ok(Some(bytes)) => {
            let size = u32::try_from(bytes.len()).map_err(|_| Status::BadArgument)?;
            // A caller that passes no address word gets the size only, as in Envoy.
            let addr = if ret != 0 { place(c, bytes)? } else { 0 };
            (addr, size)
        }
        Ok(None) | Err(_) => (0, 0),
    };
    if ret != 0 {
        write_u32(c, ret, addr)?;
    }
    if ret_len != 0 {
        write_u32(c, ret_len, size)?;
    }
    answer.map(|_| ()).map_err(HostError::Status)
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Caller<'_, VmState>,
         name: i32,
         name_len: i32,
         args: i32,
         args_len: i32,
         ret: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            finish(call(&mut c, name, name_len, args, args_len, ret, ret_len))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_the_header_zlib_writes() {
        for input in [&b""[..], b"a", &[7u8; 100_000][..]] {
            let z = compress(input).expect("compress");
            // zlib's header for the default level and window.
            assert_eq!(&z[..2], &[0x78, 0x9c]);
            assert_eq!(uncompress(&z, 1 << 20).as_deref(), Ok(input));
        }
    }

    #[test]
    fn bad_streams_are_serialization_failures() {
        let z = compress(b"hello hello hello").expect("compress");
        assert_eq!(uncompress(b"", 1024), Err(Status::SerializationFailure));
        assert_eq!(
            uncompress(b"nonsense", 1024),
            Err(Status::SerializationFailure)
        );
        assert_eq!(
            uncompress(&z[..z.len() - 5], 1024),
            Err(Status::SerializationFailure)
        );
        let mut bad_sum = z.clone();
        if let Some(last) = bad_sum.last_mut() {
            *last ^= 1;
        }
        assert_eq!(
            uncompress(&bad_sum, 1024),
            Err(Status::SerializationFailure)
        );
        // Trailing bytes after the stream are ignored, as zlib's uncompress does.
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"junk");
        assert_eq!(
            uncompress(&trailing, 1024).as_deref(),
            Ok(&b"hello hello hello"[..])
        );
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        // 64 MiB of zeros compresses to about 64 KiB.
        let bomb = compress(&vec![0u8; 64 << 20]).expect("compress");
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        assert_eq!(uncompress(&bomb, 1 << 20), Err(Status::InternalFailure));
        // Exactly at the cap is fine.
        let z = compress(&[1u8; 4096]).expect("compress");
        assert_eq!(uncompress(&z, 4096).map(|v| v.len()), Ok(4096));
        assert_eq!(uncompress(&z, 4095), Err(Status::InternalFailure));
    }
}
