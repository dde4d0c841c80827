//! Files and text to typed, validated resources, with a diagnostic for everything rejected.
//!
//! Walks files and directories (`*.yaml`/`*.yml`, multi-document, `kind: List`), keeps the Istio
//! kinds meshgate reads and reports others as skipped. Each document is parsed into its typed
//! spec (unknown fields are warnings, errors under `strict`) and validated; only documents
//! without errors enter the [`ResourceSet`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::diag::{Diagnostic, ResourceRef, Severity};
use crate::model::common::ObjectMeta;
use crate::resource::{Kind, Resource, ResourceSet, Source, Spec};
use crate::validate;
use crate::yaml::{self, LineIndex};

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Namespace of documents that name none (Istio's file sources use `default`).
    pub default_namespace: String,
    /// Unknown fields are errors instead of warnings.
    pub strict: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".into(),
            strict: false,
        }
    }
}

/// A document of a kind meshgate does not read (EnvoyFilter, Telemetry, Deployment, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// File it came from.
    pub file: Arc<str>,
    /// First line of the document.
    pub line: u32,
    /// `apiVersion` as written.
    pub api_version: String,
    /// `kind` as written.
    pub kind: String,
    /// `metadata.name`, when present.
    pub name: String,
}

/// Everything a load produced.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Resources that parsed and passed validation.
    pub set: ResourceSet,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// Documents of kinds meshgate does not read.
    pub skipped: Vec<Skipped>,
    /// Files read.
    pub files: usize,
    /// Istio documents of the kinds meshgate reads (valid or not).
    pub documents: usize,
    /// Of those, documents rejected with at least one error.
    pub rejected: usize,
}

impl Loaded {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Runs the checks that span resources (name conflicts, references); call once after the
    /// last file. Resources found in conflict are removed from the set.
    pub fn finish(&mut self) {
        let (diags, drop) = validate::cross::check(&self.set.resources);
        self.diagnostics.extend(diags);
        if !drop.is_empty() {
            self.rejected += drop.len();
            let mut i = 0;
            self.set.resources.retain(|_| {
                i += 1;
                !drop.contains(&(i - 1))
            });
        }
    }
}

/// A path that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LoadError {
    /// The path.
    pub path: PathBuf,
    /// What the file system said.
    #[source]
    pub source: std::io::Error,
}

/// Loads files and directories (recursively), then runs cross-resource checks.
pub fn load_paths(paths: &[PathBuf], opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let mut out = Loaded::default();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| LoadError {
            path: f.clone(),
            source,
        })?;
        load_text(&f.display().to_string(), &text, opts, &mut out);
    }
    out.finish();
    Ok(out)
}

/// Loads YAML text labelled `file` into `out` (call [`Loaded::finish`] after the last one).
pub fn load_text(file: &str, text: &str, opts: &LoadOptions, out: &mut Loaded) {
    out.files += 1;
    let file: Arc<str> = Arc::from(file);
    let docs = match yaml::parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            out.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file,
                line: e.line,
                resource: None,
                field: String::new(),
                message: format!("YAML syntax error: {}", e.message),
            });
            return;
        }
    };
    for doc in docs {
        for (line, key) in &doc.duplicate_keys {
            out.diagnostics.push(Diagnostic {
                severity: Severity::Warning,
                file: file.clone(),
                line: *line,
                resource: None,
                field: key.clone(),
                message: "duplicate key: the later value wins".into(),
            });
        }
        let lines = Arc::new(doc.lines);
        load_document(&file, doc.value, doc.line, lines, opts, out);
    }
}

fn load_document(
    file: &Arc<str>,
    value: Value,
    line: u32,
    lines: Arc<LineIndex>,
    opts: &LoadOptions,
    out: &mut Loaded,
) {
    let doc_error = |out: &mut Loaded, field: &str, message: String| {
        out.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: file.clone(),
            line: if field.is_empty() {
                line
            } else {
                lines.line_of(field)
            },
            resource: None,
            field: field.to_owned(),
            message,
        });
    };
    let Value::Object(mut obj) = value else {
        if !value.is_null() {
            doc_error(out, "", "document is not a mapping".into());
        }
        return;
    };
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind_name = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if kind_name == "List" {
        let Some(Value::Array(items)) = obj.remove("items") else {
            return;
        };
        for (i, item) in items.into_iter().enumerate() {
            let prefix = format!("items[{i}]");
            let sub = Arc::new(lines.subtree(&prefix));
            let item_line = lines.line_of(&prefix);
            load_document(file, item, item_line, sub, opts, out);
        }
        return;
    }
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(kind) = Kind::from_api(&api_version, &kind_name) else {
        if api_version.is_empty() || kind_name.is_empty() {
            doc_error(out, "", "document has no apiVersion or kind".into());
        } else {
            out.skipped.push(Skipped {
                file: file.clone(),
                line,
                api_version,
                kind: kind_name,
                name,
            });
        }
        return;
    };
    out.documents += 1;
    let meta: ObjectMeta = obj
        .get("metadata")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| opts.default_namespace.clone());
    let rref = ResourceRef {
        kind: kind.as_str().to_owned(),
        namespace: namespace.clone(),
        name: meta.name.clone(),
    };
    let source = Source {
        file: file.clone(),
        line,
        lines,
    };
    let mut diags = Vec::new();
    let mut push = |severity, field: String, message: String| {
        diags.push(Diagnostic {
            severity,
            file: file.clone(),
            line: source.line_of(&field),
            resource: Some(rref.clone()),
            field,
            message,
        });
    };
    let unknown_severity = if opts.strict {
        Severity::Error
    } else {
        Severity::Warning
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            push(unknown_severity, key.clone(), "unknown field".into());
        }
    }
    let present = obj.contains_key("spec");
    let mut spec_value = obj.remove("spec").unwrap_or(Value::Null);
    if !present && !kind.spec_required() {
        spec_value = Value::Object(serde_json::Map::new());
    }
    let spec = match &spec_value {
        Value::Object(_) => parse_spec(kind, &spec_value, &mut |field| {
            push(unknown_severity, field, "unknown field".into())
        }),
        Value::Null if present => Err((
            "spec".to_owned(),
            "spec in body must be of type object: \"null\"".to_owned(),
        )),
        Value::Null => Err((
            "spec".to_owned(),
            "Required value: spec is required".to_owned(),
        )),
        other => Err((
            "spec".to_owned(),
            format!("spec in body must be of type object: {}", json_type(other)),
        )),
    };
    let spec = match spec {
        Ok(spec) => Some(spec),
        Err((field, message)) => {
            push(Severity::Error, field, message);
            None
        }
    };
    if let Some(spec) = spec {
        let res = Resource {
            kind,
            api_version,
            meta,
            namespace,
            spec,
            source,
        };
        let report = validate::validate_resource(&res);
        diags.extend(report.into_issues().into_iter().map(|i| res.diagnostic(i)));
        if !diags.iter().any(Diagnostic::is_error) {
            out.set.resources.push(res);
        }
    }
    if diags.iter().any(Diagnostic::is_error) {
        out.rejected += 1;
    }
    out.diagnostics.extend(diags);
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

