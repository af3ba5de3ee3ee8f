//! Go's `fmt` and `strconv` formatting as templates observe it: `%v` of floats (`1e+06`),
//! `printf` verbs with flags, width and precision (and Go's `%!d(float64=3)` for a
//! mismatched verb), `strconv.Quote`, and `encoding/json`'s encoder (HTML escaping, float
//! format, sorted keys).

use std::fmt::Write as _;

use crate::value::{Value, Walk};

/// Shortest decimal digits and decimal-point position of `x` (`x = 0.DIGITS * 10^dp`).
fn shortest_digits(x: f64) -> (String, i32) {
    // Rust's `{:e}` prints the shortest round-tripping digits, as Go's strconv does.
    let s = format!("{:e}", x.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    (digits.to_string(), exp + 1)
}

fn exp_suffix(e: i32) -> String {
    let sign = if e < 0 { '-' } else { '+' };
    let a = e.abs();
    if a < 10 {
        format!("e{sign}0{a}")
    } else {
        format!("e{sign}{a}")
    }
}

fn special(x: f64) -> Option<String> {
    if x.is_nan() {
        Some("NaN".into())
    } else if x.is_infinite() {
        Some(if x > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        })
    } else {
        None
    }
}

/// `strconv.FormatFloat(x, 'g', -1, 64)`: what `%v` and `{{ 1.5 }}` print.
pub(crate) fn format_float_v(x: f64) -> String {
    if let Some(s) = special(x) {
        return s;
    }
    let neg = x.is_sign_negative();
    let (digits, dp) = if x == 0.0 {
        ("0".to_string(), 1)
    } else {
        shortest_digits(x)
    };
    let exp = dp - 1;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    // Go uses precision 6 for the %e decision when printing the shortest representation.
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&exp_suffix(exp));
    } else {
        out.push_str(&fixed_from_digits(&digits, dp, None));
    }
    out
}

/// Digits placed around the decimal point; `prec` pads or keeps the fraction.
fn fixed_from_digits(digits: &str, dp: i32, prec: Option<usize>) -> String {
    let mut int_part = String::new();
    let mut frac = String::new();
    if dp <= 0 {
        int_part.push('0');
        frac.push_str(&"0".repeat((-dp) as usize));
        frac.push_str(digits);
    } else {
        let dpu = dp as usize;
        if digits.len() <= dpu {
            int_part.push_str(digits);
            int_part.push_str(&"0".repeat(dpu - digits.len()));
        } else {
            int_part.push_str(&digits[..dpu]);
            frac.push_str(&digits[dpu..]);
        }
    }
    if let Some(p) = prec {
        while frac.len() < p {
            frac.push('0');
        }
        frac.truncate(p);
    }
    if frac.is_empty() {
        int_part
    } else {
        format!("{int_part}.{frac}")
    }
}

/// `%e` with precision `prec` (Go's default 6).
fn format_e(x: f64, prec: usize, upper: bool) -> String {
    if let Some(s) = special(x) {
        return s;
    }
    let s = format!("{:.*e}", prec, x);
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let out = format!("{mant}{}", exp_suffix(exp));
    if upper { out.to_uppercase() } else { out }
}

/// `%g` with an explicit precision.
fn format_g(x: f64, prec: Option<usize>, upper: bool) -> String {
    let Some(p) = prec else {
        let s = format_float_v(x);
        return if upper { s.to_uppercase() } else { s };
    };
    if let Some(s) = special(x) {
        return s;
    }
    let p = p.max(1);
    let e = format!("{:.*e}", p - 1, x);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let out = if exp < -4 || exp >= p as i32 {
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.')
        } else {
            mant
        };
        format!("{mant}{}", exp_suffix(exp))
    } else {
        let s = format!("{:.*}", (p as i32 - 1 - exp).max(0) as usize, x);
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if upper { out.to_uppercase() } else { out }
}

/// Go's `strconv.Quote`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` for non-ASCII: control and format
/// characters, separators other than space, and unassigned surrogates are not printable.
fn is_go_printable(c: char) -> bool {
    if c.is_control() {
        return false;
    }
    let u = c as u32;
    let format_or_private = matches!(
        u,
        0x80..=0x9f
            | 0xad
            | 0x2028
            | 0x2029
            | 0x200b..=0x200f
            | 0x202a..=0x202e
            | 0x2060..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xe000..=0xf8ff
    );
    let odd_space = u >= 0xa0 && c.is_whitespace() && c != '\u{3000}' && c != '\u{a0}';
    !(format_or_private || odd_space)
}

