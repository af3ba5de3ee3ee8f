//! A fast reader for the plain block YAML that chart templates print: block mappings and
//! sequences, plain and quoted scalars on one line, one-line flow collections (`[...]`,
//! `{...}`, JSON from `toJson`), and comments. It answers `None` for anything else (tabs,
//! non-ASCII text, anchors, tags, block scalars, multi-line scalars or flows, merge keys,
//! keys that are not plain strings, document markers, duplicate keys where they are
//! errors, and every syntax error), and the caller then reads the text with the full YAML
//! parser, which also words the errors. So it never decides what a document means where
//! the two could differ: it only takes the shapes whose meaning is unambiguous, with the
//! same go-yaml v2 scalar resolution ([`super::yaml`]'s `resolve_plain`).
//!
//! Why: the YAML tokenizer was a third of the time of rendering a chart (every rendered
//! document and every `fromYaml` went through it), and most of its work is general YAML
//! machinery that this output never needs.

use serde_json::{Map, Value as J};

use crate::yaml::resolve_plain;

/// Deepest nesting taken here; deeper documents go to the full parser, which bounds them.
const MAX_DEPTH: usize = 64;

/// The first and only document of `text` as JSON, or `None` when the full parser must
/// decide. `unique_keys`: a key given twice is an error (so `None` here), else the last
/// one wins.
pub(crate) fn read(text: &str, unique_keys: bool) -> Option<J> {
    if !text
        .bytes()
        .all(|c| c == b'\n' || (b' '..=b'~').contains(&c))
    {
        return None;
    }
    let mut lines = Vec::new();
    for line in text.split('\n') {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if indent == 0 && (body.starts_with("---") || body.starts_with("...")) {
            return None;
        }
        lines.push(Line {
            indent,
            text: body.trim_end_matches(' '),
        });
    }
    let mut p = Reader {
        lines,
        i: 0,
        unique_keys,
        depth: 0,
    };
    let Some(first) = p.lines.first() else {
        return Some(J::Null);
    };
    let (indent, text) = (first.indent, first.text);
    let value = if is_seq_item(text) {
        p.block_seq(indent)?
    } else if text.starts_with(['[', '{']) {
        p.i += 1;
        p.inline_value(text)?
    } else {
        match key_split(text) {
            KeyLine::Key(..) => p.block_map(indent, text)?,
            _ => return None,
        }
    };
    (p.i == p.lines.len()).then_some(value)
}

/// A line that is not blank or a comment: its indentation and its text after it.
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    /// The next line not yet consumed.
    i: usize,
    unique_keys: bool,
    depth: usize,
}

fn is_seq_item(t: &str) -> bool {
    t == "-" || t.starts_with("- ")
}

/// What the start of a line is, for a block mapping.
enum KeyLine<'a> {
    /// `key:` and what follows the colon.
    Key(String, &'a str),
    /// A value, not a key.
    NotKey,
    /// Something this reader leaves to the full parser.
    Bail,
}

fn key_split(t: &str) -> KeyLine<'_> {
    match t.as_bytes().first() {
        Some(b'"' | b'\'') => {
            let Some((key, after)) = quoted(t) else {
                return KeyLine::Bail;
            };
            let rest = after.trim_start_matches(' ');
            match rest.strip_prefix(':') {
                Some(r) if r.is_empty() || r.starts_with(' ') => KeyLine::Key(key, r),
                Some(_) => KeyLine::Bail,
                None if rest.is_empty() || (rest.starts_with('#') && rest.len() < after.len()) => {
                    KeyLine::NotKey
                }
                None => KeyLine::Bail,
            }
        }
        Some(b'[' | b'{') => KeyLine::NotKey,
        Some(_) => {
            let b = t.as_bytes();
            for (i, &c) in b.iter().enumerate() {
                if c == b'#' && i > 0 && b[i - 1] == b' ' {
                    return KeyLine::NotKey;
                }
                if c == b':' && (i + 1 == b.len() || b[i + 1] == b' ') {
                    let key = t[..i].trim_end_matches(' ');
                    if !plain_key_ok(key) {
                        return KeyLine::Bail;
                    }
                    return KeyLine::Key(key.to_string(), &t[i + 1..]);
                }
            }
            KeyLine::NotKey
        }
        None => KeyLine::Bail,
    }
}

