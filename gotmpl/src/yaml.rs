//! YAML as Helm's template functions see it. Reading (`fromYaml`, values files, and the
//! renderer's manifests) goes from the YAML event parser straight into JSON, as
//! `sigs.k8s.io/yaml` goes YAML to JSON; all three first try
//! [`crate::yaml_fast`], which takes the plain block YAML templates print and leaves the
//! rest here. Writing (`toYaml`) ports
//! the parts of go-yaml v2's emitter that `sigs.k8s.io/yaml.Marshal` exercises: block
//! mappings with go-yaml's "natural" key order, indentless sequences under keys, the scalar
//! style choice (plain, single-quoted, double-quoted, literal) and folding at 80 columns,
//! so `toYaml` output matches Helm's byte for byte.

use std::cmp::Ordering;

use crate::Value;
use crate::gofmt::{format_float_v, json_float};
use crate::value::{MAX_PRINT_DEPTH, Walk};

/// Reads YAML as Helm reads values files and `fromYaml` input (`sigs.k8s.io/yaml`: go-yaml
/// v2's YAML 1.1 resolution, then JSON): `enabled: yes` is `true`, a key `y` is `"true"`,
/// `0644` is 420. Only the first document is read; an empty one is `null`. Errors are
/// go-yaml's or JSON's words.
pub fn yaml_to_json(text: &str) -> Result<serde_json::Value, String> {
    parse_yaml(text)
}

/// Nodes one document may expand to (aliases included): a YAML "billion laughs" stops here.
const MAX_YAML_NODES: usize = 1_000_000;

/// `sigs.k8s.io/yaml.Unmarshal` of the first document into `interface{}`, as JSON: go-yaml
/// v2 resolves plain scalars by YAML 1.1 (`yes`/`on`/`y` are booleans, `0644` is octal,
/// `1_000` an int), keys become strings (`true`, `1`), then JSON carries the numbers.
/// An empty document is `null`.
pub(crate) fn parse_yaml(text: &str) -> Result<serde_json::Value, String> {
    match crate::yaml_fast::read(text, false) {
        Some(v) => Ok(v),
        None => parse_yaml_full(text),
    }
}

/// [`parse_yaml`] on the full YAML parser alone.
pub(crate) fn parse_yaml_full(text: &str) -> Result<serde_json::Value, String> {
    let mut loader = Loader::new(text, false);
    loader.first_document()
}

/// One Kubernetes manifest (a document of a chart's rendered output), read as
/// [`yaml_to_json`] reads YAML (go-yaml v2, as `kubectl` and the API server's YAML decoder
/// read it), but strict: a key given twice in a mapping, or a second document, is an
/// error. Errors carry no location: a caller that reports one parses again with a
/// locating parser.
pub fn manifest_to_json(text: &str) -> Result<serde_json::Value, String> {
    match crate::yaml_fast::read(text, true) {
        Some(v) => Ok(v),
        None => manifest_to_json_full(text),
    }
}

/// [`manifest_to_json`] on the full YAML parser alone.
pub(crate) fn manifest_to_json_full(text: &str) -> Result<serde_json::Value, String> {
    let mut loader = Loader::new(text, true);
    let value = loader.first_document()?;
    loop {
        match loader.next()? {
            None | Some(granit_parser::Event::StreamEnd) => return Ok(value),
            Some(granit_parser::Event::DocumentEnd) => {}
            Some(_) => return Err("yaml: more than one document".to_string()),
        }
    }
}

struct Loader<'a> {
    parser: granit_parser::Parser<'a, granit_parser::StrInput<'a>>,
    anchors: std::collections::HashMap<usize, serde_json::Value>,
    nodes: usize,
    /// A key given twice in one mapping is an error (else the last one wins, as in go-yaml).
    unique_keys: bool,
}