/// Go's `fmt.Sprint`: operands formatted with `%v`, spaced where neither is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        // Go adds a space between operands when neither is a string.
        if i > 0 && !matches!(a, Value::String(_)) && !matches!(args[i - 1], Value::String(_)) {
            out.push(' ');
        }
        let _ = write!(out, "{a}");
    }
    out
}

/// A parsed `%` directive.
#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    zero: bool,
    space: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's `fmt.Sprintf`. `limit` bounds the width and precision a format may ask for, so a
/// hostile `%999999999d` cannot allocate without bound.
pub(crate) fn sprintf(format: &str, args: &[Value], limit: usize) -> Result<String, String> {
    let mut out = String::new();
    let mut argi = 0usize;
    let mut chars = format.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        // Flags.
        while let Some(&(_, f)) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                _ => break,
            }
            chars.next();
        }
        // Width.
        let num = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
                   argi: &mut usize|
         -> Result<Option<usize>, String> {
            if let Some(&(_, '*')) = chars.peek() {
                chars.next();
                let v = match args.get(*argi) {
                    Some(Value::Int(i)) => Some((*i).unsigned_abs() as usize),
                    _ => None,
                };
                *argi += 1;
                return Ok(v);
            }
            let mut n: Option<usize> = None;
            while let Some(&(_, d)) = chars.peek() {
                let Some(dv) = d.to_digit(10) else { break };
                let next = n
                    .unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(dv as usize);
                if next > limit {
                    return Err(format!(
                        "printf width or precision {next}... exceeds the output budget"
                    ));
                }
                n = Some(next);
                chars.next();
            }
            Ok(n)
        };
        spec.width = num(&mut chars, &mut argi)?;
        if let Some(&(_, '.')) = chars.peek() {
            chars.next();
            spec.prec = Some(num(&mut chars, &mut argi)?.unwrap_or(0));
        }
        let Some((_, verb)) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        let s = format_verb(arg, verb, spec, &Walk::new(), 0);
        pad(&mut out, &s, spec, is_numeric_verb(verb, arg));
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[argi..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", a.type_name(), a);
        }
        out.push(')');
    }
    Ok(out)
}

fn is_numeric_verb(verb: char, arg: &Value) -> bool {
    matches!(arg, Value::Int(_) | Value::Float(_))
        && matches!(
            verb,
            'd' | 'f' | 'F' | 'e' | 'E' | 'g' | 'G' | 'x' | 'X' | 'o' | 'b' | 'v'
        )
}

fn pad(out: &mut String, s: &str, spec: Spec, numeric: bool) {
    let w = spec.width.unwrap_or(0);
    let n = s.chars().count();
    if n >= w {
        out.push_str(s);
        return;
    }
    let fill = w - n;
    if spec.minus {
        out.push_str(s);
        out.push_str(&" ".repeat(fill));
    } else if spec.zero && numeric {
        // Zero padding goes after the sign.
        let (sign, rest) = match s.strip_prefix(['-', '+']) {
            Some(r) => (&s[..1], r),
            None => ("", s),
        };
        out.push_str(sign);
        out.push_str(&"0".repeat(fill));
        out.push_str(rest);
    } else if spec.zero {
        out.push_str(&"0".repeat(fill));
        out.push_str(s);
    } else {
        out.push_str(&" ".repeat(fill));
        out.push_str(s);
    }
}

fn bad_verb(verb: char, arg: &Value) -> String {
    match arg {
        Value::Nil => format!("%!{verb}(<nil>)"),
        other => format!("%!{verb}({}={})", other.type_name(), other),
    }
}

fn sign(spec: Spec, neg: bool) -> &'static str {
    if neg {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    }
}

