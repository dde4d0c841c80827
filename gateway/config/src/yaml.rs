//! YAML text to JSON-shaped values that remember where every field came from.
//!
//! Built on `saphyr-parser` (a maintained YAML 1.2 parser with spans). Each document becomes a
//! `serde_json::Value` for serde, plus a [`LineIndex`] from field path to line, so validation
//! can point at `file:line` for any field path. Knows nothing about Istio.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// Field path (`spec.http[0].route`) to 1-based line, for one document.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<String, u32>,
}

impl LineIndex {
    /// The line of `path`, or of its nearest recorded ancestor (a missing field points at its
    /// parent). Falls back to the document's first line (`""`).
    pub fn line_of(&self, path: &str) -> u32 {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return *l;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.lines.get("").copied().unwrap_or(1),
            }
        }
    }

    /// Re-roots an index: every path gets `prefix` removed (used for `kind: List` items).
    pub fn subtree(&self, prefix: &str) -> LineIndex {
        let mut lines = HashMap::new();
        for (k, v) in &self.lines {
            if k == prefix {
                lines.insert(String::new(), *v);
            } else if let Some(rest) = k.strip_prefix(prefix) {
                if let Some(rest) = rest.strip_prefix('.') {
                    lines.insert(rest.to_owned(), *v);
                }
            }
        }
        LineIndex { lines }
    }
}

/// One YAML document of a file.
#[derive(Debug)]
pub struct YamlDoc {
    /// The document's content.
    pub value: Value,
    /// Where each field path starts.
    pub lines: LineIndex,
    /// First line of the document's content.
    pub line: u32,
    /// Duplicate keys found (line, key path): later values win, as in Go's YAML.
    pub duplicate_keys: Vec<(u32, String)>,
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: YAML syntax error: {message}")]
pub struct YamlError {
    /// 1-based line of the error.
    pub line: u32,
    /// What the parser said.
    pub message: String,
}

/// Parses every document of `text`. Empty documents are kept as `Value::Null`.
pub fn parse_documents(text: &str) -> Result<Vec<YamlDoc>, YamlError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        text,
        ascii: text.is_ascii(),
    };
    let mut docs = Vec::new();
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => return Ok(docs),
            Event::DocumentStart(_) => {
                let mut doc = YamlDoc {
                    value: Value::Null,
                    lines: LineIndex::default(),
                    line: line_of(&span),
                    duplicate_keys: Vec::new(),
                };
                let (ev, span) = b.next()?;
                if matches!(ev, Event::DocumentEnd) {
                    docs.push(doc);
                    continue;
                }
                doc.line = line_of(&span);
                let mut path = String::new();
                doc.value = b.node(ev, span, &mut path, &mut doc)?;
                docs.push(doc);
            }
            other => {
                return Err(YamlError {
                    line: line_of(&span),
                    message: format!("unexpected event {other:?}"),
                })
            }
        }
    }
}

fn line_of(span: &Span) -> u32 {
    u32::try_from(span.start.line()).unwrap_or(u32::MAX)
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Value>,
    text: &'a str,
    /// Spans count characters; for ASCII text they are byte offsets too.
    ascii: bool,
}