impl<'a> Loader<'a> {
    fn new(text: &'a str, unique_keys: bool) -> Loader<'a> {
        // Another crate in the build may turn on granit-parser's `comments` feature (cargo
        // unifies features), which would put comment events among the data events.
        let mut options = granit_parser::Options::default();
        options.set_emit_comments(false);
        Loader {
            parser: granit_parser::Parser::new_from_str_with_options(text, options),
            anchors: std::collections::HashMap::new(),
            nodes: 0,
            unique_keys,
        }
    }

    /// The first document's value; `null` when there is none or it is empty.
    fn first_document(&mut self) -> Result<serde_json::Value, String> {
        loop {
            match self.next()? {
                None => return Ok(serde_json::Value::Null),
                Some(granit_parser::Event::DocumentStart(..)) => break,
                Some(_) => {}
            }
        }
        match self.next()? {
            None | Some(granit_parser::Event::DocumentEnd) => Ok(serde_json::Value::Null),
            Some(ev) => self.node(ev, 0),
        }
    }

    fn next(&mut self) -> Result<Option<granit_parser::Event<'a>>, String> {
        match self.parser.next_event() {
            None => Ok(None),
            Some(Ok((ev, _))) => Ok(Some(ev)),
            Some(Err(e)) => Err(format!("yaml: {e}")),
        }
    }

    fn count(&mut self, n: usize) -> Result<(), String> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_YAML_NODES {
            return Err("yaml: document contains excessive aliasing".to_string());
        }
        Ok(())
    }

    fn node(
        &mut self,
        ev: granit_parser::Event<'a>,
        depth: usize,
    ) -> Result<serde_json::Value, String> {
        use granit_parser::Event;
        if depth > MAX_PRINT_DEPTH {
            return Err("yaml: exceeded max depth".to_string());
        }
        self.count(1)?;
        match ev {
            Event::Alias(id) => {
                let v = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or("yaml: unknown anchor")?;
                self.count(json_size(&v))?;
                Ok(v)
            }
            Event::Scalar(text, style, anchor, tag) => {
                let v = scalar(&text, style, tag.as_deref())?;
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                Ok(v)
            }
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                loop {
                    match self.next()?.ok_or("yaml: unexpected end of sequence")? {
                        Event::SequenceEnd => break,
                        ev => items.push(self.node(ev, depth + 1)?),
                    }
                }
                let v = serde_json::Value::Array(items);
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                Ok(v)
            }
            Event::MappingStart(_, anchor, _) => {
                let mut map = serde_json::Map::new();
                loop {
                    let key_ev = self.next()?.ok_or("yaml: unexpected end of mapping")?;
                    if let Event::MappingEnd = key_ev {
                        break;
                    }
                    let is_merge = matches!(&key_ev, Event::Scalar(t, granit_parser::ScalarStyle::Plain, _, None) if t == "<<");
                    let key = self.node(key_ev, depth + 1)?;
                    let value_ev = self.next()?.ok_or("yaml: unexpected end of mapping")?;
                    let value = self.node(value_ev, depth + 1)?;
                    if is_merge {
                        merge_into(&mut map, value)?;
                        continue;
                    }
                    let key = json_key(&key)?;
                    if self.unique_keys && map.contains_key(&key) {
                        return Err(format!("yaml: duplicate key {key:?}"));
                    }
                    map.insert(key, value);
                }
                let v = serde_json::Value::Object(map);
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                Ok(v)
            }
            other => Err(format!("yaml: unexpected event {other:?}")),
        }
    }
}

fn json_size(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(json_size).sum::<usize>(),
        serde_json::Value::Object(m) => 1 + m.values().map(json_size).sum::<usize>(),
        _ => 1,
    }
}

/// go-yaml v2's merge key: a map, or a list of maps where earlier ones win.
fn merge_into(
    map: &mut serde_json::Map<String, serde_json::Value>,
    value: serde_json::Value,
) -> Result<(), String> {
    match value {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                map.insert(k, v);
            }
            Ok(())
        }
        serde_json::Value::Array(items) => {
            for item in items.into_iter().rev() {
                match item {
                    serde_json::Value::Object(_) => merge_into(map, item)?,
                    _ => {
                        return Err(
                            "yaml: map merge requires map or sequence of maps as the value".into(),
                        );
                    }
                }
            }
            Ok(())
        }
        _ => Err("yaml: map merge requires map or sequence of maps as the value".into()),
    }
}