fn format_verb(arg: &Value, verb: char, spec: Spec, walk: &Walk, depth: usize) -> String {
    if !walk.enter(depth) {
        return "...".into();
    }
    // Lists and maps format element by element with the same verb.
    match arg {
        Value::List(l) if verb != 'T' => {
            let items: Vec<String> = l
                .iter()
                .map(|v| format_verb(v, verb, spec, walk, depth + 1))
                .collect();
            return format!("[{}]", items.join(" "));
        }
        Value::Map(m) if verb != 'T' => {
            let items: Vec<String> = m
                .read()
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        format_verb(&Value::string(k.clone()), verb, spec, walk, depth + 1),
                        format_verb(v, verb, spec, walk, depth + 1)
                    )
                })
                .collect();
            return format!("map[{}]", items.join(" "));
        }
        _ => {}
    }
    match verb {
        'T' => arg.type_name().to_string(),
        // Go's %+v means "field names" and drops the sign flag.
        'v' => match arg {
            Value::String(s) if spec.sharp => quote(s),
            other => other.to_string(),
        },
        's' => match arg {
            Value::String(s) => truncate_chars(s, spec.prec),
            Value::Object(o) => truncate_chars(&o.display(), spec.prec),
            other => bad_verb(verb, other),
        },
        'q' => match arg {
            Value::String(s) => quote(&truncate_chars(s, spec.prec)),
            Value::Int(i) => match char::from_u32(*i as u32) {
                Some(c) => format!("'{}'", c),
                None => bad_verb(verb, arg),
            },
            Value::Object(o) => quote(&o.display()),
            other => bad_verb(verb, other),
        },
        'd' => match arg {
            Value::Int(i) => {
                let mut digits = i.unsigned_abs().to_string();
                if let Some(p) = spec.prec {
                    while digits.len() < p {
                        digits.insert(0, '0');
                    }
                }
                format!("{}{}", sign(spec, *i < 0), digits)
            }
            other => bad_verb(verb, other),
        },
        't' => match arg {
            Value::Bool(b) => b.to_string(),
            other => bad_verb(verb, other),
        },
        'f' | 'F' => match arg {
            Value::Float(f) => {
                if let Some(s) = special(*f) {
                    return s;
                }
                let s = format!("{:.*}", spec.prec.unwrap_or(6), f.abs());
                format!(
                    "{}{}",
                    sign(
                        spec,
                        f.is_sign_negative() && *f != 0.0 || (*f == 0.0 && f.is_sign_negative())
                    ),
                    s
                )
            }
            other => bad_verb(verb, other),
        },
        'e' | 'E' => match arg {
            Value::Float(f) => {
                let s = format_e(f.abs(), spec.prec.unwrap_or(6), verb == 'E');
                format!("{}{}", sign(spec, f.is_sign_negative()), s)
            }
            other => bad_verb(verb, other),
        },
        'g' | 'G' => match arg {
            Value::Float(f) => {
                let s = format_g(f.abs(), spec.prec, verb == 'G');
                format!("{}{}", sign(spec, f.is_sign_negative()), s)
            }
            other => bad_verb(verb, other),
        },
        'x' | 'X' => {
            let s = match arg {
                Value::Int(i) => {
                    let h = format!("{:x}", i.unsigned_abs());
                    let h = if spec.sharp { format!("0x{h}") } else { h };
                    format!("{}{}", sign(spec, *i < 0), h)
                }
                Value::String(s) => s.bytes().map(|b| format!("{b:02x}")).collect(),
                other => return bad_verb(verb, other),
            };
            if verb == 'X' { s.to_uppercase() } else { s }
        }
        'o' => match arg {
            Value::Int(i) => format!("{}{:o}", sign(spec, *i < 0), i.unsigned_abs()),
            other => bad_verb(verb, other),
        },
        'b' => match arg {
            Value::Int(i) => format!("{}{:b}", sign(spec, *i < 0), i.unsigned_abs()),
            other => bad_verb(verb, other),
        },
        'c' => match arg {
            Value::Int(i) => char::from_u32(*i as u32)
                .map(String::from)
                .unwrap_or_else(|| "\u{FFFD}".into()),
            other => bad_verb(verb, other),
        },
        'U' => match arg {
            Value::Int(i) => format!("U+{:04X}", i),
            other => bad_verb(verb, other),
        },
        _ => bad_verb(verb, arg),
    }
}

