//! Sprig's string functions: trimming, case, padding and indentation, quoting, splitting and
//! joining, regular expressions (RE2 syntax, through the `regex` crate, which shares it),
//! and random strings. Go slices strings by bytes; so do `trunc` and `substr` here.

use super::{CallError, Ctx, FnResult, Registry, Ty, int_arg, str_arg, strval};
use crate::Value;
use crate::gofmt::quote as go_quote;

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("trim", &[Str], None, |_, a| {
        s(str_arg(&a[0]).trim_matches(is_space))
    });
    r.add("trimAll", &[Str, Str], None, trim_all);
    r.add("trimall", &[Str, Str], None, trim_all);
    r.add("trimPrefix", &[Str, Str], None, |_, a| {
        let (p, v) = (str_arg(&a[0]), str_arg(&a[1]));
        s(v.strip_prefix(p).unwrap_or(v))
    });
    r.add("trimSuffix", &[Str, Str], None, |_, a| {
        let (p, v) = (str_arg(&a[0]), str_arg(&a[1]));
        s(v.strip_suffix(p).unwrap_or(v))
    });
    r.add("upper", &[Str], None, |_, a| {
        s(str_arg(&a[0]).to_uppercase())
    });
    r.add("lower", &[Str], None, |_, a| {
        s(str_arg(&a[0]).to_lowercase())
    });
    r.add("title", &[Str], None, |_, a| s(title(str_arg(&a[0]))));
    // goutils' Uncapitalize: the first letter of every whitespace-separated word.
    r.add("untitle", &[Str], None, |_, a| {
        let mut out = String::new();
        let mut gap = true;
        for c in str_arg(&a[0]).chars() {
            if c.is_whitespace() {
                gap = true;
                out.push(c);
            } else if gap {
                out.extend(c.to_lowercase());
                gap = false;
            } else {
                out.push(c);
            }
        }
        s(out)
    });
    r.add("swapcase", &[Str], None, |_, a| {
        s(str_arg(&a[0])
            .chars()
            .map(|c| {
                if c.is_uppercase() {
                    c.to_lowercase().collect::<String>()
                } else if c.is_lowercase() {
                    c.to_uppercase().collect()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>())
    });
    r.add("substr", &[Int, Int, Str], None, substr);
    r.add("repeat", &[Int, Str], None, |c, a| {
        let n = int_arg(&a[0]);
        let v = str_arg(&a[1]);
        if n < 0 {
            return Err(CallError::Msg("strings: negative Repeat count".into()));
        }
        c.alloc((n as usize).saturating_mul(v.len()))?;
        s(v.repeat(n as usize))
    });
    r.add("trunc", &[Int, Str], None, |_, a| {
        let n = int_arg(&a[0]);
        let v = str_arg(&a[1]);
        let len = v.len() as i64;
        if n < 0 && len + n > 0 {
            return s(byte_slice(v, (len + n) as usize, v.len()));
        }
        if n >= 0 && len > n {
            return s(byte_slice(v, 0, n as usize));
        }
        s(v)
    });
    r.add("abbrev", &[Int, Str], None, |_, a| {
        let w = int_arg(&a[0]);
        let v = str_arg(&a[1]);
        if w < 4 || v.len() as i64 <= w {
            return s(v);
        }
        s(format!("{}...", byte_slice(v, 0, (w - 3) as usize)))
    });
    r.add("abbrevboth", &[Int, Int, Str], None, abbrevboth);
    r.add("initials", &[Str], None, |_, a| {
        let mut out = String::new();
        let mut gap = true;
        for c in str_arg(&a[0]).chars() {
            if c.is_whitespace() {
                gap = true;
            } else if gap {
                out.push(c);
                gap = false;
            }
        }
        s(out)
    });
    r.add("nospace", &[Str], None, |_, a| {
        s(str_arg(&a[0])
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>())
    });
    r.add("contains", &[Str, Str], None, |_, a| {
        Ok(Value::Bool(str_arg(&a[1]).contains(str_arg(&a[0]))))
    });
    r.add("hasPrefix", &[Str, Str], None, |_, a| {
        Ok(Value::Bool(str_arg(&a[1]).starts_with(str_arg(&a[0]))))
    });
    r.add("hasSuffix", &[Str, Str], None, |_, a| {
        Ok(Value::Bool(str_arg(&a[1]).ends_with(str_arg(&a[0]))))
    });
    r.add("quote", &[], Some(Any), |c, a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !v.is_nil())
            .map(|v| go_quote(&strval(v)))
            .collect();
        sized(c, parts.join(" "))
    });
    r.add("squote", &[], Some(Any), |c, a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !v.is_nil())
            .map(|v| format!("'{v}'"))
            .collect();
        sized(c, parts.join(" "))
    });
    r.add("cat", &[], Some(Any), |c, a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !v.is_nil())
            .map(|v| v.to_string())
            .collect();
        sized(c, parts.join(" "))
    });
    r.add("indent", &[Int, Str], None, |c, a| {
        let out = indent(c, int_arg(&a[0]), str_arg(&a[1]))?;
        s(out)
    });
    r.add("nindent", &[Int, Str], None, |c, a| {
        let out = indent(c, int_arg(&a[0]), str_arg(&a[1]))?;
        s(format!("\n{out}"))
    });
    r.add("replace", &[Str, Str, Str], None, |c, a| {
        let (old, new, src) = (str_arg(&a[0]), str_arg(&a[1]), str_arg(&a[2]));
        let out = if old.is_empty() {
            // Go inserts `new` around every rune when `old` is empty.
            let n = src.chars().count() + 1;
            c.alloc(src.len() + n.saturating_mul(new.len()))?;
            let mut out = String::from(new);
            for ch in src.chars() {
                out.push(ch);
                out.push_str(new);
            }
            out
        } else {
            let n = src.matches(old).count();
            c.alloc(src.len() + n.saturating_mul(new.len()))?;
            src.replace(old, new)
        };
        s(out)
    });
    r.add("plural", &[Str, Str, Int], None, |_, a| {
        s(if int_arg(&a[2]) == 1 {
            str_arg(&a[0])
        } else {
            str_arg(&a[1])
        })
    });
    r.add("snakecase", &[Str], None, |_, a| {
        s(camel_to_lower(str_arg(&a[0]), '_'))
    });
    r.add("kebabcase", &[Str], None, |_, a| {
        s(camel_to_lower(str_arg(&a[0]), '-'))
    });
    r.add("camelcase", &[Str], None, |_, a| {
        s(pascal_case(str_arg(&a[0])))
    });
    r.add("wrap", &[Int, Str], None, |_, a| {
        s(wrap(str_arg(&a[1]), int_arg(&a[0]), "\n", false))
    });
    r.add("wrapWith", &[Int, Str, Str], None, |_, a| {
        s(wrap(str_arg(&a[2]), int_arg(&a[0]), str_arg(&a[1]), true))
    });
    r.add("toString", &[Any], None, |_, a| s(strval(&a[0])));
    r.add("split", &[Str, Str], None, |_, a| {
        Ok(parts_map(go_split(str_arg(&a[1]), str_arg(&a[0]), -1)))
    });
    r.add("splitn", &[Str, Int, Str], None, |_, a| {
        Ok(parts_map(go_split(
            str_arg(&a[2]),
            str_arg(&a[0]),
            int_arg(&a[1]),
        )))
    });
    r.add("splitList", &[Str, Str], None, |_, a| {
        Ok(str_list(go_split(str_arg(&a[1]), str_arg(&a[0]), -1)))
    });
    r.add("regexMatch", &[Str, Str], None, |c, a| {
        Ok(Value::Bool(
            regex(c, &a[0])
                .map(|r| r.is_match(str_arg(&a[1])))
                .unwrap_or(false),
        ))
    });
    r.add("mustRegexMatch", &[Str, Str], None, |c, a| {
        Ok(Value::Bool(regex(c, &a[0])?.is_match(str_arg(&a[1]))))
    });
    r.add("regexFind", &[Str, Str], None, regex_find);
    r.add("mustRegexFind", &[Str, Str], None, regex_find);
    r.add("regexFindAll", &[Str, Str, Int], None, regex_find_all);
    r.add("mustRegexFindAll", &[Str, Str, Int], None, regex_find_all);
    r.add("regexReplaceAll", &[Str, Str, Str], None, |c, a| {
        regex_replace(c, a, false)
    });
    r.add("mustRegexReplaceAll", &[Str, Str, Str], None, |c, a| {
        regex_replace(c, a, false)
    });
    r.add("regexReplaceAllLiteral", &[Str, Str, Str], None, |c, a| {
        regex_replace(c, a, true)
    });
    r.add(
        "mustRegexReplaceAllLiteral",
        &[Str, Str, Str],
        None,
        |c, a| regex_replace(c, a, true),
    );
    r.add("regexSplit", &[Str, Str, Int], None, regex_split);
    r.add("mustRegexSplit", &[Str, Str, Int], None, regex_split);
    r.add("regexQuoteMeta", &[Str], None, |_, a| {
        s(regex::escape(str_arg(&a[0])))
    });
    r.add("randAlphaNum", &[Int], None, |c, a| {
        random(
            c,
            &a[0],
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        )
    });
    r.add("randAlpha", &[Int], None, |c, a| {
        random(
            c,
            &a[0],
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        )
    });
    r.add("randNumeric", &[Int], None, |c, a| {
        random(c, &a[0], b"0123456789")
    });
    r.add("randAscii", &[Int], None, |c, a| {
        let printable: Vec<u8> = (32u8..127).collect();
        random(c, &a[0], &printable)
    });
    r.add("shuffle", &[Str], None, |_, a| {
        use rand::seq::SliceRandom;
        let mut chars: Vec<char> = str_arg(&a[0]).chars().collect();
        chars.shuffle(&mut rand::rng());
        s(chars.into_iter().collect::<String>())
    });
}