/// sigs.k8s.io/yaml's key conversion: strings stay, numbers and booleans are printed.
fn json_key(k: &serde_json::Value) -> Result<String, String> {
    Ok(match k {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => {
                // Go prints float keys with 32-bit precision.
                let f = n.as_f64().unwrap_or_default() as f32;
                format_float_v(f64::from(f))
                    .replace("e+0", "e+")
                    .replace("e-0", "e-")
            }
        },
        other => {
            return Err(format!(
                "unsupported map key of type: {}",
                json_kind_name(other)
            ));
        }
    })
}

fn json_kind_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "<nil>",
        serde_json::Value::Array(_) => "[]interface {}",
        serde_json::Value::Object(_) => "map[interface {}]interface {}",
        _ => "interface {}",
    }
}

/// A scalar as go-yaml v2 decodes it into `interface{}`, then as JSON.
fn scalar(
    text: &str,
    style: granit_parser::ScalarStyle,
    tag: Option<&granit_parser::Tag>,
) -> Result<serde_json::Value, String> {
    let tag = tag.map(|t| format!("{}{}", t.handle(), t.suffix()));
    let plain = matches!(style, granit_parser::ScalarStyle::Plain);
    // `!!name` or its long form; no allocation per question (this runs for every scalar).
    let core = |name: &str| {
        tag.as_deref().is_some_and(|t| {
            t.strip_prefix("tag:yaml.org,2002:")
                .or_else(|| t.strip_prefix("!!"))
                == Some(name)
        })
    };
    if core("str") || (!plain && tag.is_none()) || core("binary") || core("timestamp") {
        return Ok(serde_json::Value::String(text.to_string()));
    }
    if tag.is_some() && !["bool", "int", "float", "null"].iter().any(|n| core(n)) {
        // Unknown tags: go-yaml resolves the scalar as if untagged.
        if !plain {
            return Ok(serde_json::Value::String(text.to_string()));
        }
    }
    Ok(resolve_plain(text)?.unwrap_or_else(|| serde_json::Value::String(text.to_string())))
}

/// go-yaml v2's `resolve` for a plain scalar: `None` means a string.
pub(crate) fn resolve_plain(s: &str) -> Result<Option<serde_json::Value>, String> {
    use serde_json::Value as J;
    // The common answer first, cheaply: no special word is longer than 5 bytes, and only
    // digits, `.`, `+`, `-` and `~` start the rest; the others stay strings.
    match s.as_bytes().first() {
        Some(c) if c.is_ascii_alphabetic() && s.len() > 5 => return Ok(None),
        Some(c) if !c.is_ascii_alphanumeric() && !matches!(c, b'.' | b'+' | b'-' | b'~') => {
            return Ok(None);
        }
        _ => {}
    }
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Ok(Some(J::Bool(true)));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Ok(Some(J::Bool(false)));
        }
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Some(J::Null)),
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
        | "-.inf" | "-.Inf" | "-.INF" => {
            return Err(format!("json: unsupported value: {s}"));
        }
        _ => {}
    }
    if resolves_to_str(s) {
        return Ok(None);
    }
    let first = s.as_bytes()[0];
    if first == b'.' {
        return Ok(s.parse::<f64>().ok().map(json_number));
    }
    if is_timestamp(s) {
        // go-yaml v2 keeps timestamps as strings when decoding into interface{}.
        return Ok(None);
    }
    let plain = s.replace('_', "");
    if let Some(i) = go_int(&plain) {
        return Ok(Some(J::from(i)));
    }
    if let Ok(u) = plain.strip_prefix('+').unwrap_or(&plain).parse::<u64>() {
        return Ok(Some(J::from(u)));
    }
    if is_yaml_style_float(&plain) {
        return Ok(plain.parse::<f64>().ok().map(json_number));
    }
    let bin = plain
        .strip_prefix("0b")
        .map(|b| (false, b))
        .or_else(|| plain.strip_prefix("-0b").map(|b| (true, b)));
    if let Some((neg, b)) = bin
        && let Ok(v) = i64::from_str_radix(b, 2)
    {
        return Ok(Some(J::from(if neg { -v } else { v })));
    }
    Ok(None)
}

