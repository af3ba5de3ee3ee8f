//! Encodings and data formats: base64/base32, digests, JSON (Sprig's and Helm's), YAML and
//! TOML (Helm's), `uuidv4`, type reflection (`typeOf`, `kindIs`...) and `path` functions.

use std::fmt::Write as _;

use base64::Engine as _;
use sha2::Digest as _;

use super::{CallError, Ctx, FnResult, Registry, Ty, str_arg};
use crate::Value;
use crate::gofmt::{JsonStyle, quote, to_json};
use crate::helm::{BinaryString, bytes_of};
use crate::yaml::{parse_yaml, to_yaml, to_yaml_pretty};

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("b64enc", &[Bytes], None, |c, a| {
        sized(
            c,
            base64::engine::general_purpose::STANDARD.encode(bytes_of(&a[0])),
        )
    });
    r.add("b64dec", &[Str], None, |_, a| {
        Ok(
            match base64::engine::general_purpose::STANDARD.decode(str_arg(&a[0])) {
                Ok(b) => go_string(b),
                Err(e) => Value::string(go_b64_error(str_arg(&a[0]), &e)),
            },
        )
    });
    r.add("b32enc", &[Bytes], None, |c, a| {
        sized(c, data_encoding::BASE32.encode(bytes_of(&a[0])))
    });
    r.add("b32dec", &[Str], None, |_, a| {
        Ok(
            match data_encoding::BASE32.decode(str_arg(&a[0]).as_bytes()) {
                Ok(b) => go_string(b),
                Err(e) => {
                    Value::string(format!("illegal base32 data at input byte {}", e.position))
                }
            },
        )
    });
    r.add("sha1sum", &[Bytes], None, |_, a| {
        Ok(Value::string(hex(&sha1::Sha1::digest(bytes_of(&a[0])))))
    });
    r.add("sha256sum", &[Bytes], None, |_, a| {
        Ok(Value::string(hex(&sha2::Sha256::digest(bytes_of(&a[0])))))
    });
    r.add("sha512sum", &[Bytes], None, |_, a| {
        Ok(Value::string(hex(&sha2::Sha512::digest(bytes_of(&a[0])))))
    });
    r.add("adler32sum", &[Bytes], None, |_, a| {
        let (mut s1, mut s2) = (1u32, 0u32);
        for &b in bytes_of(&a[0]) {
            s1 = (s1 + u32::from(b)) % 65521;
            s2 = (s2 + s1) % 65521;
        }
        Ok(Value::string(((s2 << 16) | s1).to_string()))
    });

    r.add("toJson", &[Any], None, |c, a| {
        json_out(c, &a[0], true, false, false)
    });
    r.add("mustToJson", &[Any], None, |c, a| {
        json_out(c, &a[0], true, false, true)
    });
    r.add("toPrettyJson", &[Any], None, |c, a| {
        json_out(c, &a[0], true, true, false)
    });
    r.add("mustToPrettyJson", &[Any], None, |c, a| {
        json_out(c, &a[0], true, true, true)
    });
    r.add("toRawJson", &[Any], None, |c, a| {
        json_out(c, &a[0], false, false, true)
    });
    r.add("mustToRawJson", &[Any], None, |c, a| {
        json_out(c, &a[0], false, false, true)
    });
    // Helm's fromJson: a map, with the error under "Error".
    r.add("fromJson", &[Str], None, |_, a| {
        Ok(
            match serde_json::from_str::<serde_json::Value>(str_arg(&a[0])) {
                Ok(v @ serde_json::Value::Object(_)) => Value::from_json(&v),
                Ok(serde_json::Value::Null) => Value::map(Default::default()),
                Ok(other) => error_map(format!(
                    "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                    json_kind(&other)
                )),
                Err(e) => error_map(e.to_string()),
            },
        )
    });
    r.add("fromJsonArray", &[Str], None, |_, a| {
        Ok(
            match serde_json::from_str::<serde_json::Value>(str_arg(&a[0])) {
                Ok(v @ serde_json::Value::Array(_)) => Value::from_json(&v),
                Ok(serde_json::Value::Null) => Value::list(Vec::new()),
                Ok(other) => Value::list(vec![Value::string(format!(
                    "json: cannot unmarshal {} into Go value of type []interface {{}}",
                    json_kind(&other)
                ))]),
                Err(e) => Value::list(vec![Value::string(e.to_string())]),
            },
        )
    });
    r.add("mustFromJson", &[Str], None, |_, a| {
        serde_json::from_str::<serde_json::Value>(str_arg(&a[0]))
            .map(|v| Value::from_json(&v))
            .map_err(|e| CallError::Msg(e.to_string()))
    });
    r.add("toYaml", &[Any], None, |c, a| {
        let s = to_yaml(&a[0])
            .map(|s| s.strip_suffix('\n').unwrap_or(&s).to_string())
            .unwrap_or_default();
        sized(c, s)
    });
    r.add("toYamlPretty", &[Any], None, |c, a| {
        let s = to_yaml_pretty(&a[0])
            .map(|s| s.strip_suffix('\n').unwrap_or(&s).to_string())
            .unwrap_or_default();
        sized(c, s)
    });
    r.add("fromYaml", &[Str], None, |_, a| {
        Ok(match parse_yaml(str_arg(&a[0])) {
            Ok(v @ serde_json::Value::Object(_)) => Value::from_json(&v),
            Ok(serde_json::Value::Null) => Value::map(Default::default()),
            Ok(other) => error_map(format!(
                "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_kind(&other)
            )),
            Err(e) => error_map(format!("error converting YAML to JSON: {e}")),
        })
    });
    r.add("fromYamlArray", &[Str], None, |_, a| {
        Ok(match parse_yaml(str_arg(&a[0])) {
            Ok(v @ serde_json::Value::Array(_)) => Value::from_json(&v),
            Ok(serde_json::Value::Null) => Value::list(Vec::new()),
            Ok(other) => Value::list(vec![Value::string(format!(
                "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {} into Go value of type []interface {{}}",
                json_kind(&other)
            ))]),
            Err(e) => Value::list(vec![Value::string(format!("error converting YAML to JSON: {e}"))]),
        })
    });
    r.add("toToml", &[Any], None, |c, a| {
        let s = match &a[0] {
            Value::Map(m) => {
                let mut out = String::new();
                toml_table(&mut out, &[], &m.snapshot(), &crate::value::Walk::new(), 0);
                out
            }
            other => format!(
                "toml: top-level values must be Go maps or structs, not {}",
                other.kind_name()
            ),
        };
        sized(c, s)
    });
    r.add("fromToml", &[Str], None, |_, _| {
        Ok(error_map(
            "fromToml is not supported by flotilla's template engine".into(),
        ))
    });
    r.add("uuidv4", &[], None, |_, _| {
        let mut b: [u8; 16] = rand::random();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex(&b);
        Ok(Value::string(format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )))
    });
    r.add("randBytes", &[Int], None, |c, a| {
        let n = super::int_arg(&a[0]).max(0) as usize;
        c.alloc(n.saturating_mul(2))?;
        let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
        Ok(Value::string(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ))
    });

    r.add("typeOf", &[Any], None, |_, a| {
        Ok(Value::string(a[0].type_name()))
    });
    r.add("typeIs", &[Str, Any], None, |_, a| {
        Ok(Value::Bool(str_arg(&a[0]) == a[1].type_name()))
    });
    r.add("typeIsLike", &[Str, Any], None, |_, a| {
        let t = a[1].type_name();
        let want = str_arg(&a[0]);
        Ok(Value::Bool(want == t || format!("*{want}") == t))
    });
    r.add("kindOf", &[Any], None, |_, a| {
        Ok(Value::string(a[0].kind_name()))
    });
    r.add("kindIs", &[Str, Any], None, |_, a| {
        Ok(Value::Bool(str_arg(&a[0]) == a[1].kind_name()))
    });
    r.add("deepEqual", &[Any, Any], None, |_, a| {
        Ok(Value::Bool(a[0] == a[1]))
    });

    r.add("base", &[Str], None, |_, a| {
        Ok(Value::string(path_base(str_arg(&a[0]))))
    });
    r.add("osBase", &[Str], None, |_, a| {
        Ok(Value::string(path_base(str_arg(&a[0]))))
    });
    r.add("dir", &[Str], None, |_, a| {
        Ok(Value::string(path_dir(str_arg(&a[0]))))
    });
    r.add("osDir", &[Str], None, |_, a| {
        Ok(Value::string(path_dir(str_arg(&a[0]))))
    });
    r.add("clean", &[Str], None, |_, a| {
        Ok(Value::string(path_clean(str_arg(&a[0]))))
    });
    r.add("osClean", &[Str], None, |_, a| {
        Ok(Value::string(path_clean(str_arg(&a[0]))))
    });
    r.add("ext", &[Str], None, |_, a| {
        Ok(Value::string(path_ext(str_arg(&a[0]))))
    });
    r.add("osExt", &[Str], None, |_, a| {
        Ok(Value::string(path_ext(str_arg(&a[0]))))
    });
    r.add("isAbs", &[Str], None, |_, a| {
        Ok(Value::Bool(str_arg(&a[0]).starts_with('/')))
    });
    r.add("osIsAbs", &[Str], None, |_, a| {
        Ok(Value::Bool(str_arg(&a[0]).starts_with('/')))
    });

    r.add("hello", &[], None, |_, _| Ok(Value::string("Hello!")));
    // Helm renders without DNS unless --enable-dns: the lookup returns "".
    r.add("getHostByName", &[Str], None, |_, _| Ok(Value::string("")));
}

