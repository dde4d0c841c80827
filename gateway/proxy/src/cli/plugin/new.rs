//! `meshgate plugin new`: scaffolds a plugin crate on meshgate-sdk, with a harness test crate.
//!
//! The SDK and the testkit are not on crates.io. The scaffold depends on them by path in a
//! meshgate checkout (`--sdk PATH`, else the `MESHGATE_SDK` environment variable), or, with
//! neither, by git on meshgate's repository. With a checkout, the new crates start from its
//! lockfiles, so they build with the dependency versions meshgate is tested with.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

/// Arguments of `meshgate plugin new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The crate's name (letters, digits, `-`, `_`; starting with a letter).
    pub name: String,
    /// The folder to create the crate in (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A meshgate checkout to take meshgate-sdk and meshgate-testkit from, by path (default:
    /// $MESHGATE_SDK; without either, git dependencies on meshgate's repository).
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

const CARGO_TOML: &str = include_str!("template/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("template/lib.rs.tmpl");
const README: &str = include_str!("template/README.md.tmpl");
const GITIGNORE: &str = include_str!("template/gitignore.tmpl");
const HARNESS_CARGO_TOML: &str = include_str!("template/harness-Cargo.toml.tmpl");
const HARNESS_LIB_RS: &str = include_str!("template/harness-lib.rs.tmpl");
const HARNESS_TEST_RS: &str = include_str!("template/harness-test.rs.tmpl");

/// meshgate's repository, for git dependencies.
const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// Whether `name` is a crate name cargo accepts (and that makes a sensible module name).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 64
}

/// Where the SDK comes from.
enum Sdk {
    /// A meshgate checkout.
    Path(PathBuf),
    /// meshgate's git repository.
    Git,
}

impl Sdk {
    fn resolve(arg: Option<&Path>) -> anyhow::Result<Sdk> {
        let dir = match arg {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("MESHGATE_SDK") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => return Ok(Sdk::Git),
            },
        };
        for crate_dir in ["sdk/meshgate-sdk", "sdk/testkit"] {
            if !dir.join(crate_dir).join("Cargo.toml").is_file() {
                bail!(
                    "{} is not a meshgate checkout: it has no {crate_dir}/Cargo.toml",
                    dir.display()
                );
            }
        }
        let dir =
            std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
        Ok(Sdk::Path(dir))
    }

    fn dependency(&self, package: &str, crate_dir: &str) -> String {
        match self {
            Sdk::Path(dir) => {
                let p = dir.join(crate_dir);
                format!(
                    "{package} = {{ path = {} }}",
                    toml_string(&p.to_string_lossy())
                )
            }
            Sdk::Git => format!("{package} = {{ git = {} }}", toml_string(REPOSITORY)),
        }
    }
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render(template: &str, name: &str, lib: &str, sdk: &Sdk) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{lib}}", lib)
        .replace("{{repository}}", REPOSITORY)
        .replace(
            "{{sdk_dep}}",
            &sdk.dependency("meshgate-sdk", "sdk/meshgate-sdk"),
        )
        .replace(
            "{{testkit_dep}}",
            &sdk.dependency("meshgate-testkit", "sdk/testkit"),
        )
}

/// Writes the scaffold of plugin `name` into `dir` (which must not exist or be empty).
pub fn scaffold(name: &str, dir: &Path, sdk_arg: Option<&Path>) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!("{name:?} is not a valid crate name (letters, digits, '-', '_'; starting with a letter)");
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = Sdk::resolve(sdk_arg)?;
    let lib = name.replace('-', "_");
    let files: [(&str, &str); 7] = [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", LIB_RS),
        ("README.md", README),
        (".gitignore", GITIGNORE),
        ("harness/Cargo.toml", HARNESS_CARGO_TOML),
        ("harness/src/lib.rs", HARNESS_LIB_RS),
        ("harness/tests/plugin.rs", HARNESS_TEST_RS),
    ];
    for (file, template) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, render(template, name, &lib, &sdk))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // Start from the checkout's lockfiles: the plugin's deps are those of the SDK's workspace
    // (plugins/), the harness's those of meshgate's. Cargo drops what a crate does not use.
    if let Sdk::Path(checkout) = &sdk {
        for (from, to) in [
            ("plugins/Cargo.lock", "Cargo.lock"),
            ("Cargo.lock", "harness/Cargo.lock"),
        ] {
            let src = checkout.join(from);
            if src.is_file() {
                std::fs::copy(&src, dir.join(to))
                    .with_context(|| format!("copying {}", src.display()))?;
            }
        }
    }
    Ok(())
}

/// Runs `meshgate plugin new`.
pub fn run(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    scaffold(&args.name, &dir, args.sdk.as_deref())?;
    println!("created {} in {}", args.name, dir.display());
    println!("next: cd {} && meshgate plugin test", dir.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_are_checked() {
        assert!(valid_name("my-plugin_2"));
        for bad in ["", "2fast", "-x", "a b", "a/b", "ü"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_written_as_toml_strings() {
        assert_eq!(toml_string(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
    }

    #[test]
    fn a_git_scaffold_names_the_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("p");
        // No checkout given and none in the environment: git dependencies.
        if std::env::var_os("MESHGATE_SDK").is_some() {
            return;
        }
        scaffold("p", &target, None).expect("scaffold");
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).expect("read");
        assert!(manifest.contains(&format!("meshgate-sdk = {{ git = \"{REPOSITORY}\" }}")));
        let harness = std::fs::read_to_string(target.join("harness/Cargo.toml")).expect("read");
        assert!(harness.contains("meshgate-testkit = { git = "));
        assert!(
            scaffold("p", &target, None).is_err(),
            "not into a full folder"
        );
    }
}
