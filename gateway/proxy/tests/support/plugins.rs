//! The test plugins (`plugins/`, built for wasm32-wasip1 by `scripts/build-plugins.sh`, which
//! the test command runs first): where their `.wasm` files are.

use std::path::PathBuf;

/// The folder with the built plugins: `MESHGATE_PLUGINS`, else `$CARGO_TARGET_DIR/plugins`,
/// else the default target dir's.
fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MESHGATE_PLUGINS") {
        return d.into();
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("plugins");
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/meshgate-target/plugins")
}

/// The path of plugin `name` (`add-headers`, `abi-probe`, `hostile`), or `None` (the test
/// skips) outside CI when it was not built; in CI a missing plugin fails the test.
pub fn path(name: &str) -> Option<PathBuf> {
    let p = dir().join(format!("{name}.wasm"));
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing in CI (scripts/build-plugins.sh builds it)",
        p.display()
    );
    eprintln!(
        "SKIPPED: {} not built (run scripts/build-plugins.sh)",
        p.display()
    );
    None
}