impl<'a> Builder<'a> {
    /// The character a span starts at (spans count characters, not bytes).
    fn char_at(&self, span: &Span) -> Option<char> {
        let i = span.start.index();
        if self.ascii {
            self.text.as_bytes().get(i).map(|b| char::from(*b))
        } else {
            self.text.chars().nth(i)
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        match self.parser.next_event() {
            Some(Ok(pair)) => Ok(pair),
            Some(Err(e)) => Err(YamlError {
                line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                message: e.info().to_owned(),
            }),
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        path: &mut String,
        doc: &mut YamlDoc,
    ) -> Result<Value, YamlError> {
        doc.lines
            .lines
            .entry(path.clone())
            .or_insert(line_of(&span));
        let (value, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let as_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let v = if style == ScalarStyle::Plain && !as_str {
                    resolve_plain(&text)
                } else {
                    Value::String(text.into_owned())
                };
                (v, anchor)
            }
            Event::Alias(id) => (self.anchors.get(&id).cloned().unwrap_or(Value::Null), 0),
            Event::SequenceStart(anchor, _) => {
                let flow = self.char_at(&span) == Some('[');
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let len = path.len();
                    path.push_str(&format!("[{}]", items.len()));
                    // Go's YAML (what Kubernetes uses) reads `[1.2.3.4, 2001:db8::]` as two
                    // strings; YAML 1.2 reads the IPv6 address as a one-pair mapping whose key
                    // ends in ':'. Read such an implicit pair the way Kubernetes does.
                    let implicit_pair = flow
                        && matches!(ev, Event::MappingStart(..))
                        && self.char_at(&span) != Some('{');
                    let v = self.node(ev, span, path, doc);
                    path.truncate(len);
                    let v = match v? {
                        Value::Object(m) if implicit_pair && m.len() == 1 => {
                            match m.into_iter().next() {
                                Some((k, Value::Null)) if k.ends_with(':') => {
                                    Value::String(format!("{k}:"))
                                }
                                Some((k, v)) => {
                                    let mut m = Map::new();
                                    m.insert(k, v);
                                    Value::Object(m)
                                }
                                None => Value::Object(Map::new()),
                            }
                        }
                        v => v,
                    };
                    items.push(v);
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut map = Map::new();
                loop {
                    let (ev, kspan) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key = match ev {
                        Event::Scalar(text, ..) => text.into_owned(),
                        _ => {
                            return Err(YamlError {
                                line: line_of(&kspan),
                                message: "only scalar mapping keys are supported".into(),
                            })
                        }
                    };
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&key);
                    doc.lines.lines.insert(path.clone(), line_of(&kspan));
                    let (vev, vspan) = self.next()?;
                    let v = self.node(vev, vspan, path, doc);
                    if map.contains_key(&key) {
                        doc.duplicate_keys.push((line_of(&kspan), path.clone()));
                    }
                    path.truncate(len);
                    map.insert(key, v?);
                }
                (Value::Object(map), anchor)
            }
            other => {
                return Err(YamlError {
                    line: line_of(&span),
                    message: format!("unexpected event {other:?}"),
                })
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        Ok(value)
    }
}

/// Types a plain scalar by the YAML 1.2 core schema (what Kubernetes' YAML reads the same way).
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(s) {
        return Value::Number(n);
    }
    if looks_like_float(s) {
        if let Ok(f) = s.parse::<f64>() {
            if let Some(n) = Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    Value::String(s.to_owned())
}

fn parse_int(s: &str) -> Option<Number> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, body) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = u64::from_str_radix(body, radix).ok()?;
    if neg {
        let v = i64::try_from(mag).ok()?;
        Some(Number::from(-v))
    } else {
        Some(Number::from(mag))
    }
}

fn looks_like_float(s: &str) -> bool {
    let t = s.trim_start_matches(['-', '+']);
    !t.is_empty()
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && t.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_values_and_lines() {
        let text = "a: 1\nb:\n  - x\n  - c: true\n---\n---\nname: '80'\nport: 80\nf: 1.5\nn: ~\n";
        let docs = parse_documents(text).expect("parses");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].value["b"][1]["c"], Value::Bool(true));
        assert_eq!(docs[0].lines.line_of("b[1].c"), 4);
        assert_eq!(docs[0].lines.line_of("b[0]"), 3);
        assert_eq!(docs[0].lines.line_of("b[1].missing.deeper"), 4);
        assert_eq!(docs[1].value, Value::Null);
        assert_eq!(docs[2].value["name"], Value::String("80".into()));
        assert_eq!(docs[2].value["port"], Value::from(80));
        assert_eq!(docs[2].value["f"], Value::from(1.5));
        assert_eq!(docs[2].value["n"], Value::Null);
        assert_eq!(docs[2].lines.line_of("port"), 8);
    }

    #[test]
    fn plain_scalars_that_stay_strings() {
        for s in ["1.2.3.4", "v1", "1s", "0x", "-", "e5", "10.0.0.0/8", "yes"] {
            assert_eq!(resolve_plain(s), Value::String(s.into()), "{s}");
        }
        assert_eq!(resolve_plain("0x1f"), Value::from(31));
        assert_eq!(resolve_plain("-3"), Value::from(-3));
    }

    #[test]
    fn anchors_and_duplicates() {
        let docs = parse_documents("a: &x {k: v}\nb: *x\na: 2\n").expect("parses");
        assert_eq!(docs[0].value["b"]["k"], Value::String("v".into()));
        assert_eq!(docs[0].duplicate_keys, vec![(3, "a".to_string())]);
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse_documents("a: 1\nb: [1, 2\nc: 3\n").expect_err("bad yaml");
        assert!(err.line >= 2, "{err}");
    }

    #[test]
    fn ipv6_in_flow_sequences_reads_as_kubernetes_does() {
        let docs = parse_documents("a: [1.2.3.4, 001:db8::, {k: v}, x: y]\n").expect("parses");
        assert_eq!(docs[0].value["a"][1], Value::String("001:db8::".into()));
        assert_eq!(docs[0].value["a"][2]["k"], Value::String("v".into()));
        assert_eq!(docs[0].value["a"][3]["x"], Value::String("y".into()));
    }

    #[test]
    fn list_subtree() {
        let docs =
            parse_documents("kind: List\nitems:\n- kind: A\n  spec:\n    x: 1\n").expect("ok");
        let sub = docs[0].lines.subtree("items[0]");
        assert_eq!(sub.line_of("spec.x"), 5);
        assert_eq!(sub.line_of(""), 3);
    }
}