fn sized(c: &Ctx<'_>, s: String) -> FnResult {
    c.alloc(s.len())?;
    Ok(Value::string(s))
}

/// Go's `string(bytes)`: a binary result stays bytes (see [`BinaryString`]).
pub(super) fn go_string(b: Vec<u8>) -> Value {
    match String::from_utf8(b) {
        Ok(s) => Value::string(s),
        Err(e) => Value::object(BinaryString(e.into_bytes())),
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

pub(super) fn go_b64_error(input: &str, e: &base64::DecodeError) -> String {
    let pos = match e {
        base64::DecodeError::InvalidByte(p, _) | base64::DecodeError::InvalidLastSymbol(p, _) => *p,
        base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidPadding => {
            input.len().saturating_sub(input.len() % 4)
        }
    };
    format!("illegal base64 data at input byte {pos}")
}

fn error_map(message: String) -> Value {
    let mut m = std::collections::BTreeMap::new();
    m.insert("Error".to_string(), Value::string(message));
    Value::map(m)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Null => "null",
    }
}

fn json_out(c: &Ctx<'_>, v: &Value, escape_html: bool, indent: bool, must: bool) -> FnResult {
    match to_json(
        v,
        JsonStyle {
            escape_html,
            indent,
        },
    ) {
        Some(s) => sized(c, s),
        None if must => Err(CallError::Msg(
            "json: unsupported value: NaN or infinite float".into(),
        )),
        None => Ok(Value::string("")),
    }
}

/// BurntSushi/toml's encoder for `map[string]interface{}`: plain keys first, then tables.
fn toml_table(
    out: &mut String,
    path: &[String],
    m: &std::collections::BTreeMap<String, Value>,
    walk: &crate::value::Walk,
    depth: usize,
) {
    if !walk.enter(depth) {
        return;
    }
    let indent = "  ".repeat(path.len().saturating_sub(1));
    for (k, v) in m {
        if matches!(v, Value::Map(_)) || v.is_nil() {
            continue;
        }
        let _ = writeln!(out, "{indent}{} = {}", toml_key(k), toml_value(v));
    }
    for (k, v) in m {
        if let Value::Map(sub) = v {
            let mut p = path.to_vec();
            p.push(toml_key(k));
            let _ = writeln!(out, "\n{}[{}]", "  ".repeat(p.len() - 1), p.join("."));
            toml_table(out, &p, &sub.snapshot(), walk, depth + 1);
        }
    }
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

fn toml_value(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e16 {
                format!("{f:.1}")
            } else {
                crate::gofmt::format_float_v(*f)
            }
        }
        Value::List(l) => {
            let items: Vec<String> = l.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Map(_) | Value::Nil => String::new(),
        Value::Object(o) => quote(&o.display()),
    }
}

/// Go's `path.Clean`.
pub(crate) fn path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn path_base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

fn path_dir(p: &str) -> String {
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    path_clean(dir)
}

fn path_ext(p: &str) -> String {
    let base = p.rsplit('/').next().unwrap_or(p);
    match base.rfind('.') {
        Some(i) => base[i..].to_string(),
        None => String::new(),
    }
}
