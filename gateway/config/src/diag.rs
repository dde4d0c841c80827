//! Diagnostics: what validation and loading say about the config, as data.
//!
//! Every problem carries where it is (file and line), which resource it concerns, the field path
//! inside that resource and the reason. Loading, validation and compilation all speak this type;
//! only the CLI turns it into text.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// How bad a diagnostic is: errors reject the document, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The document is rejected (Istio's webhook would refuse it).
    Error,
    /// The document is accepted, but something is likely wrong (as `istioctl analyze` would say).
    Warning,
}

/// The resource a diagnostic concerns: `Kind namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ResourceRef {
    /// The resource kind, e.g. `VirtualService`.
    pub kind: String,
    /// The namespace the resource lives in.
    pub namespace: String,
    /// The resource name (`metadata.name`), may be empty when missing.
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One problem found in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the document came from (or a label such as `<embedded>`).
    pub file: Arc<str>,
    /// 1-based line of the offending field (or of the document when the field is absent).
    pub line: u32,
    /// The resource, when the problem is inside one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// Field path inside the document, e.g. `spec.http[0].route[1].destination.host`.
    pub field: String,
    /// Why it is a problem.
    pub message: String,
}

impl Diagnostic {
    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A problem found by a validation rule, before it is placed in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Error or warning.
    pub severity: Severity,
    /// Field path, e.g. `spec.hosts[0]`.
    pub field: String,
    /// Why it is a problem.
    pub message: String,
}

/// A field path under construction: `spec`, `spec.http[0]`, `spec.http[0].match`.
///
/// Cheap enough for validation (a `String`), never used on the request path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at `root` (usually `spec`).
    pub fn root(root: &str) -> Self {
        FieldPath(root.to_owned())
    }

    /// The path of a named field below this one.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            return FieldPath(name.to_owned());
        }
        FieldPath(format!("{}.{}", self.0, name))
    }

    /// The path of a list element below this one.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, i))
    }

    /// The path of a map entry below this one (`labels[app]`).
    pub fn key(&self, k: &str) -> Self {
        FieldPath(format!("{}[{}]", self.0, k))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Collects the issues of one resource while its validation rules run.
#[derive(Debug, Default)]
pub struct Report {
    issues: Vec<Issue>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error at `at`.
    pub fn error(&mut self, at: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Error, at, message.into());
    }

    /// Records a warning at `at`.
    pub fn warn(&mut self, at: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Warning, at, message.into());
    }

    fn push(&mut self, severity: Severity, at: &FieldPath, message: String) {
        self.issues.push(Issue {
            severity,
            field: at.0.clone(),
            message,
        });
    }

    /// True when an error has been recorded.
    pub fn has_errors(&self) -> bool {
        self.issues.iter().any(|i| i.severity == Severity::Error)
    }

    /// The issues recorded so far.
    pub fn issues(&self) -> &[Issue] {
        &self.issues
    }

    /// Takes the recorded issues.
    pub fn into_issues(self) -> Vec<Issue> {
        self.issues
    }
}