fn s(v: impl Into<String>) -> FnResult {
    Ok(Value::string(v.into()))
}

fn sized(c: &Ctx<'_>, v: String) -> FnResult {
    c.alloc(v.len())?;
    Ok(Value::string(v))
}

fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// `s[from..to]` by bytes, as Go slices; a cut through a character keeps the valid part.
fn byte_slice(v: &str, from: usize, to: usize) -> String {
    String::from_utf8_lossy(&v.as_bytes()[from.min(v.len())..to.min(v.len())]).into_owned()
}

fn trim_all(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let cut: Vec<char> = str_arg(&a[0]).chars().collect();
    s(str_arg(&a[1]).trim_matches(|c| cut.contains(&c)))
}

/// Go's deprecated `strings.Title`: upper-cases letters that follow a separator.
fn title(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut prev = ' ';
    for c in v.chars() {
        let sep = if prev.is_ascii() {
            !(prev.is_ascii_alphanumeric() || prev == '_')
        } else {
            !prev.is_alphanumeric() && prev.is_whitespace()
        };
        if sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

fn substr(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let (start, end, v) = (int_arg(&a[0]), int_arg(&a[1]), str_arg(&a[2]));
    let len = v.len() as i64;
    let bad = || {
        CallError::Msg(format!(
            "runtime error: slice bounds out of range [{start}:{end}]"
        ))
    };
    if start < 0 {
        if end < 0 || end > len {
            return Err(bad());
        }
        return s(byte_slice(v, 0, end as usize));
    }
    if end < 0 || end > len {
        if start > len {
            return Err(bad());
        }
        return s(byte_slice(v, start as usize, v.len()));
    }
    if start > end {
        return Err(bad());
    }
    s(byte_slice(v, start as usize, end as usize))
}

fn abbrevboth(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let (left, right, v) = (int_arg(&a[0]), int_arg(&a[1]), str_arg(&a[2]));
    if right < 4 || (left > 0 && right < 7) {
        return s(v);
    }
    let len = v.len() as i64;
    if v.is_empty() || len <= right {
        return s(v);
    }
    let mut offset = left.min(len);
    if len - offset < right - 3 {
        offset = len - (right - 3);
    }
    if offset <= 4 {
        return s(format!("{}...", byte_slice(v, 0, (right - 3) as usize)));
    }
    if right < 7 {
        return s(v);
    }
    if offset + right - 3 < len {
        let inner = byte_slice(v, offset as usize, v.len());
        let rest = abbrev_plain(&inner, right - 3);
        return s(format!("...{rest}"));
    }
    s(format!(
        "...{}",
        byte_slice(v, (len - (right - 3)) as usize, v.len())
    ))
}

fn abbrev_plain(v: &str, width: i64) -> String {
    if width < 4 || v.len() as i64 <= width {
        return v.to_string();
    }
    format!("{}...", byte_slice(v, 0, (width - 3) as usize))
}

fn indent(c: &Ctx<'_>, n: i64, v: &str) -> Result<String, CallError> {
    if n < 0 {
        return Err(CallError::Msg("strings: negative Repeat count".into()));
    }
    let n = n as usize;
    let lines = v.matches('\n').count() + 1;
    c.alloc(v.len().saturating_add(lines.saturating_mul(n)))?;
    let pad = " ".repeat(n);
    Ok(format!("{pad}{}", v.replace('\n', &format!("\n{pad}"))))
}

/// Go's `strings.Split`/`SplitN` (`n < 0`: all; `n == 0`: none).
fn go_split(v: &str, sep: &str, n: i64) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    if sep.is_empty() {
        let mut out: Vec<String> = v.chars().map(String::from).collect();
        if n > 0 && out.len() > n as usize {
            let tail: String = out[n as usize - 1..].concat();
            out.truncate(n as usize - 1);
            out.push(tail);
        }
        return out;
    }
    if n < 0 {
        v.split(sep).map(String::from).collect()
    } else {
        v.splitn(n as usize, sep).map(String::from).collect()
    }
}

fn parts_map(parts: Vec<String>) -> Value {
    Value::map(
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("_{i}"), Value::string(p)))
            .collect(),
    )
}