fn json_number(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// `strconv.ParseInt(s, 0, 64)`.
fn go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(h) = lower.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = lower.strip_prefix("0o") {
        (8, o)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let v = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if neg { -v } else { v }).ok()
}

/// `sigs.k8s.io/yaml.Marshal(v)`; `None` where Go fails (NaN or infinite floats).
pub(crate) fn to_yaml(v: &Value) -> Option<String> {
    emit(v, false)
}

/// Helm's `toYamlPretty`: go-yaml v3's encoder with a 2-space indent, straight from the Go
/// value (no JSON step): sequences are indented under their key and long lines not folded.
pub(crate) fn to_yaml_pretty(v: &Value) -> Option<String> {
    emit(v, true)
}

fn emit(v: &Value, pretty: bool) -> Option<String> {
    let mut e = Emitter {
        pretty,
        out: String::new(),
        column: 0,
        indent: -1,
        indents: Vec::new(),
        whitespace: true,
        indention: true,
    };
    e.node(v, Ctx::Root, &Walk::new(), 0)?;
    // Document end: one line break unless the scalar already ended the line.
    e.indent = -1;
    e.write_indent_at(0);
    Some(e.out)
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Root,
    SeqItem,
    MapKey,
    MapValue,
}

const BEST_WIDTH: usize = 80;
const BEST_INDENT: i32 = 2;

struct Emitter {
    /// go-yaml v3 as `toYamlPretty` uses it, rather than v2 behind sigs.k8s.io/yaml.
    pretty: bool,
    out: String,
    column: usize,
    indent: i32,
    indents: Vec<i32>,
    whitespace: bool,
    indention: bool,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

impl Emitter {
    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
    }

