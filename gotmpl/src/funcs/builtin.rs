//! Go's `text/template` builtins (`not`, `len`, `index`, `print*`, comparisons, escapers,
//! `call`; `and`/`or` short-circuit in the executor) and Helm's control functions
//! (`required`, `fail`, `lookup`).

use std::cmp::Ordering;
use std::fmt::Write as _;

use super::{CallError, Ctx, FnResult, Registry, Ty};
use crate::Value;
use crate::gofmt::{sprint, sprintf};

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("not", &[Any], None, |_, a| Ok(Value::Bool(!a[0].truth())));
    r.add("len", &[Any], None, len);
    r.add("index", &[Any], Some(Any), index);
    r.add("print", &[], Some(Any), |c, a| sized(c, sprint(&a)));
    r.add("println", &[], Some(Any), |c, a| {
        let parts: Vec<String> = a.iter().map(|v| v.to_string()).collect();
        sized(c, format!("{}\n", parts.join(" ")))
    });
    r.add("printf", &[Str], Some(Any), |c, a| {
        let s = sprintf(super::str_arg(&a[0]), &a[1..], c.budget.max_output)
            .map_err(CallError::Budget)?;
        sized(c, s)
    });
    r.add("eq", &[Any], Some(Any), eq);
    r.add("ne", &[Any, Any], None, |_, a| {
        Ok(Value::Bool(!eq_one(&a[0], &a[1])?))
    });
    r.add("lt", &[Any, Any], None, |_, a| {
        cmp(&a, |o| o == Ordering::Less)
    });
    r.add("le", &[Any, Any], None, |_, a| {
        cmp(&a, |o| o != Ordering::Greater)
    });
    r.add("gt", &[Any, Any], None, |_, a| {
        cmp(&a, |o| o == Ordering::Greater)
    });
    r.add("ge", &[Any, Any], None, |_, a| {
        cmp(&a, |o| o != Ordering::Less)
    });
    r.add("html", &[], Some(Any), |c, a| {
        sized(c, html_escape(&escaper_arg(&a)))
    });
    r.add("js", &[], Some(Any), |c, a| {
        sized(c, js_escape(&escaper_arg(&a)))
    });
    r.add("urlquery", &[], Some(Any), |c, a| {
        sized(c, query_escape(&escaper_arg(&a)))
    });
    r.add("call", &[Any], Some(Any), |_, a| {
        Err(CallError::Msg(match &a[0] {
            Value::Nil => "call of nil".to_string(),
            other => format!("non-function of type {}", other.type_name()),
        }))
    });
    r.add("required", &[Str, Any], None, |_, a| match &a[1] {
        Value::Nil => Err(CallError::Fail(super::str_arg(&a[0]).to_string())),
        Value::String(s) if s.is_empty() => Err(CallError::Fail(super::str_arg(&a[0]).to_string())),
        other => Ok(other.clone()),
    });
    r.add("fail", &[Str], None, |_, a| {
        Err(CallError::Fail(super::str_arg(&a[0]).to_string()))
    });
    // `helm template` has no cluster: lookup finds nothing.
    r.add("lookup", &[Str, Str, Str, Str], None, |_, _| {
        Ok(Value::map(Default::default()))
    });
}

fn sized(c: &Ctx<'_>, s: String) -> FnResult {
    c.alloc(s.len())?;
    Ok(Value::string(s))
}

fn len(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let n = match &a[0] {
        Value::String(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.len(),
        Value::Object(o) if o.entries().is_some() => o.entries().map_or(0, |e| e.len()),
        Value::Nil => return Err(CallError::Msg("len of nil pointer".into())),
        other => return Err(CallError::Msg(format!("len of type {}", other.type_name()))),
    };
    Ok(Value::Int(n as i64))
}

fn index(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let mut item = a[0].clone();
    if item.is_nil() {
        return Err(CallError::Msg("index of untyped nil".into()));
    }
    for (n, ix) in a[1..].iter().enumerate() {
        item = match &item {
            Value::Nil if n > 0 => return Err(CallError::Msg("index of nil pointer".into())),
            Value::List(l) => {
                let i = index_arg(ix, l.len())?;
                l[i].clone()
            }
            Value::String(s) => {
                let i = index_arg(ix, s.len())?;
                Value::Int(i64::from(s.as_bytes()[i]))
            }
            Value::Map(m) => match ix {
                Value::String(k) => m.get(k).unwrap_or_default(),
                Value::Nil => m.get("").unwrap_or_default(),
                other => {
                    return Err(CallError::Msg(format!(
                        "value has type {}; should be string",
                        other.type_name()
                    )));
                }
            },
            other => {
                return Err(CallError::Msg(format!(
                    "can't index item of type {}",
                    other.type_name()
                )));
            }
        };
    }
    Ok(item)
}

fn index_arg(ix: &Value, len: usize) -> Result<usize, CallError> {
    let i = match ix {
        Value::Int(i) => *i,
        Value::Nil => return Err(CallError::Msg("cannot index slice/array with nil".into())),
        other => {
            return Err(CallError::Msg(format!(
                "cannot index slice/array with type {}",
                other.type_name()
            )));
        }
    };
    if i < 0 || i as u64 >= len as u64 {
        return Err(CallError::Msg(format!("index out of range: {i}")));
    }
    Ok(i as usize)
}

/// Go's basic kinds for comparison.
#[derive(PartialEq, Clone, Copy)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Float,
    String,
    Other,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::Nil => Kind::Invalid,
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::String(_) => Kind::String,
        _ => Kind::Other,
    }
}

const BAD_COMPARISON: &str = "incompatible types for comparison";

fn eq_one(a: &Value, b: &Value) -> Result<bool, CallError> {
    let (k1, k2) = (kind(a), kind(b));
    if k1 != k2 {
        if k1 != Kind::Invalid && k2 != Kind::Invalid {
            return Err(CallError::Msg(BAD_COMPARISON.into()));
        }
        return Ok(false);
    }
    Ok(match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Nil, Value::Nil) => true,
        (Value::List(_), _) | (_, Value::List(_)) => {
            return Err(CallError::Msg(format!(
                "non-comparable type {}: {}",
                b,
                b.type_name()
            )));
        }
        (Value::Map(_), _) | (_, Value::Map(_)) => {
            return Err(CallError::Msg(format!(
                "non-comparable type {}: {}",
                b,
                b.type_name()
            )));
        }
        (Value::Object(x), Value::Object(y)) => x.display() == y.display(),
        _ => false,
    })
}

fn eq(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    if a.len() < 2 {
        return Err(CallError::Msg("missing argument for comparison".into()));
    }
    for b in &a[1..] {
        if eq_one(&a[0], b)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn cmp(a: &[Value], want: fn(Ordering) -> bool) -> FnResult {
    let (k1, k2) = (kind(&a[0]), kind(&a[1]));
    for k in [k1, k2] {
        if matches!(k, Kind::Invalid | Kind::Other) {
            return Err(CallError::Msg("invalid type for comparison".into()));
        }
    }
    if k1 != k2 {
        return Err(CallError::Msg(BAD_COMPARISON.into()));
    }
    let o = match (&a[0], &a[1]) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => match x.partial_cmp(y) {
            Some(o) => o,
            None => return Ok(Value::Bool(false)),
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => return Err(CallError::Msg("invalid type for comparison".into())),
    };
    Ok(Value::Bool(want(o)))
}

/// The escapers take one string as is, anything else through `fmt.Sprint`.
fn escaper_arg(a: &[Value]) -> String {
    if let [Value::String(s)] = a {
        return s.to_string();
    }
    sprint(a)
}

pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => out.push('\u{FFFD}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}
