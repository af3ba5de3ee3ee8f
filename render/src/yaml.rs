//! YAML in and out. Reading: multi-document files into JSON values, each document tagged
//! with the line it starts on, errors as `file:line:col`. Writing: a canonical YAML
//! emitter with sorted keys and conservative quoting, so the same value always gives the
//! same bytes whatever serde_json's map order or the YAML library's version.

use serde_json::{Map, Value};

use crate::diagnostic::Diagnostic;

/// One YAML document of a file, with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Doc {
    pub line: u32,
    pub value: Value,
}

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    // Kubernetes' own parser reads `defaultMode: 0644` as octal 420.
    o.legacy_octal_numbers = true;
    // YAML 1.2 booleans only, as kustomize (kyaml) reads them: `yes` stays a string.
    o.strict_booleans = true;
    o
}

/// Parses one YAML document (a whole file that must hold exactly one).
pub(crate) fn parse_single(file: &str, text: &str) -> Result<Value, Diagnostic> {
    let docs = parse_documents(file, text)?;
    match docs.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs
            .into_iter()
            .next()
            .map(|d| d.value)
            .unwrap_or(Value::Null)),
        _ => Err(Diagnostic::at(
            file,
            docs[1].line,
            "expected a single YAML document, found several",
        )),
    }
}

/// Parses a multi-document YAML file. Empty and comment-only documents are skipped.
pub(crate) fn parse_documents(file: &str, text: &str) -> Result<Vec<Doc>, Diagnostic> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    for (start, chunk) in split_documents(text) {
        match serde_saphyr::from_str_with_options::<Value>(&chunk, options()) {
            Ok(Value::Null) => {}
            Ok(value) => {
                let first = first_content_line(&chunk);
                docs.push(Doc {
                    line: start + first,
                    value,
                });
            }
            Err(e) => {
                let loc = e.location();
                let line = loc.map(|l| l.line() as u32).unwrap_or(1).max(1);
                let column = loc.map(|l| l.column() as u32);
                let message = clean_message(&e.without_snippet().to_string());
                return Err(Diagnostic::at(
                    file,
                    start + line - 1,
                    format!("YAML syntax error: {message}"),
                )
                .with_column(column));
            }
        }
    }
    Ok(docs)
}

/// Splits at `---` lines, keeping each marker with the document it opens so that a
/// `--- |` header still parses. Returns (1-based first line, text).
fn split_documents(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1u32;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let lineno = i as u32 + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---"
            || bare.starts_with("--- ")
            || bare.starts_with("---\t")
            || bare.starts_with("---#");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start {
            if !current.trim().is_empty() {
                out.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = lineno;
            current.push_str(line);
        } else if is_end {
            if !current.trim().is_empty() {
                out.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = lineno + 1;
        } else {
            if current.is_empty() {
                start = lineno;
            }
            current.push_str(line);
        }
    }
    if !current.trim().is_empty() {
        out.push((start, current));
    }
    out
}

/// Offset (0-based) of the first line that is not blank, a comment or a `---` marker.
fn first_content_line(chunk: &str) -> u32 {
    for (i, line) in chunk.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t == "---" {
            continue;
        }
        return i as u32;
    }
    0
}

fn clean_message(raw: &str) -> String {
    let mut msg = raw.trim().to_string();
    if let Some(idx) = msg.rfind(" at line ") {
        msg.truncate(idx);
    }
    if let Some(idx) = msg.find(", set DuplicateKeyPolicy") {
        msg.truncate(idx);
    }
    msg
}

/// Writes a value as a YAML document body (no `---`), keys sorted (the tests' form of
/// [`write_yaml`]).
#[cfg(test)]
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(&mut out, value);
    out
}

/// Writes a value as a YAML document body (no `---`), keys sorted, appending to `out`: the
/// manifest writer puts every document in one buffer.
pub(crate) fn write_yaml(out: &mut String, value: &Value) {
    match value {
        Value::Object(m) if !m.is_empty() => write_map(out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(out, a, 0),
        scalar => {
            write_scalar(out, scalar, 0);
            out.push('\n');
        }
    }
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn write_map(out: &mut String, map: &Map<String, Value>, level: usize) {
    // serde_json's map is a BTreeMap (the workspace does not enable `preserve_order`;
    // `map_iterates_in_key_order` pins that), so its order is already the sorted one.
    for (k, v) in map {
        indent(out, level);
        write_string(out, k, level, true);
        out.push(':');
        write_value_after_key(out, v, level);
    }
}

fn write_value_after_key(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, level + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, level);
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar, level + 2);
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => {
                // First entry on the dash line, the rest aligned under it.
                let mut first = true;
                for (k, v) in m {
                    if !first {
                        indent(out, level + 2);
                    }
                    first = false;
                    write_string(out, k, level + 2, true);
                    out.push(':');
                    write_value_after_key(out, v, level + 2);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                write_seq(out, a, level + 2);
            }
            scalar => {
                write_scalar(out, scalar, level + 2);
                out.push('\n');
            }
        }
    }
}