    fn write_str(&mut self, s: &str) {
        for c in s.chars() {
            self.put(c);
        }
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { BEST_INDENT } else { 0 };
        } else if !indentless {
            self.indent += BEST_INDENT;
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    fn write_indent(&mut self) {
        let indent = self.indent.max(0) as usize;
        self.write_indent_at(indent);
    }

    fn write_indent_at(&mut self, indent: usize) {
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
        self.indention = true;
    }

    fn write_indicator(&mut self, ind: &str, need_ws: bool, is_ws: bool, is_indention: bool) {
        if need_ws && !self.whitespace {
            self.put(' ');
        }
        self.write_str(ind);
        self.whitespace = is_ws;
        self.indention = self.indention && is_indention;
    }

    fn node(&mut self, v: &Value, ctx: Ctx, walk: &Walk, depth: usize) -> Option<()> {
        if !walk.enter(depth) {
            return None;
        }
        match v {
            Value::Map(m) => {
                let snap = m.snapshot();
                if snap.is_empty() {
                    self.write_indicator("{", true, true, false);
                    self.write_indicator("}", false, false, false);
                    return Some(());
                }
                let mut keys: Vec<&String> = snap.keys().collect();
                keys.sort_by(|a, b| natural_cmp(a, b));
                self.increase_indent(false, false);
                for k in keys {
                    self.write_indent();
                    self.scalar_str(k, Ctx::MapKey);
                    self.write_indicator(":", false, false, false);
                    self.node(&snap[k], Ctx::MapValue, walk, depth + 1)?;
                }
                self.pop_indent();
            }
            Value::List(l) => {
                if l.is_empty() {
                    self.write_indicator("[", true, true, false);
                    self.write_indicator("]", false, false, false);
                    return Some(());
                }
                let indentless = !self.pretty && ctx == Ctx::MapValue && !self.indention;
                self.increase_indent(false, indentless);
                for item in l.iter() {
                    self.write_indent();
                    self.write_indicator("-", true, false, true);
                    self.node(item, Ctx::SeqItem, walk, depth + 1)?;
                }
                self.pop_indent();
            }
            Value::Object(o) => self.node(&o.to_data(), ctx, walk, depth + 1)?,
            Value::Nil => self.plain_token("null"),
            Value::Bool(b) => self.plain_token(if *b { "true" } else { "false" }),
            Value::Int(i) => self.plain_token(&i.to_string()),
            Value::Float(f) if self.pretty => {
                // go-yaml v3 prints the float64 itself with %g.
                if !f.is_finite() {
                    return None;
                }
                self.plain_token(&format_float_v(*f));
            }
            Value::Float(f) => {
                // JSON first (Go fails on NaN/Inf), then go-yaml reads the JSON number back
                // as an int when it fits, else as a float it prints with %g.
                let text = json_float(*f)?;
                if text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok() {
                    self.plain_token(&text);
                } else {
                    self.plain_token(&format_float_v(*f));
                }
            }
            Value::String(s) => self.scalar_str(s, ctx),
        }
        Some(())
    }

    fn plain_token(&mut self, s: &str) {
        self.increase_indent(true, false);
        if !self.whitespace {
            self.put(' ');
        }
        self.write_str(s);
        self.whitespace = false;
        self.indention = false;
        self.pop_indent();
    }

    fn scalar_str(&mut self, s: &str, ctx: Ctx) {
        let simple_key = ctx == Ctx::MapKey;
        let a = analyze(s);
        let can_plain = resolves_to_str(s) && !is_base60_float(s);
        let mut style = if s.contains('\n') {
            Style::Literal
        } else if can_plain {
            Style::Plain
        } else {
            Style::Double
        };
        if simple_key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain {
            if !a.block_plain_allowed {
                style = Style::Single;
            }
            if s.is_empty() && simple_key {
                style = Style::Single;
            }
        }
        if style == Style::Single && !a.single_quoted_allowed {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block_allowed || simple_key) {
            style = Style::Double;
        }
        self.increase_indent(true, false);
        let allow_breaks = !simple_key && !self.pretty;
        match style {
            Style::Plain => self.write_plain(s, allow_breaks),
            Style::Single => self.write_single(s, allow_breaks),
            Style::Double => self.write_double(s, allow_breaks),
            Style::Literal => self.write_literal(s),
        }
        self.pop_indent();
    }

    fn write_plain(&mut self, s: &str, allow_breaks: bool) {
        if !self.whitespace {
            self.put(' ');
        }
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && chars.get(i + 1) != Some(&' ')
                {
                    self.write_indent();
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                self.indention = false;
                spaces = false;
            }
        }
        self.whitespace = false;
        self.indention = false;
    }