/// A plain key that reads back as itself, a string: Kubernetes' field names, label and
/// annotation keys.
fn plain_key_ok(key: &str) -> bool {
    let b = key.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || matches!(first, b'_' | b'.' | b'/' | b'$'))
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-' | b'$'))
        && matches!(resolve_plain(key), Ok(None))
}

/// A quoted scalar at the start of `t` (which starts with `"` or `'`), closed on this line:
/// its value and the text after the closing quote.
fn quoted(t: &str) -> Option<(String, &str)> {
    let b = t.as_bytes();
    let mut out = String::new();
    let mut i = 1;
    if b[0] == b'\'' {
        loop {
            match b.get(i)? {
                b'\'' if b.get(i + 1) == Some(&b'\'') => {
                    out.push('\'');
                    i += 2;
                }
                b'\'' => return Some((out, &t[i + 1..])),
                &c => {
                    out.push(char::from(c));
                    i += 1;
                }
            }
        }
    }
    loop {
        match *b.get(i)? {
            b'"' => return Some((out, &t[i + 1..])),
            b'\\' => {
                let e = *b.get(i + 1)?;
                i += 2;
                let c = match e {
                    b'\\' => '\\',
                    b'"' => '"',
                    b'/' => '/',
                    b'n' => '\n',
                    b't' => '\t',
                    b'r' => '\r',
                    b'b' => '\x08',
                    b'f' => '\x0c',
                    b'0' => '\0',
                    b'a' => '\x07',
                    b'v' => '\x0b',
                    b'e' => '\x1b',
                    b'x' | b'u' => {
                        let n = if e == b'x' { 2 } else { 4 };
                        let hex = t.get(i..i + n)?;
                        if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                            return None;
                        }
                        i += n;
                        // Surrogates (pairs or not) are the full parser's to judge.
                        char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
                    }
                    _ => return None,
                };
                out.push(c);
            }
            c => {
                out.push(char::from(c));
                i += 1;
            }
        }
    }
}

/// Only blanks or a comment (after a blank) are left on the line.
fn line_done(after: &str) -> bool {
    let rest = after.trim_start_matches(' ');
    rest.is_empty() || (rest.starts_with('#') && rest.len() < after.len())
}

/// A plain scalar as go-yaml v2 reads it; `None` where resolution fails (`.inf`).
fn plain(s: &str) -> Option<J> {
    match resolve_plain(s) {
        Ok(Some(v)) => Some(v),
        Ok(None) => Some(J::String(s.to_string())),
        Err(_) => None,
    }
}

/// Whether a plain scalar may start with `c` (followed by `next`): not an indicator, or
/// `-` before a non-blank (`-Xmx1g`).
fn plain_start(c: u8, next: Option<u8>) -> bool {
    match c {
        b'-' => next.is_some_and(|n| n != b' ' && n != b',' && n != b']' && n != b'}'),
        b'&' | b'*' | b'!' | b'|' | b'>' | b'\'' | b'"' | b'%' | b'@' | b'`' | b'#' | b','
        | b'[' | b']' | b'{' | b'}' | b'?' | b':' => false,
        _ => true,
    }
}

