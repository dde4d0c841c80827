//! `meshgate validate PATH...`: load, validate and report, one line per problem.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use meshgate_config::{load_paths, LoadOptions, Loaded};
use serde_json::json;

/// Output format of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// `FILE:LINE: Kind ns/name: field: reason` lines and a summary.
    Text,
    /// One JSON object with diagnostics, skipped documents and counts.
    Json,
}

/// Arguments of `meshgate validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories (searched recursively for *.yaml / *.yml).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Treat unknown fields as errors.
    #[arg(long)]
    pub strict: bool,
    /// Namespace of documents that do not name one.
    #[arg(long, default_value = "default")]
    pub default_namespace: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs `validate`: exit 1 when any document is invalid.
pub fn run(a: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let opts = LoadOptions {
        default_namespace: a.default_namespace.clone(),
        strict: a.strict,
    };
    let loaded = load_paths(&a.paths, &opts)?;
    match a.output {
        Output::Text => print_text(&loaded),
        Output::Json => print_json(&loaded)?,
    }
    Ok(if loaded.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_text(l: &Loaded) {
    // Files in load order, lines ascending within a file.
    let mut order: Vec<&meshgate_config::Diagnostic> = l.diagnostics.iter().collect();
    let file_rank = |f: &str| {
        l.diagnostics
            .iter()
            .position(|d| &*d.file == f)
            .unwrap_or(0)
    };
    order.sort_by_key(|d| (file_rank(&d.file), d.line));
    for d in order {
        println!("{d}");
    }
    let errors = l.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = l.diagnostics.len() - errors;
    println!(
        "{} file(s), {} Istio document(s): {} valid, {} invalid; {} other document(s) skipped; {} error(s), {} warning(s)",
        l.files,
        l.documents,
        l.documents.saturating_sub(l.rejected),
        l.rejected,
        l.skipped.len(),
        errors,
        warnings
    );
}

fn print_json(l: &Loaded) -> anyhow::Result<()> {
    let errors = l.diagnostics.iter().filter(|d| d.is_error()).count();
    let v = json!({
        "diagnostics": l.diagnostics,
        "skipped": l.skipped,
        "summary": {
            "files": l.files,
            "documents": l.documents,
            "valid": l.documents.saturating_sub(l.rejected),
            "invalid": l.rejected,
            "skipped": l.skipped.len(),
            "errors": errors,
            "warnings": l.diagnostics.len() - errors,
        }
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