    fn write_single(&mut self, s: &str, allow_breaks: bool) {
        self.write_indicator("'", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        let mut breaks = false;
        let n = chars.len();
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i + 1 < n
                    && chars[i + 1] != ' '
                {
                    self.write_indent();
                } else {
                    self.put(c);
                }
                spaces = true;
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.put_break();
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.write_indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_double(&mut self, s: &str, allow_breaks: bool) {
        self.write_indicator("\"", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if !is_printable(c) || c == '\u{FEFF}' || is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                let esc = match c {
                    '\0' => "0".to_string(),
                    '\x07' => "a".into(),
                    '\x08' => "b".into(),
                    '\t' => "t".into(),
                    '\n' => "n".into(),
                    '\x0b' => "v".into(),
                    '\x0c' => "f".into(),
                    '\r' => "r".into(),
                    '\x1b' => "e".into(),
                    '"' => "\"".into(),
                    '\\' => "\\".into(),
                    '\u{85}' => "N".into(),
                    '\u{a0}' => "_".into(),
                    '\u{2028}' => "L".into(),
                    '\u{2029}' => "P".into(),
                    c if (c as u32) <= 0xFF => format!("x{:02X}", c as u32),
                    c if (c as u32) <= 0xFFFF => format!("u{:04X}", c as u32),
                    c => format!("U{:08X}", c as u32),
                };
                self.write_str(&esc);
                spaces = false;
            } else if c == ' ' {
                if allow_breaks && !spaces && self.column > BEST_WIDTH && i > 0 && i + 1 < n {
                    self.write_indent();
                    if chars[i + 1] == ' ' {
                        self.put('\\');
                    }
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                spaces = false;
            }
        }
        self.write_indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_literal(&mut self, s: &str) {
        self.write_indicator("|", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        if chars.first().is_some_and(|c| *c == ' ' || is_break(*c)) {
            self.write_indicator(&BEST_INDENT.to_string(), false, false, false);
        }
        let chomp = match chars.last() {
            None => Some('-'),
            Some(c) if !is_break(*c) => Some('-'),
            Some(_) if chars.len() == 1 => Some('+'),
            Some(_) if is_break(chars[chars.len() - 2]) => Some('+'),
            Some(_) => None,
        };
        if let Some(h) = chomp {
            self.write_indicator(&h.to_string(), false, false, false);
        }
        self.put_break();
        self.indention = true;
        self.whitespace = true;
        let mut breaks = true;
        for &c in &chars {
            if is_break(c) {
                self.put_break();
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// libyaml's `is_printable` (four-byte characters are not).
fn is_printable(c: char) -> bool {
    let u = c as u32;
    u == 0x0A
        || (0x20..=0x7E).contains(&u)
        || (0xA0..=0xD7FF).contains(&u)
        || ((0xE000..=0xFFFD).contains(&u) && u != 0xFEFF)
}

struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

/// libyaml's `yaml_emitter_analyze_scalar`, for block context.
fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let (mut line_breaks, mut special) = (false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_ws = true;
    let n = chars.len();
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_ws =
            i + 1 >= n || matches!(chars[i + 1], ' ' | '\t') || is_break(chars[i + 1]);
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => {
                    block_indicators = true;
                }
                '?' | ':' | '-' if followed_by_ws => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_ws => block_indicators = true,
                '#' if preceded_by_ws => block_indicators = true,
                _ => {}
            }
        }
        if !is_printable(c) {
            special = true;
        }
        if c == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i + 1 == n {
                trailing_space = true;
            }
            if previous_break {
                break_space = true;
            }
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            line_breaks = true;
            if i == 0 {
                leading_break = true;
            }
            if i + 1 == n {
                trailing_break = true;
            }
            if previous_space {
                space_break = true;
            }
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_ws = matches!(c, ' ' | '\t' | '\0') || is_break(c);
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || special {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
        a.block_allowed = false;
    }
    if line_breaks || block_indicators {
        a.block_plain_allowed = false;
    }
    a
}

/// The plain words go-yaml v2 reads as a bool, null, NaN or infinity, not a string.
const SPECIAL: [&str; 39] = [
    "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no", "No",
    "NO", "false", "False", "FALSE", "off", "Off", "OFF", "", "~", "null", "Null", "NULL", ".nan",
    ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
];

/// go-yaml v2's `resolve("", s)` says the plain scalar `s` reads back as a string. (Its
/// table also has `<<`, but `<` is not a resolvable first character, so `<<` stays a string.)
fn resolves_to_str(s: &str) -> bool {
    // Every special word is at most 5 bytes and starts with one of these: most strings
    // (keys, names) are ruled out without comparing them to the 39 words.
    if s.len() <= 5
        && s.bytes()
            .next()
            .is_none_or(|b| b"yYnNtTfFoO~.+-".contains(&b))
        && SPECIAL.contains(&s)
    {
        return false;
    }
    let Some(first) = s.chars().next() else {
        return false;
    };
    match first {
        '.' => s.parse::<f64>().is_err(),
        '+' | '-' | '0'..='9' => {
            if is_timestamp(s) {
                return false;
            }
            let plain = s.replace('_', "");
            if go_parse_int(&plain) {
                return false;
            }
            if is_yaml_style_float(&plain) {
                return false;
            }
            if let Some(b) = plain
                .strip_prefix("0b")
                .or_else(|| plain.strip_prefix("-0b"))
                && !b.is_empty()
                && b.chars().all(|c| c == '0' || c == '1')
            {
                return false;
            }
            true
        }
        _ => true,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` or `ParseUint` accepts `s`.
fn go_parse_int(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    if body.is_empty() {
        return false;
    }
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(h) = lower.strip_prefix("0x") {
        (16, h.to_string())
    } else if let Some(o) = lower.strip_prefix("0o") {
        (8, o.to_string())
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower)
    };
    !digits.is_empty()
        && u128::from_str_radix(&digits, radix).is_ok_and(|v| v <= u64::MAX as u128)
        && !digits.starts_with(['+', '-'])
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// go-yaml v2's `isBase60Float`: `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    i += 1;
    while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) && i - start < 2 {
            i += 1;
        }
        let g = &s[start..i];
        let ok = match g.len() {
            1 => true,
            2 => g.as_bytes()[0] <= b'5',
            _ => false,
        };
        if !ok {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// go-yaml v2's `parseTimestamp`: four digits, a dash, then one of its layouts.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let rest = &s[5..];
    // 2006-1-2, optionally followed by [Tt ]15:4:5(.fraction)(Z|±07:00) (zone only with T).
    let mut parts = rest.splitn(2, ['T', 't', ' ']);
    let date = parts.next().unwrap_or_default();
    let dp: Vec<&str> = date.split('-').collect();
    let num_ok = |x: &str, max: u32| {
        !x.is_empty()
            && x.len() <= 2
            && x.bytes().all(|c| c.is_ascii_digit())
            && x.parse::<u32>().is_ok_and(|v| (1..=max).contains(&v))
    };
    if dp.len() != 2 || !num_ok(dp[0], 12) || !num_ok(dp[1], 31) {
        return false;
    }
    let Some(time) = parts.next() else {
        return true;
    };
    let sep = rest.as_bytes()[date.len()];
    let (clock, zone) = if sep == b' ' {
        (time, "")
    } else {
        match time.find(['Z', '+', '-']) {
            Some(i) => (&time[..i], &time[i..]),
            None => return false,
        }
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let t: Vec<&str> = hms.split(':').collect();
    let tn = |x: &str, max: u32| {
        !x.is_empty()
            && x.len() <= 2
            && x.bytes().all(|c| c.is_ascii_digit())
            && x.parse::<u32>().is_ok_and(|v| v <= max)
    };
    if t.len() != 3 || !tn(t[0], 23) || !tn(t[1], 59) || !tn(t[2], 59) {
        return false;
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    if sep == b' ' {
        return true;
    }
    zone == "Z" || (zone.len() == 6 && zone.as_bytes()[3] == b':')
}

/// go-yaml v2's key order: numbers in keys compare by value, letters before other runes.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            i += 1;
            continue;
        }
        let al = ar[i].is_alphabetic();
        let bl = br[i].is_alphabetic();
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            return if bl {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let (mut an, mut bn): (i64, i64) = (0, 0);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an.wrapping_mul(10).wrapping_add(ar[ai] as i64 - '0' as i64);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn.wrapping_mul(10).wrapping_add(br[bi] as i64 - '0' as i64);
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_word_passes_the_quick_guard_and_stays_special() {
        for w in SPECIAL {
            assert!(!resolves_to_str(w), "{w:?} must not read as a string");
        }
        for w in ["name", "yesno", "Nope", "trueish", "offset", "-", "."] {
            assert!(resolves_to_str(w), "{w:?} is a plain string");
        }
    }

    #[test]
    fn manifests_read_as_kubernetes_reads_them_and_strictly() {
        assert_eq!(
            manifest_to_json("a: yes\nmode: 0644\n'on': x\nlist: [1, n]\n").ok(),
            Some(serde_json::json!({"a": true, "mode": 420, "on": "x", "list": [1, false]}))
        );
        let dup = manifest_to_json("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert!(dup.contains("duplicate key \"a\""), "{dup}");
        assert!(manifest_to_json("a: 1\n---\nb: 2\n").is_err());
        assert_eq!(
            manifest_to_json("a: 1\n...\n").ok(),
            Some(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            manifest_to_json("# only a comment\n").ok(),
            Some(serde_json::Value::Null)
        );
    }

    fn y(j: serde_json::Value) -> String {
        to_yaml(&Value::from_json(&j)).unwrap_or_default()
    }

    #[test]
    fn comments_anywhere_are_not_data() {
        let text = "# top\na: 1 # trailing\n# above b\nb:\n  # inside\n  - x # item\n  # after\nc: {d: 2} # flow\n";
        assert_eq!(
            parse_yaml(text).expect("parses"),
            serde_json::json!({"a": 1, "b": ["x"], "c": {"d": 2}})
        );
    }

    #[test]
    fn maps_and_lists_emit_as_go_yaml_does() {
        assert_eq!(
            y(serde_json::json!({"b": [1, "x"], "a": {"c": true, "d": null}, "e": [], "f": {}})),
            "a:\n  c: true\n  d: null\nb:\n- 1\n- x\ne: []\nf: {}\n"
        );
        assert_eq!(
            y(serde_json::json!([{"a": 1, "b": 2}, [1, 2]])),
            "- a: 1\n  b: 2\n- - 1\n  - 2\n"
        );
    }

    #[test]
    fn strings_are_quoted_only_where_yaml_needs_it() {
        assert_eq!(
            y(
                serde_json::json!({"a": "true", "b": "1.5", "c": "", "d": "x: y", "e": "- x", "f": "hello world", "g": "a\nb", "h": "2020-01-01", "i": "yes", "j": "0x1F"})
            ),
            "a: \"true\"\nb: \"1.5\"\nc: \"\"\nd: 'x: y'\ne: '- x'\nf: hello world\ng: |-\n  a\n  b\nh: \"2020-01-01\"\ni: \"yes\"\nj: \"0x1F\"\n"
        );
    }

    #[test]
    fn yaml_reads_as_go_yaml_v2_reads_it() {
        let v = parse_yaml(
            "y: yes\nq: \"yes\"\noff: x\nmode: 0644\nbig: 1_000\nhex: 0x1F\nf: 1.5\nt: 2021-01-01\n1: one\nnn: ~\ns: 'on'\nl: [a, NO]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v,
            serde_json::json!({"true": true, "q": "yes", "false": "x", "mode": 420, "big": 1000, "hex": 31,
                "f": 1.5, "t": "2021-01-01", "1": "one", "nn": null, "s": "on", "l": ["a", false]})
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys_expand() {
        let v = parse_yaml("base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  b: 3\nl: [*b]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v,
            serde_json::json!({"base": {"a": 1, "b": 2}, "x": {"a": 1, "b": 3}, "l": [{"a": 1, "b": 2}]})
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                [prev.as_str(); 10].join(", ")
            ));
        }
        assert_eq!(
            parse_yaml(&text).err().as_deref(),
            Some("yaml: document contains excessive aliasing")
        );
        assert_eq!(parse_yaml("").ok(), Some(serde_json::Value::Null));
        assert!(parse_yaml("a: [").is_err());
    }

    #[test]
    fn keys_sort_naturally() {
        let mut k = vec!["a10", "a9", "B", "a", "_x", "1"];
        k.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(k, vec!["_x", "1", "B", "a", "a9", "a10"]);
    }
}
