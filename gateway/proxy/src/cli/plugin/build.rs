//! `meshgate plugin build`: `cargo build --release --target wasm32-wasip1` for a plugin crate
//! (adding the target with rustup when it is missing), then optionally strips the module's
//! custom sections and copies it out; prints its path, size and sha256.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context as _};

/// The target plugins are built for.
pub const TARGET: &str = "wasm32-wasip1";

/// Arguments of `meshgate plugin build`.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// The plugin crate's Cargo.toml (default: ./Cargo.toml).
    #[arg(long)]
    pub manifest_path: Option<PathBuf>,
    /// Copy the built module here.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Remove custom sections (names, producers, debug info) from the module.
    #[arg(long)]
    pub strip: bool,
    /// Pass `--offline` to cargo.
    #[arg(long)]
    pub offline: bool,
    /// Pass `--locked` to cargo.
    #[arg(long)]
    pub locked: bool,
}

/// A built module.
#[derive(Debug, Clone)]
pub struct Built {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: usize,
    /// Its sha256, lower-case hex.
    pub sha256: String,
}

/// The cargo to run: the one running us when there is one, else `cargo` on the PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The manifest to build: `--manifest-path`, else `./Cargo.toml`.
pub fn manifest(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    let p = arg.map_or_else(|| PathBuf::from("Cargo.toml"), Path::to_path_buf);
    if !p.is_file() {
        bail!(
            "{} not found (run in a plugin crate or pass --manifest-path)",
            p.display()
        );
    }
    Ok(p)
}

/// Adds the wasm32-wasip1 target with rustup when rustup is there and the target is not.
fn ensure_target() -> anyhow::Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stderr(Stdio::null())
        .output()
    else {
        // No rustup: cargo will say if the target is missing.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("meshgate: adding the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .context("running rustup target add")?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed");
    }
    Ok(())
}

/// Builds the plugin crate at `manifest` and returns its module (stripped and copied as
/// `args` says).
pub fn build(args: &BuildArgs) -> anyhow::Result<Built> {
    let manifest = manifest(args.manifest_path.as_deref())?;
    ensure_target()?;
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "--message-format=json-render-diagnostics",
    ])
    .arg("--manifest-path")
    .arg(&manifest)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if args.offline {
        cmd.arg("--offline");
    }
    if args.locked {
        cmd.arg("--locked");
    }
    let out = cmd.output().context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build failed ({})", out.status);
    }
    let artifact = wasm_artifact(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
        format!(
            "cargo built no .wasm for {} (is the crate a cdylib: [lib] crate-type = [\"cdylib\"]?)",
            manifest.display()
        )
    })?;
    let mut bytes =
        std::fs::read(&artifact).with_context(|| format!("reading {}", artifact.display()))?;
    if args.strip {
        bytes = strip_custom_sections(&bytes)?;
    }
    let path = match &args.output {
        Some(o) => {
            std::fs::write(o, &bytes).with_context(|| format!("writing {}", o.display()))?;
            o.clone()
        }
        None => {
            if args.strip {
                std::fs::write(&artifact, &bytes)
                    .with_context(|| format!("writing {}", artifact.display()))?;
            }
            artifact
        }
    };
    Ok(Built {
        path,
        size: bytes.len(),
        sha256: super::inspect::sha256_hex(&bytes),
    })
}

/// The last `.wasm` file of a cdylib artifact in cargo's JSON messages.
fn wasm_artifact(messages: &str) -> Option<PathBuf> {
    let mut found = None;
    for line in messages.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg.get("reason").and_then(|r| r.as_str()) != Some("compiler-artifact") {
            continue;
        }
        let cdylib = msg
            .pointer("/target/kind")
            .and_then(|k| k.as_array())
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        if !cdylib {
            continue;
        }
        let files = msg.get("filenames").and_then(|f| f.as_array());
        for f in files.into_iter().flatten().filter_map(|f| f.as_str()) {
            if f.ends_with(".wasm") {
                found = Some(PathBuf::from(f));
            }
        }
    }
    found
}

/// `bytes` without its custom sections (id 0: `name`, `producers`, DWARF, ...). Everything
/// else is copied as it is, so the module behaves the same.
pub fn strip_custom_sections(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    const HEADER: &[u8] = b"\0asm\x01\0\0\0";
    if !bytes.starts_with(HEADER) {
        bail!("not a wasm core module (bad header)");
    }
    let mut out = HEADER.to_vec();
    let mut at = HEADER.len();
    while at < bytes.len() {
        let id = bytes[at];
        let (size, len) = leb128_u32(&bytes[at + 1..]).context("truncated section header")?;
        let start = at + 1 + len;
        let end = start
            .checked_add(size as usize)
            .filter(|e| *e <= bytes.len())
            .context("a section runs past the end of the module")?;
        if id != 0 {
            out.extend_from_slice(&bytes[at..end]);
        }
        at = end;
    }
    Ok(out)
}

/// An unsigned LEB128 u32 at the start of `b`, and how many bytes it took.
fn leb128_u32(b: &[u8]) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    for (i, byte) in b.iter().take(5).enumerate() {
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Runs `meshgate plugin build`.
pub fn run(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let built = build(args)?;
    println!("{}", built.path.display());
    println!("size:   {} bytes", built.size);
    println!("sha256: {}", built.sha256);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_sections_are_stripped_and_the_rest_kept() {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // A custom section "n" with 2 bytes of payload, a type section, another custom one.
        m.extend([0, 4, 1, b'n', 7, 7]);
        m.extend([1, 4, 1, 0x60, 0, 0]);
        m.extend([0, 2, 1, b'x']);
        let s = strip_custom_sections(&m).expect("strip");
        assert_eq!(
            s,
            [&b"\0asm\x01\0\0\0"[..], &[1, 4, 1, 0x60, 0, 0]].concat()
        );
        let mut bad = m.clone();
        bad.extend([1, 10, 0]);
        assert!(strip_custom_sections(&bad).is_err());
        assert!(strip_custom_sections(b"nope").is_err());
    }

    #[test]
    fn the_cdylib_artifact_is_found_in_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"kind":["lib"]},"filenames":["/t/libx.rlib"]}
{"reason":"compiler-artifact","target":{"kind":["cdylib"]},"filenames":["/t/wasm32-wasip1/release/p.wasm"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            wasm_artifact(msgs),
            Some(PathBuf::from("/t/wasm32-wasip1/release/p.wasm"))
        );
        assert_eq!(wasm_artifact(""), None);
    }
}