type SpecError = (String, String);

fn parse_spec(kind: Kind, v: &Value, unknown: &mut dyn FnMut(String)) -> Result<Spec, SpecError> {
    Ok(match kind {
        Kind::Gateway => Spec::Gateway(typed(v, unknown)?),
        Kind::VirtualService => Spec::VirtualService(typed(v, unknown)?),
        Kind::DestinationRule => Spec::DestinationRule(typed(v, unknown)?),
        Kind::ServiceEntry => Spec::ServiceEntry(typed(v, unknown)?),
        Kind::Sidecar => Spec::Sidecar(typed(v, unknown)?),
        Kind::WorkloadEntry => Spec::WorkloadEntry(typed(v, unknown)?),
        Kind::WorkloadGroup => Spec::WorkloadGroup(typed(v, unknown)?),
        Kind::PeerAuthentication => Spec::PeerAuthentication(typed(v, unknown)?),
        Kind::RequestAuthentication => Spec::RequestAuthentication(typed(v, unknown)?),
        Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(typed(v, unknown)?),
        Kind::WasmPlugin => Spec::WasmPlugin(typed(v, unknown)?),
    })
}

/// Deserializes `v` into `T`, reporting ignored (unknown) fields and the path of the first
/// type error.
fn typed<T: DeserializeOwned>(v: &Value, unknown: &mut dyn FnMut(String)) -> Result<T, SpecError> {
    let mut on_ignored = |p: serde_ignored::Path<'_>| unknown(format!("spec{}", ignored_path(&p)));
    let ignored = serde_ignored::Deserializer::new(v, &mut on_ignored);
    serde_path_to_error::deserialize(ignored).map_err(|e| {
        let mut field = String::from("spec");
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => {
                    field.push_str(&format!("[{index}]"))
                }
                serde_path_to_error::Segment::Map { key } => {
                    field.push('.');
                    field.push_str(key);
                }
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => {}
            }
        }
        (field, serde_message(&e.into_inner().to_string()))
    })
}

fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => format!("{}.{key}", ignored_path(parent)),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// Rewords serde's messages the way the Kubernetes API server words the same problems.
fn serde_message(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        if let Some((value, expected)) = rest.split_once("`, expected ") {
            let expected = expected.trim_start_matches("one of ").replace('`', "\"");
            return format!("Unsupported value: \"{value}\": supported values: {expected}");
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        // "invalid type: null, expected a string" -> Kubernetes' "must be of type string: null"
        if let Some((got, expected)) = rest.split_once(", expected ") {
            let ty = if expected.starts_with("struct") || expected.starts_with("a map") {
                "object"
            } else if expected.starts_with("a sequence") {
                "array"
            } else if expected.starts_with("a string") {
                "string"
            } else if expected.starts_with("a boolean") {
                "boolean"
            } else if expected.contains("integer")
                || expected.starts_with("u")
                || expected.starts_with("i")
            {
                "integer"
            } else {
                expected
            };
            let got = got.split_whitespace().next().unwrap_or(got);
            return format!("must be of type {ty}: \"{got}\"");
        }
    }
    msg.to_owned()
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let meta = std::fs::metadata(p).map_err(|source| LoadError {
        path: p.to_owned(),
        source,
    })?;
    if meta.is_file() {
        out.push(p.to_owned());
        return Ok(());
    }
    let rd = std::fs::read_dir(p).map_err(|source| LoadError {
        path: p.to_owned(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect_files(&e, out)?;
        } else if e
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x == "yaml" || x == "yml")
        {
            out.push(e);
        }
    }
    Ok(())
}