impl Reader<'_> {
    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn insert(&self, map: &mut Map<String, J>, key: String, value: J) -> Option<()> {
        if map.insert(key, value).is_some() && self.unique_keys {
            return None;
        }
        Some(())
    }

    /// A block mapping whose keys stand at column `n`; its first entry is `first` (the
    /// current line's text, or what follows `- ` for a mapping inside a sequence item).
    fn block_map(&mut self, n: usize, first: &str) -> Option<J> {
        self.enter()?;
        let mut map = Map::new();
        let mut text = first;
        loop {
            let KeyLine::Key(key, rest) = key_split(text) else {
                return None;
            };
            self.i += 1;
            let value = if line_done(rest) {
                self.block_value(n, true)?
            } else {
                let v = self.inline_value(rest.trim_start_matches(' '))?;
                self.ends_block(n)?;
                v
            };
            self.insert(&mut map, key, value)?;
            match self.lines.get(self.i) {
                Some(l) if l.indent == n && !is_seq_item(l.text) => text = l.text,
                Some(l) if l.indent >= n => return None,
                _ => break,
            }
        }
        self.depth -= 1;
        Some(J::Object(map))
    }

    /// A block sequence whose `-` stand at column `n` (the current line is its first item).
    fn block_seq(&mut self, n: usize) -> Option<J> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            let text = self.lines[self.i].text;
            let after = &text[1..];
            let r = after.trim_start_matches(' ');
            if line_done(after) {
                self.i += 1;
                items.push(self.block_value(n, false)?);
            } else if r.starts_with('-') && is_seq_item(r) {
                return None;
            } else {
                match key_split(r) {
                    KeyLine::Key(..) => {
                        let col = n + (text.len() - r.len());
                        items.push(self.block_map(col, r)?);
                    }
                    KeyLine::NotKey => {
                        self.i += 1;
                        items.push(self.inline_value(r)?);
                        self.ends_block(n)?;
                    }
                    KeyLine::Bail => return None,
                }
            }
            match self.lines.get(self.i) {
                Some(l) if l.indent == n && is_seq_item(l.text) => {}
                Some(l) if l.indent > n => return None,
                _ => break,
            }
        }
        self.depth -= 1;
        Some(J::Array(items))
    }

    /// After a value that ended its line, under a parent at column `n`: a deeper line
    /// would continue a multi-line scalar (or be an error).
    fn ends_block(&self, n: usize) -> Option<()> {
        match self.lines.get(self.i) {
            Some(l) if l.indent > n => None,
            _ => Some(()),
        }
    }

    /// The value of `key:` or `-` with nothing after it on the line, under a parent at
    /// column `n`: a deeper block, a sequence at the same column for a key's value, or null.
    fn block_value(&mut self, n: usize, same_column_seq: bool) -> Option<J> {
        let Some(l) = self.lines.get(self.i) else {
            return Some(J::Null);
        };
        let (indent, text) = (l.indent, l.text);
        if indent < n || (indent == n && !(same_column_seq && is_seq_item(text))) {
            return Some(J::Null);
        }
        if is_seq_item(text) {
            return self.block_seq(indent);
        }
        match key_split(text) {
            KeyLine::Key(..) => self.block_map(indent, text),
            _ => None,
        }
    }

    /// A scalar or flow collection that must end on its line (`t` starts at the value).
    fn inline_value(&mut self, t: &str) -> Option<J> {
        let b = t.as_bytes();
        let (value, after) = match b.first()? {
            b'"' | b'\'' => {
                let (s, after) = quoted(t)?;
                (J::String(s), after)
            }
            b'[' | b'{' => {
                let mut pos = 0;
                let v = self.flow(t, &mut pos)?;
                (v, &t[pos..])
            }
            &c if plain_start(c, b.get(1).copied()) => {
                let end = t.find(" #").unwrap_or(t.len());
                let s = t[..end].trim_end_matches(' ');
                if s.contains(": ") || s.ends_with(':') || s.contains(['[', ']', '{', '}']) {
                    return None;
                }
                return plain(s);
            }
            _ => return None,
        };
        line_done(after).then_some(value)
    }

    /// A flow node at `t[*pos..]` on one line.
    fn flow(&mut self, t: &str, pos: &mut usize) -> Option<J> {
        let b = t.as_bytes();
        skip_blanks(b, pos);
        match *b.get(*pos)? {
            b'[' => {
                self.enter()?;
                *pos += 1;
                let mut items = Vec::new();
                skip_blanks(b, pos);
                if b.get(*pos) == Some(&b']') {
                    *pos += 1;
                } else {
                    loop {
                        items.push(self.flow(t, pos)?);
                        skip_blanks(b, pos);
                        match b.get(*pos)? {
                            b',' => *pos += 1,
                            b']' => {
                                *pos += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                self.depth -= 1;
                Some(J::Array(items))
            }
            b'{' => {
                self.enter()?;
                *pos += 1;
                let mut map = Map::new();
                skip_blanks(b, pos);
                if b.get(*pos) == Some(&b'}') {
                    *pos += 1;
                } else {
                    loop {
                        skip_blanks(b, pos);
                        let key = match *b.get(*pos)? {
                            b'"' | b'\'' => {
                                let (k, after) = quoted(&t[*pos..])?;
                                *pos = t.len() - after.len();
                                skip_blanks(b, pos);
                                if b.get(*pos) != Some(&b':') {
                                    return None;
                                }
                                *pos += 1;
                                k
                            }
                            _ => {
                                let start = *pos;
                                while b.get(*pos).is_some_and(|&c| {
                                    c.is_ascii_alphanumeric()
                                        || matches!(c, b'_' | b'.' | b'/' | b'-' | b'$')
                                }) {
                                    *pos += 1;
                                }
                                let key = &t[start..*pos];
                                if !plain_key_ok(key)
                                    || b.get(*pos) != Some(&b':')
                                    || b.get(*pos + 1) != Some(&b' ')
                                {
                                    return None;
                                }
                                *pos += 1;
                                key.to_string()
                            }
                        };
                        skip_blanks(b, pos);
                        if matches!(b.get(*pos), None | Some(b',' | b'}')) {
                            return None;
                        }
                        let value = self.flow(t, pos)?;
                        self.insert(&mut map, key, value)?;
                        skip_blanks(b, pos);
                        match b.get(*pos)? {
                            b',' => *pos += 1,
                            b'}' => {
                                *pos += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                self.depth -= 1;
                Some(J::Object(map))
            }
            b'"' | b'\'' => {
                let (s, after) = quoted(&t[*pos..])?;
                *pos = t.len() - after.len();
                Some(J::String(s))
            }
            c if plain_start(c, b.get(*pos + 1).copied()) => {
                let start = *pos;
                while let Some(&c) = b.get(*pos) {
                    match c {
                        b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'"' | b'\'' => break,
                        b':' => return None,
                        _ => *pos += 1,
                    }
                }
                if b.get(*pos) == Some(&b'#') {
                    return None;
                }
                plain(t[start..*pos].trim_end_matches(' '))
            }
            _ => None,
        }
    }
}

fn skip_blanks(b: &[u8], pos: &mut usize) {
    while b.get(*pos) == Some(&b' ') {
        *pos += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The full parser's reading of `text`, as the callers use it.
    fn full(text: &str, unique: bool) -> Result<J, String> {
        if unique {
            crate::yaml::manifest_to_json_full(text)
        } else {
            crate::yaml::parse_yaml_full(text)
        }
    }

    /// Whatever the fast reader takes, it reads as the full parser does.
    fn agrees(text: &str) -> bool {
        let mut took = false;
        for unique in [true, false] {
            if let Some(v) = read(text, unique) {
                took = true;
                assert_eq!(
                    Ok(v),
                    full(text, unique),
                    "{text:?} (unique keys: {unique})"
                );
            }
        }
        took
    }

    #[test]
    fn takes_what_templates_print_and_reads_it_as_the_full_parser() {
        let taken = [
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bench-app7\n  labels:\n    app.kubernetes.io/name: app7\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {\"app.kubernetes.io/instance\":\"bench\",\"n\":\"x\"}\n  template:\n    spec:\n      containers:\n        - name: app\n          image: \"registry.example.com/app7:2.1\"\n          ports: [{containerPort: 8007}]\n          env:\n            - {name: ENV, value: \"bench\"}\n",
            "data:\n  config.json: \"{\\\"port\\\":8000,\\\"replicas\\\":1}\"\n",
            "a:\n- 1\n- x # c\n- 'it''s'\n-\nb: ~\nc: yes\nd: 0644\ne: 1e3\nf: -Xmx1g\ng: http://x:80/y\n",
            "# comment\nlist:\n  -   k: v\n      k2: v2\n  - k: w\nempty: {}\nnone: []\nnil: null\n",
            "- a\n- b: 1\n  c: [1, \"2\", '3', true, null]\n",
            "{\"a\":{\"b\":[1,2.5,\"x\"]},\"c\":\"\\u00e9\\n\"}",
            "key:   \nother: x\n",
            "k: \"a: b\"   # tail\n\"quoted key\": 1\n'single': 2\n",
        ];
        for text in taken {
            assert!(agrees(text), "not taken: {text:?}");
        }
    }

    #[test]
    fn leaves_the_rest_to_the_full_parser() {
        let left = [
            "a: |\n  x\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a:\tb\n",
            "a: b\n  c\n",
            "a: b\na: c\n",
            "<<: {a: 1}\n",
            "a: \"x\n  y\"\n",
            "---\na: 1\n",
            "a: b: c\n",
            "a: [1,\n  2]\n",
            "y: 1\n",
            "1: x\n",
            "a: .inf\n",
            "a: é\n",
            "? a\n: b\n",
            "a:\n  b\n",
            "a: 1\n b: 2\n",
            "- - a\n",
            "a: {b: 1,}\n",
        ];
        for text in left {
            assert_eq!(read(text, true), None, "{text:?}");
        }
        // Duplicate keys: the last wins where they are allowed.
        assert_eq!(
            read("a: 1\na: 2\n", false),
            Some(serde_json::json!({"a": 2}))
        );
    }

    /// Lines that exercise the edges of what the reader takes.
    const PIECES: &[&str] = &[
        "a: 1",
        "b:",
        "- x",
        "-",
        "- k: v",
        "c: \"q\\\"s\"",
        "d: 'x''y'",
        "e: [1, a, \"b\"]",
        "f: {g: h, \"i\":\"j\"}",
        "# note",
        "",
        "h: x # c",
        "i: a:b",
        "j: -1",
        "k: 0x1F",
        "l: on",
        "m: \"\\x41\"",
        "n: [[1], {a: []}]",
        "- [1, 2]",
        "- {a: b}",
        "o: 1_000",
        "p: 2001-12-14",
        "q: a # b: c",
        "- a: 1",
        "r: ~",
        "s: 'a: b'",
        "t: [a b, c]",
        "u: {a: 1, a: 2}",
        "v: -",
        "w: - a",
        "x: :y",
        "z: y ",
        "\"k\": v",
        "'k' : v",
        "aa: b:",
        "bb: [a]b",
        "- - x",
        "cc: {a: [1, {b: c}]}",
        "dd: \"\\u0041\\t\"",
        "ee: 12:30",
        "ff: .5",
        "gg: +1",
        "hh: 1e",
        "ii: 0b101",
        "jj: a,b",
        "kk: [a, ]",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn never_disagrees_with_the_full_parser(
            lines in proptest::collection::vec((0usize..6, 0usize..PIECES.len()), 1..10)
        ) {
            let text: String = lines
                .iter()
                .map(|(indent, i)| format!("{}{}\n", " ".repeat(*indent), PIECES[*i]))
                .collect();
            agrees(&text);
        }
    }
}
