//! RFC 6902 JSON Patch and RFC 7386 JSON Merge Patch over `serde_json::Value`. Pure
//! functions; errors are plain strings that callers locate in a file.

use serde_json::{Map, Value};

use crate::budget::{Budget, json_size};

/// Applies an RFC 6902 patch (a list of operations). All or nothing: on error `doc` is
/// left untouched. Every value an operation adds or copies is charged to `budget`
/// before it is made, since a list of `copy` operations can double a document each time.
pub(crate) fn apply(doc: &mut Value, patch: &[Value], budget: &Budget) -> Result<(), String> {
    budget.bytes(json_size(doc)).map_err(|e| e.to_string())?;
    let mut work = doc.clone();
    for (i, op) in patch.iter().enumerate() {
        budget.work(1).map_err(|e| e.to_string())?;
        apply_one(&mut work, op, budget).map_err(|e| format!("operation {i}: {e}"))?;
    }
    *doc = work;
    Ok(())
}

fn field<'a>(op: &'a Value, name: &str) -> Result<&'a Value, String> {
    op.get(name).ok_or_else(|| format!("missing {name:?}"))
}

fn str_field<'a>(op: &'a Value, name: &str) -> Result<&'a str, String> {
    field(op, name)?
        .as_str()
        .ok_or_else(|| format!("{name:?} must be a string"))
}

/// The value an operation is about to clone, charged first.
fn charged<'a>(v: &'a Value, budget: &Budget) -> Result<&'a Value, String> {
    budget.bytes(json_size(v)).map_err(|e| e.to_string())?;
    Ok(v)
}

fn apply_one(doc: &mut Value, op: &Value, budget: &Budget) -> Result<(), String> {
    let kind = str_field(op, "op")?;
    let path = parse_pointer(str_field(op, "path")?)?;
    match kind {
        "add" => add(doc, &path, charged(field(op, "value")?, budget)?.clone()),
        "remove" => remove(doc, &path).map(|_| ()),
        "replace" => {
            let target = get_mut(doc, &path)?;
            *target = charged(field(op, "value")?, budget)?.clone();
            Ok(())
        }
        "move" => {
            let from = parse_pointer(str_field(op, "from")?)?;
            if path.len() > from.len() && path[..from.len()] == from[..] {
                return Err("cannot move a value into itself".into());
            }
            let v = remove(doc, &from)?;
            add(doc, &path, v)
        }
        "copy" => {
            let from = parse_pointer(str_field(op, "from")?)?;
            let v = charged(get_mut(doc, &from)?, budget)?.clone();
            add(doc, &path, v)
        }
        "test" => {
            let expected = field(op, "value")?;
            let actual = get_mut(doc, &path)?;
            if actual == expected {
                Ok(())
            } else {
                Err(format!("test failed at {}", render_pointer(&path)))
            }
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

/// Parses a JSON pointer (`/a/b~1c`) into unescaped tokens.
pub(crate) fn parse_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!("path {p:?} must start with '/'"));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn render_pointer(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if token == "-" && allow_end {
        return Ok(len);
    }
    if token.len() > 1 && token.starts_with('0') {
        return Err(format!("bad array index {token:?}"));
    }
    let i: usize = token
        .parse()
        .map_err(|_| format!("bad array index {token:?}"))?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > max || (!allow_end && len == 0) {
        return Err(format!("array index {i} is out of bounds (length {len})"));
    }
    Ok(i)
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for (depth, token) in path.iter().enumerate() {
        cur = match cur {
            Value::Object(m) => m.get_mut(token),
            Value::Array(a) => {
                let i = array_index(token, a.len(), false)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or_else(|| format!("path {} does not exist", render_pointer(&path[..=depth])))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent_path)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent_path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!(
            "cannot add at {}: parent is not an object or array",
            render_pointer(path)
        )),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let Some((last, parent_path)) = path.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match get_mut(doc, parent_path)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("path {} does not exist", render_pointer(path))),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!("path {} does not exist", render_pointer(path))),
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc6902_operations() {
        let mut doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        let patch = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "remove", "path": "/a/b/1"},
            {"op": "test", "path": "/e", "value": "y"},
            {"op": "add", "path": "/k~1v", "value": true}
        ]);
        let budget = Budget::new(&crate::Limits::default());
        apply(&mut doc, patch.as_array().expect("list"), &budget).expect("applies");
        assert_eq!(
            doc,
            json!({"a": {"b": [0, 2, 3]}, "c": "y", "e": "y", "k/v": true})
        );
    }

    #[test]
    fn failing_patch_leaves_document_unchanged() {
        let mut doc = json!({"a": 1});
        let patch =
            json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "remove", "path": "/zz"}]);
        let budget = Budget::new(&crate::Limits::default());
        let err = apply(&mut doc, patch.as_array().expect("list"), &budget).expect_err("fails");
        assert_eq!(err, "operation 1: path /zz does not exist");
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn copies_that_double_a_document_stop_at_the_byte_budget() {
        let mut doc = json!({"a": "x".repeat(1000)});
        // Each copy doubles the document: 40 of them would need a terabyte.
        let ops: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
            .collect();
        let budget = Budget::new(&crate::Limits {
            max_render_bytes: 1 << 20,
            ..crate::Limits::default()
        });
        let err = apply(&mut doc, &ops, &budget).expect_err("over budget");
        assert!(err.contains("Limits::max_render_bytes"), "{err}");
        assert!(budget.spent().bytes <= 1 << 20);
        assert_eq!(doc, json!({"a": "x".repeat(1000)}));
    }

    #[test]
    fn rfc7386_examples() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1]});
        merge_patch(&mut doc, &json!({"a": [2], "b": {"c": null}}));
        assert_eq!(doc, json!({"a": [2], "b": {}}));
    }
}