pub(crate) fn str_list(parts: Vec<String>) -> Value {
    Value::list(parts.into_iter().map(Value::string).collect())
}

fn regex(c: &Ctx<'_>, pattern: &Value) -> Result<regex::Regex, CallError> {
    let p = str_arg(pattern);
    c.alloc(p.len())?;
    regex::RegexBuilder::new(p)
        .size_limit(1 << 22)
        .build()
        .map_err(|e| CallError::Msg(format!("error parsing regexp: {e}")))
}

fn regex_find(c: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let r = regex(c, &a[0])?;
    s(r.find(str_arg(&a[1]))
        .map(|m| m.as_str())
        .unwrap_or_default())
}

fn regex_find_all(c: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let r = regex(c, &a[0])?;
    let n = int_arg(&a[2]);
    let mut out = Vec::new();
    for m in r.find_iter(str_arg(&a[1])) {
        if n >= 0 && out.len() as i64 >= n {
            break;
        }
        out.push(m.as_str().to_string());
    }
    Ok(str_list(out))
}

fn regex_replace(c: &Ctx<'_>, a: Vec<Value>, literal: bool) -> FnResult {
    let r = regex(c, &a[0])?;
    let (src, repl) = (str_arg(&a[1]), str_arg(&a[2]));
    let out = if literal {
        r.replace_all(src, regex::NoExpand(repl)).into_owned()
    } else {
        r.replace_all(src, repl).into_owned()
    };
    c.alloc(out.len())?;
    s(out)
}