fn truncate_chars(s: &str, prec: Option<usize>) -> String {
    match prec {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

/// `encoding/json`'s float format: shortest digits, fixed notation unless the exponent is
/// small or large, with `e-7` rather than `e-07`.
pub(crate) fn json_float(x: f64) -> Option<String> {
    if !x.is_finite() {
        return None;
    }
    let abs = x.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let (digits, dp) = shortest_digits(x);
        let mut s = String::new();
        if x < 0.0 {
            s.push('-');
        }
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let e = dp - 1;
        let _ = write!(s, "e{}{}", if e < 0 { '-' } else { '+' }, e.abs());
        return Some(s);
    }
    if x == 0.0 {
        return Some(if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        });
    }
    let (digits, dp) = shortest_digits(x);
    let body = fixed_from_digits(&digits, dp, None);
    Some(if x < 0.0 { format!("-{body}") } else { body })
}

/// Options for [`to_json`].
#[derive(Clone, Copy)]
pub(crate) struct JsonStyle {
    /// `json.Marshal` escapes `<`, `>`, `&`; `toRawJson` does not.
    pub escape_html: bool,
    /// `toPrettyJson`'s two-space indent.
    pub indent: bool,
}

/// `encoding/json` marshalling. `None` where Go returns an error (NaN, infinities).
pub(crate) fn to_json(v: &Value, style: JsonStyle) -> Option<String> {
    let mut out = String::new();
    json_value(v, style, &Walk::new(), 0, &mut out)?;
    Some(out)
}

fn json_value(
    v: &Value,
    style: JsonStyle,
    walk: &Walk,
    depth: usize,
    out: &mut String,
) -> Option<()> {
    if !walk.enter(depth) {
        return None;
    }
    let nl = |out: &mut String, d: usize| {
        if style.indent {
            out.push('\n');
            out.push_str(&"  ".repeat(d));
        }
    };
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&json_float(*f)?),
        Value::String(s) => json_string(s, style.escape_html, out),
        Value::List(l) => {
            if l.is_empty() {
                out.push_str("[]");
                return Some(());
            }
            out.push('[');
            for (i, x) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, depth + 1);
                json_value(x, style, walk, depth + 1, out)?;
            }
            nl(out, depth);
            out.push(']');
        }
        Value::Map(m) => {
            let m = m.snapshot();
            if m.is_empty() {
                out.push_str("{}");
                return Some(());
            }
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, depth + 1);
                json_string(k, style.escape_html, out);
                out.push(':');
                if style.indent {
                    out.push(' ');
                }
                json_value(x, style, walk, depth + 1, out)?;
            }
            nl(out, depth);
            out.push('}');
        }
        Value::Object(o) => json_value(&o.to_data(), style, walk, depth + 1, out)?,
    }
    Some(())
}

fn json_string(s: &str, escape_html: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if escape_html => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_prints_them() {
        assert_eq!(format_float_v(1000000.0), "1e+06");
        assert_eq!(format_float_v(123456.0), "123456");
        assert_eq!(format_float_v(1.5), "1.5");
        assert_eq!(format_float_v(0.0001), "0.0001");
        assert_eq!(format_float_v(0.00001), "1e-05");
        assert_eq!(format_float_v(1234567.0), "1.234567e+06");
        assert_eq!(format_float_v(-3.0), "-3");
        assert_eq!(json_float(1e21).as_deref(), Some("1e+21"));
        assert_eq!(json_float(1000000.0).as_deref(), Some("1000000"));
        assert_eq!(json_float(0.0000001).as_deref(), Some("1e-7"));
    }

    #[test]
    fn printf_follows_go() {
        let f = |fmt: &str, args: Vec<Value>| sprintf(fmt, &args, 1000).unwrap_or_default();
        assert_eq!(f("%d", vec![Value::Float(3.0)]), "%!d(float64=3)");
        assert_eq!(f("%5s|%-5s|", vec!["a".into(), "b".into()]), "    a|b    |");
        assert_eq!(f("%.2f", vec![Value::Float(1.23456)]), "1.23");
        assert_eq!(f("%q", vec!["a\"b".into()]), "\"a\\\"b\"");
        assert_eq!(f("%d %d", vec![Value::Int(1)]), "1 %!d(MISSING)");
        assert_eq!(
            f("%d", vec![Value::Int(1), Value::Int(2)]),
            "1%!(EXTRA int=2)"
        );
        assert_eq!(f("%x", vec![Value::Int(255)]), "ff");
        assert_eq!(f("%05d", vec![Value::Int(-42)]), "-0042");
    }
}
