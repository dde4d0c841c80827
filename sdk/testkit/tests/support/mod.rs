//! Where the test plugins (`plugins/`, built by `scripts/build-plugins.sh`) are.

use std::path::PathBuf;

/// `MESHGATE_PLUGINS`, else `$CARGO_TARGET_DIR/plugins`, else the default target dir's.
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

/// The path of test plugin `name`, or `None` (the test skips) outside CI when it was not
/// built; in CI a missing plugin fails the test.
pub fn plugin(name: &str) -> Option<PathBuf> {
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