fn write_scalar(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => push_display(out, n),
        Value::String(s) => write_string(out, s, level, false),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

fn write_string(out: &mut String, s: &str, level: usize, is_key: bool) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if !is_key && literal_block_ok(s) {
        let chomp = if s.ends_with("\n\n") {
            "+"
        } else if s.ends_with('\n') {
            ""
        } else {
            "-"
        };
        out.push('|');
        out.push_str(chomp);
        let body = s.strip_suffix('\n').unwrap_or(s);
        for line in body.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                indent(out, level);
                out.push_str(line);
            }
        }
    } else {
        // A JSON string is a valid YAML double-quoted scalar.
        // (Serialising a `&str` cannot fail.)
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

/// Appends `v`'s `Display` form without a temporary `String`.
pub(crate) fn push_display(out: &mut String, v: &impl std::fmt::Display) {
    use std::fmt::Write;
    // Writing to a `String` cannot fail.
    let _ = write!(out, "{v}");
}

/// A multi-line string that a `|` block reproduces exactly.
fn literal_block_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n', '\t'])
        && s.chars()
            .all(|c| c == '\n' || (!c.is_control() && c != '\u{feff}'))
        && !s.contains(" \n")
        && !s.ends_with(' ')
        && s.split('\n').all(|l| !l.starts_with('\t'))
}

const RESERVED: &[&str] = &[
    "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
];

/// Conservative: true only for strings every YAML 1.1 and 1.2 reader keeps as that string.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        return false;
    }
    if RESERVED.iter().any(|r| s.eq_ignore_ascii_case(r)) {
        return false;
    }
    if s.ends_with([' ', ':']) || s.contains(": ") || s.contains(" #") {
        return false;
    }
    s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c, '-' | '.' | '_' | '/' | '@' | '+' | '=' | ':' | ' ')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn map_iterates_in_key_order() {
        // The emitters write maps in iteration order and rely on it being sorted: this
        // fails if a dependency ever turns on serde_json's `preserve_order`.
        let v = json!({"b": 1, "a": 2, "B": 3, "aa": 4, "\u{e9}": 5});
        let keys: Vec<&str> = v
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys, vec!["B", "a", "aa", "b", "\u{e9}"]);
    }

    #[test]
    fn documents_carry_their_start_lines() {
        let text = "# head\na: 1\n---\n# c\nb: 2\n---\n---\nc: 3\n";
        let docs = parse_documents("f.yaml", text).expect("parses");
        let lines: Vec<u32> = docs.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 5, 8]);
        assert_eq!(docs[1].value, json!({"b": 2}));
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let text = "a: 1\n---\nb: 1\nc: [\n";
        let err = parse_documents("x/f.yaml", text).expect_err("fails");
        assert_eq!(err.file, "x/f.yaml");
        assert_eq!(err.line, Some(4));
        assert!(err.message.starts_with("YAML syntax error"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse_documents("f.yaml", "a: 1\na: 2\n").expect_err("fails");
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("duplicate"), "{err}");
    }

    #[test]
    fn octal_modes_read_as_kubernetes_does_and_yes_stays_a_string() {
        let docs = parse_documents("f", "mode: 0644\nv: yes\n").expect("parses");
        assert_eq!(docs[0].value, json!({"mode": 420, "v": "yes"}));
    }

    #[test]
    fn emitter_round_trips_awkward_strings() {
        let v = json!({
            "b": ["1.0", "yes", "", " x", "a: b", "multi\nline\n", "keep\n\n", "nonl\nx",
                  "#c", "-x", "0644", "~", "tab\tin", "\ttab", "k8s.io/name", "x #y", "ok"],
            "a": {"nested": [{"k": 1, "m": {"z": null}}, [1, 2]], "empty": {}, "list": []},
            "app.kubernetes.io/name": "web",
            "f": 1.5, "t": true
        });
        let text = to_yaml(&v);
        let back = parse_single("f", &text).expect("re-parses");
        assert_eq!(back, v, "{text}");
    }

    #[test]
    fn emitter_sorts_keys() {
        let text = to_yaml(&json!({"b": 1, "a": {"d": 1, "c": 2}}));
        assert_eq!(text, "a:\n  c: 2\n  d: 1\nb: 1\n");
    }
}
