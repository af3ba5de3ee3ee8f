//! `values.schema.json`, checked as Helm checks it (`chartutil.ValidateAgainstSchema`): the
//! chart's schema against its coalesced values, then each subchart's against its part.
//!
//! A subset of JSON Schema (draft 7 / 2020-12 keywords) that chart schemas use, written
//! here instead of the `jsonschema` crate, which would bring a regex engine, an HTTP client
//! for remote `$ref`s and a large dependency tree into a pure library: `type`, `enum`,
//! `const`, `properties`, `required`, `additionalProperties`, `patternProperties`,
//! `items`/`prefixItems`, `min/maxItems`, `uniqueItems`, `min/maxLength`, `pattern`,
//! `minimum`/`maximum`/`exclusiveM*`/`multipleOf`, `min/maxProperties`, `allOf`/`anyOf`/
//! `oneOf`/`not`, `if`/`then`/`else`, and local `$ref`s (`#/...`). Other keywords (such as
//! `format`, which Helm does not assert either) are ignored. Messages differ from Helm's;
//! what passes and what fails does not, for those keywords.

use serde_json::Value;

use super::chart::Chart;
use super::values::Table;

/// Deepest nesting of schema evaluation (`$ref` chains included).
const MAX_DEPTH: usize = 64;

/// Validates `values` against the chart's and its subcharts' schemas; `Err` lists every
/// failure, by chart.
pub(crate) fn validate_chart(chart: &Chart, values: &Table) -> Result<(), String> {
    let mut out = String::new();
    collect(chart, values, &mut out);
    if out.is_empty() { Ok(()) } else { Err(out) }
}

fn collect(chart: &Chart, values: &Table, out: &mut String) {
    if let Some(schema) = &chart.schema {
        let mut errs = Vec::new();
        check(
            schema,
            schema,
            &Value::Object(values.clone()),
            "",
            0,
            &mut errs,
        );
        if !errs.is_empty() {
            out.push_str(&format!("{}:\n", chart.name()));
            for e in errs {
                out.push_str(&format!("- {e}\n"));
            }
        }
    }
    for sub in &chart.dependencies {
        let empty = Table::new();
        let sub_vals = values
            .get(sub.name())
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        collect(sub, sub_vals, out);
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "at '/'".to_string()
    } else {
        format!("at '{path}'")
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let pointer = r.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(root);
    }
    root.pointer(pointer)
}