fn regex_split(c: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let r = regex(c, &a[0])?;
    let v = str_arg(&a[1]);
    let n = int_arg(&a[2]);
    if n == 0 {
        return Ok(Value::list(Vec::new()));
    }
    if r.as_str().is_empty() || v.is_empty() && r.is_match("") {
        // Go splits an empty pattern into characters.
        return Ok(str_list(go_split(v, "", n)));
    }
    let parts: Vec<String> = if n < 0 {
        r.split(v).map(String::from).collect()
    } else {
        r.splitn(v, n as usize).map(String::from).collect()
    };
    Ok(str_list(parts))
}

fn random(c: &Ctx<'_>, n: &Value, alphabet: &[u8]) -> FnResult {
    use rand::Rng;
    let n = int_arg(n).max(0) as usize;
    c.alloc(n)?;
    let mut rng = rand::rng();
    s((0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect::<String>())
}

/// goutils' `WrapCustom`.
fn wrap(v: &str, width: i64, newline: &str, wrap_long: bool) -> String {
    if v.is_empty() {
        return String::new();
    }
    let width = width.max(1) as usize;
    let b = v.as_bytes();
    let len = b.len();
    let mut offset = 0usize;
    let mut out: Vec<u8> = Vec::with_capacity(len + 16);
    while len - offset > width {
        if b[offset] == b' ' {
            offset += 1;
            continue;
        }
        let end = (width + offset + 1).min(len);
        let at = b[offset..end].iter().rposition(|c| *c == b' ');
        match at {
            Some(sp) => {
                let sp = sp + offset;
                out.extend_from_slice(&b[offset..sp]);
                out.extend_from_slice(newline.as_bytes());
                offset = sp + 1;
            }
            None if wrap_long => {
                let end = width + offset;
                out.extend_from_slice(&b[offset..end]);
                out.extend_from_slice(newline.as_bytes());
                offset += width;
            }
            None => {
                let end = width + offset;
                match b[end..].iter().position(|c| *c == b' ') {
                    None => {
                        out.extend_from_slice(&b[offset..]);
                        offset = len;
                    }
                    Some(i) => {
                        let sp = i + end;
                        out.extend_from_slice(&b[offset..sp]);
                        out.extend_from_slice(newline.as_bytes());
                        offset = sp + 1;
                    }
                }
            }
        }
    }
    out.extend_from_slice(&b[offset..]);
    String::from_utf8_lossy(&out).into_owned()
}

fn is_connector(c: char) -> bool {
    c == '-' || c == '_' || c.is_whitespace()
}

/// huandu/xstrings' `ToPascalCase` (Sprig's `camelcase`).
fn pascal_case(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    let mut r0 = '\0';
    let mut first_upper = false;
    let mut found = false;
    for c in chars.by_ref() {
        if !is_connector(c) {
            first_upper = c.is_uppercase();
            r0 = c.to_uppercase().next().unwrap_or(c);
            found = true;
            break;
        }
        out.push(c);
    }
    if !found {
        return out;
    }
    for c in chars {
        let r1 = r0;
        let mut c0 = c;
        if is_connector(c0) && is_connector(r1) {
            out.push(r1);
            r0 = c0;
            continue;
        }
        if is_connector(r1) {
            first_upper = c0.is_uppercase();
            c0 = c0.to_uppercase().next().unwrap_or(c0);
        } else {
            if first_upper {
                if c0.is_uppercase() {
                    c0 = c0.to_lowercase().next().unwrap_or(c0);
                } else {
                    first_upper = false;
                }
            }
            out.push(r1);
        }
        r0 = c0;
    }
    out.push(r0);
    out
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Word {
    Invalid,
    Number,
    Upper,
    Alpha,
    Connector,
    Punct,
    Other,
}

fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation() && !matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~')
}

/// huandu/xstrings' `nextWord`.
fn next_word(v: &str) -> (Word, &str, &str) {
    let mut it = v.char_indices().peekable();
    let Some((_, r)) = it.next() else {
        return (Word::Invalid, "", "");
    };
    let mut offset = r.len_utf8();
    let take_while = |offset: &mut usize, pred: &dyn Fn(char) -> bool| {
        for c in v[*offset..].chars() {
            if !pred(c) {
                break;
            }
            *offset += c.len_utf8();
        }
    };
    let wt;
    if is_connector(r) {
        wt = Word::Connector;
        take_while(&mut offset, &is_connector);
    } else if is_punct(r) {
        wt = Word::Punct;
        take_while(&mut offset, &is_punct);
    } else if r.is_uppercase() {
        wt = Word::Upper;
        if let Some(n) = v[offset..].chars().next() {
            if n.is_uppercase() {
                let mut prev = n.len_utf8();
                offset += prev;
                let mut next_is_alpha = false;
                for c in v[offset..].chars() {
                    if !c.is_uppercase() {
                        next_is_alpha = c.is_alphabetic();
                        break;
                    }
                    prev = c.len_utf8();
                    offset += prev;
                }
                if offset < v.len() && next_is_alpha {
                    offset -= prev;
                }
            } else if n.is_alphabetic() {
                offset += n.len_utf8();
                take_while(&mut offset, &|c: char| {
                    c.is_alphabetic() && !c.is_uppercase()
                });
            }
        }
    } else if r.is_alphabetic() {
        wt = Word::Alpha;
        take_while(&mut offset, &|c: char| {
            c.is_alphabetic() && !c.is_uppercase()
        });
    } else if r.is_numeric() {
        wt = Word::Number;
        take_while(&mut offset, &|c: char| c.is_numeric());
    } else {
        wt = Word::Other;
        take_while(&mut offset, &|c: char| {
            !(is_connector(c) || c.is_alphabetic() || c.is_numeric() || is_punct(c))
        });
    }
    (wt, &v[..offset], &v[offset..])
}

fn push_lower(out: &mut String, wt: Word, word: &str, connector: char) {
    if wt != Word::Upper && wt != Word::Connector {
        out.push_str(word);
        return;
    }
    for c in word.chars() {
        if is_connector(c) {
            out.push(connector);
        } else if c.is_uppercase() {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
}

/// huandu/xstrings' `camelCaseToLowerCase` (Sprig's `snakecase`, `kebabcase`).
fn camel_to_lower(v: &str, connector: char) -> String {
    if v.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let (mut wt, mut word, mut remaining) = next_word(v);
    while !remaining.is_empty() {
        if wt != Word::Connector {
            push_lower(&mut out, wt, word, connector);
        }
        let prev = wt;
        let last = word;
        (wt, word, remaining) = next_word(remaining);
        match prev {
            Word::Number => {
                while wt == Word::Alpha || wt == Word::Number {
                    push_lower(&mut out, wt, word, connector);
                    (wt, word, remaining) = next_word(remaining);
                }
                if wt != Word::Invalid && wt != Word::Punct && wt != Word::Connector {
                    out.push(connector);
                }
            }
            Word::Connector => push_lower(&mut out, prev, last, connector),
            Word::Punct => {}
            _ => {
                if wt != Word::Number {
                    if wt != Word::Connector && wt != Word::Punct {
                        out.push(connector);
                    }
                    continue;
                }
                if remaining.is_empty() {
                    continue;
                }
                let last = word;
                (wt, word, remaining) = next_word(remaining);
                if wt != Word::Alpha {
                    push_lower(&mut out, Word::Number, last, connector);
                    if wt != Word::Connector && wt != Word::Punct {
                        out.push(connector);
                    }
                    continue;
                }
                out.push(connector);
                push_lower(&mut out, Word::Number, last, connector);
                while wt == Word::Alpha || wt == Word::Number {
                    push_lower(&mut out, wt, word, connector);
                    (wt, word, remaining) = next_word(remaining);
                }
                if wt != Word::Invalid && wt != Word::Connector && wt != Word::Punct {
                    out.push(connector);
                }
            }
        }
    }
    push_lower(&mut out, wt, word, connector);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_conversions_follow_xstrings() {
        assert_eq!(camel_to_lower("FirstName", '_'), "first_name");
        assert_eq!(camel_to_lower("HTTPServer", '_'), "http_server");
        assert_eq!(camel_to_lower("NoHTTPS", '-'), "no-https");
        assert_eq!(camel_to_lower("GO_PATH", '_'), "go_path");
        assert_eq!(camel_to_lower("http2xx", '-'), "http-2xx");
        assert_eq!(camel_to_lower("Bld4Floor3rd", '-'), "bld4-floor-3rd");
        assert_eq!(pascal_case("some_var"), "SomeVar");
        assert_eq!(pascal_case("http_server"), "HttpServer");
    }

    #[test]
    fn title_and_wrap_follow_go() {
        assert_eq!(title("hello world-foo"), "Hello World-Foo");
        assert_eq!(
            wrap("the quick brown fox", 10, "\n", false),
            "the quick\nbrown fox"
        );
    }
}
