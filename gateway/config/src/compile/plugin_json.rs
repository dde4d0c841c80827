//! `pluginConfig` as the exact JSON string Istio gives Envoy: istiod marshals the protobuf
//! `Struct` with the legacy `jsonpb` marshaler (keys sorted, compact) whose scalars go through Go's
//! `encoding/json` (HTML-safe string escapes, Go's float formatting, every number a double).
//!
//! serde_json here keeps insertion order, so this writes the JSON itself.

use std::fmt::Write as _;

use serde_json::Value;

/// Why a `pluginConfig` has no JSON form (validation rejects both).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginConfigError {
    /// The config is not an object (the CRD declares `type: object`).
    #[error("pluginConfig must be an object, not {0}")]
    NotAnObject(&'static str),
    /// A number with no double value.
    #[error("pluginConfig holds a number with no double value: {0}")]
    BadNumber(String),
}

/// The configuration string for Envoy: empty when `config` is absent or an empty object (Istio
/// then sends an empty `Any`), else the compact, key-sorted JSON of the object.
pub fn istio_plugin_config(config: Option<&Value>) -> Result<String, PluginConfigError> {
    match config {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::Object(m)) if m.is_empty() => Ok(String::new()),
        Some(v @ Value::Object(_)) => {
            let mut out = String::new();
            write_value(v, &mut out)?;
            Ok(out)
        }
        Some(other) => Err(PluginConfigError::NotAnObject(type_name(other))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn write_value(v: &Value, out: &mut String) -> Result<(), PluginConfigError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let f = n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| PluginConfigError::BadNumber(n.to_string()))?;
            write_go_float(f, out);
        }
        Value::String(s) => write_go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            // Go compares strings bytewise, as Rust does.
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(k, out);
                out.push(':');
                write_value(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Go `encoding/json` float64: shortest round-trip digits, plain notation for
/// `1e-6 <= |f| < 1e21` (and 0), else exponent notation with a sign and at least two exponent
/// digits, except that a negative one-digit exponent loses its padding (`1e-7`, `1e+21`).
fn write_go_float(f: f64, out: &mut String) {
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        let _ = write!(out, "{f}");
        return;
    }
    let e = format!("{f:e}");
    match e.split_once('e') {
        Some((mantissa, exp)) => {
            out.push_str(mantissa);
            out.push('e');
            match exp.strip_prefix('-') {
                Some(digits) => {
                    out.push('-');
                    out.push_str(digits);
                }
                None => {
                    out.push('+');
                    if exp.len() < 2 {
                        out.push('0');
                    }
                    out.push_str(exp);
                }
            }
        }
        None => out.push_str(&e),
    }
}

/// Go `encoding/json` string with HTML escaping (what `json.Marshal` does): `"` and `\`,
/// short escapes for `\b \f \n \r \t`, `\u00XX` for other control characters and `< > &`,
/// and `\u2028` / `\u2029`.
fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn go(f: f64) -> String {
        let mut s = String::new();
        write_go_float(f, &mut s);
        s
    }

    #[test]
    fn floats_format_as_go_encoding_json() {
        // Expected values are what Go's json.Marshal(float64) prints.
        let cases: [(f64, &str); 12] = [
            (0.0, "0"),
            (1.0, "1"),
            (-3.0, "-3"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-10, "1.5e-10"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.2345e300, "1.2345e+300"),
            (18446744073709551615.0, "18446744073709552000"),
        ];
        for (f, want) in cases {
            assert_eq!(go(f), want, "{f:?}");
        }
    }

    #[test]
    fn strings_escape_as_go_encoding_json() {
        let mut s = String::new();
        write_go_string("a\"b\\c\n\t\u{1}<>&\u{2028}é\u{7f}", &mut s);
        // DEL is left as is, like every other character Go finds safe.
        assert_eq!(
            s,
            "\"a\\\"b\\\\c\\n\\t\\u0001\\u003c\\u003e\\u0026\\u2028é\u{7f}\""
        );
    }

    #[test]
    fn objects_sorted_compact_and_empty_is_empty() {
        let v = json!({"z": 1, "a": {"y": [true, null, 2.5, "s"], "b": {}}, "m": []});
        assert_eq!(
            istio_plugin_config(Some(&v)).as_deref(),
            Ok(r#"{"a":{"b":{},"y":[true,null,2.5,"s"]},"m":[],"z":1}"#)
        );
        assert_eq!(istio_plugin_config(None).as_deref(), Ok(""));
        assert_eq!(istio_plugin_config(Some(&json!({}))).as_deref(), Ok(""));
        assert_eq!(
            istio_plugin_config(Some(&json!("x"))),
            Err(PluginConfigError::NotAnObject("a string"))
        );
    }
}