fn check(
    root: &Value,
    schema: &Value,
    v: &Value,
    path: &str,
    depth: usize,
    errs: &mut Vec<String>,
) {
    if depth > MAX_DEPTH {
        errs.push(format!(
            "{}: schema nests more than {MAX_DEPTH} deep",
            at(path)
        ));
        return;
    }
    let s = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errs.push(format!("{}: not allowed", at(path)));
            return;
        }
        Value::Object(s) => s,
        _ => return,
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match resolve(root, r) {
            Some(target) => check(root, target, v, path, depth + 1, errs),
            None => errs.push(format!("{}: cannot resolve $ref {r:?}", at(path))),
        }
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)),
            _ => true,
        };
        if !ok {
            errs.push(format!("{}: got {}, want {}", at(path), kind(v), t_text(t)));
            return;
        }
    }
    if let Some(Value::Array(e)) = s.get("enum")
        && !e.iter().any(|x| json_eq(x, v))
    {
        errs.push(format!(
            "{}: value must be one of {}",
            at(path),
            Value::Array(e.clone())
        ));
    }
    if let Some(c) = s.get("const")
        && !json_eq(c, v)
    {
        errs.push(format!("{}: value must be {c}", at(path)));
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        let Some(Value::Array(subs)) = s.get(key) else {
            continue;
        };
        let passing = subs
            .iter()
            .filter(|sub| {
                let mut e = Vec::new();
                check(root, sub, v, path, depth + 1, &mut e);
                e.is_empty()
            })
            .count();
        let ok = match key {
            "allOf" => passing == subs.len(),
            "anyOf" => passing > 0,
            _ => passing == 1,
        };
        if !ok {
            errs.push(format!(
                "{}: {key} failed ({passing} of {} subschemas match)",
                at(path),
                subs.len()
            ));
        }
    }
    if let Some(n) = s.get("not") {
        let mut e = Vec::new();
        check(root, n, v, path, depth + 1, &mut e);
        if e.is_empty() {
            errs.push(format!("{}: must not match the 'not' schema", at(path)));
        }
    }
    if let Some(cond) = s.get("if") {
        let mut e = Vec::new();
        check(root, cond, v, path, depth + 1, &mut e);
        let branch = if e.is_empty() {
            s.get("then")
        } else {
            s.get("else")
        };
        if let Some(b) = branch {
            check(root, b, v, path, depth + 1, errs);
        }
    }
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(req)) = s.get("required") {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        errs.push(format!("{}: missing property '{r}'", at(path)));
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            let patterns: Vec<(regex::Regex, &Value)> = s
                .get("patternProperties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .filter_map(|(k, sch)| regex::Regex::new(k).ok().map(|r| (r, sch)))
                        .collect()
                })
                .unwrap_or_default();
            for (k, val) in m {
                let child = format!("{path}/{k}");
                let mut matched = false;
                if let Some(p) = props.and_then(|p| p.get(k)) {
                    matched = true;
                    check(root, p, val, &child, depth + 1, errs);
                }
                for (re, sch) in &patterns {
                    if re.is_match(k) {
                        matched = true;
                        check(root, sch, val, &child, depth + 1, errs);
                    }
                }
                if !matched && let Some(ap) = s.get("additionalProperties") {
                    if ap == &Value::Bool(false) {
                        errs.push(format!(
                            "{}: additional property '{k}' not allowed",
                            at(path)
                        ));
                    } else {
                        check(root, ap, val, &child, depth + 1, errs);
                    }
                }
            }
            bound(
                s,
                "minProperties",
                "maxProperties",
                m.len(),
                path,
                "properties",
                errs,
            );
        }
        Value::Array(items) => {
            let prefix = s.get("prefixItems").and_then(Value::as_array);
            let skip = prefix.map_or(0, Vec::len);
            if let Some(p) = prefix {
                for (i, (sch, item)) in p.iter().zip(items).enumerate() {
                    check(root, sch, item, &format!("{path}/{i}"), depth + 1, errs);
                }
            }
            match s.get("items") {
                Some(Value::Array(tuple)) => {
                    for (i, (sch, item)) in tuple.iter().zip(items).enumerate() {
                        check(root, sch, item, &format!("{path}/{i}"), depth + 1, errs);
                    }
                }
                Some(sch) => {
                    for (i, item) in items.iter().enumerate().skip(skip) {
                        check(root, sch, item, &format!("{path}/{i}"), depth + 1, errs);
                    }
                }
                None => {}
            }
            bound(s, "minItems", "maxItems", items.len(), path, "items", errs);
            if s.get("uniqueItems") == Some(&Value::Bool(true)) {
                for (i, a) in items.iter().enumerate() {
                    if items[..i].iter().any(|b| json_eq(a, b)) {
                        errs.push(format!("{}: items at {i} is not unique", at(path)));
                        break;
                    }
                }
            }
        }
        Value::String(text) => {
            bound(
                s,
                "minLength",
                "maxLength",
                text.chars().count(),
                path,
                "characters",
                errs,
            );
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(text) => {
                        errs.push(format!(
                            "{}: '{text}' does not match pattern '{p}'",
                            at(path)
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => errs.push(format!("{}: invalid pattern '{p}'", at(path))),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let num = |k: &str| s.get(k).and_then(Value::as_f64);
            if let Some(m) = num("minimum").filter(|m| x < *m) {
                errs.push(format!("{}: must be >= {m} but found {x}", at(path)));
            }
            if let Some(m) = num("maximum").filter(|m| x > *m) {
                errs.push(format!("{}: must be <= {m} but found {x}", at(path)));
            }
            if let Some(m) = num("exclusiveMinimum").filter(|m| x <= *m) {
                errs.push(format!("{}: must be > {m} but found {x}", at(path)));
            }
            if let Some(m) = num("exclusiveMaximum").filter(|m| x >= *m) {
                errs.push(format!("{}: must be < {m} but found {x}", at(path)));
            }
            if let Some(m) = num("multipleOf").filter(|m| *m > 0.0 && (x / m).fract() != 0.0) {
                errs.push(format!("{}: {x} not multipleOf {m}", at(path)));
            }
        }
        _ => {}
    }
}

fn bound(
    s: &serde_json::Map<String, Value>,
    min: &str,
    max: &str,
    n: usize,
    path: &str,
    what: &str,
    errs: &mut Vec<String>,
) {
    if let Some(m) = s
        .get(min)
        .and_then(Value::as_u64)
        .filter(|m| (n as u64) < *m)
    {
        errs.push(format!(
            "{}: minimum {m} {what} required, but found {n}",
            at(path)
        ));
    }
    if let Some(m) = s
        .get(max)
        .and_then(Value::as_u64)
        .filter(|m| (n as u64) > *m)
    {
        errs.push(format!(
            "{}: maximum {m} {what} allowed, but found {n}",
            at(path)
        ));
    }
}

/// JSON equality where `1` and `1.0` are the same number, as JSON Schema compares.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn t_text(t: &Value) -> String {
    match t {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(schema: Value, v: Value) -> Vec<String> {
        let mut e = Vec::new();
        check(&schema, &schema, &v, "", 0, &mut e);
        e
    }

    #[test]
    fn common_keywords() {
        let s = json!({
            "type": "object",
            "required": ["replicas"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 1},
                "image": {"$ref": "#/$defs/image"},
                "mode": {"enum": ["a", "b"]}
            },
            "additionalProperties": false,
            "$defs": {"image": {"type": "object", "properties": {"tag": {"type": "string", "pattern": "^v"}}}}
        });
        assert!(
            errs(
                s.clone(),
                json!({"replicas": 2.0, "image": {"tag": "v1"}, "mode": "a"})
            )
            .is_empty()
        );
        let e = errs(
            s,
            json!({"replicas": 0, "image": {"tag": "1"}, "mode": "c", "x": 1}),
        );
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(
            e.iter()
                .any(|m| m.contains("'/replicas'") && m.contains(">= 1")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.contains("additional property 'x'")),
            "{e:?}"
        );
    }

    #[test]
    fn a_ref_loop_stops() {
        let s = json!({"$ref": "#"});
        let e = errs(s, json!(1));
        assert!(e[0].contains("nests more than"), "{e:?}");
    }
}
