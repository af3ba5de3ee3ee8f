//! The non-apply PATCH formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
//! and strategic merge patch for built-in kinds.
//!
//! See <https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/>.
//! Strategic merge uses the same list keys as server-side apply ([`Schema`]); the
//! first key is the `patchMergeKey`. Pure functions; no storage.

use serde_json::{Map, Value};

use crate::fieldpath::item_key;
use crate::schema::{ListType, Schema};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        _ => patch.clone(),
    }
}

/// RFC 6902 JSON patch. Errors name the failing operation.
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, String> {
    let Some(ops) = ops.as_array() else {
        return Err("json patch must be an array of operations".into());
    };
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        let name = op["op"].as_str().unwrap_or_default();
        let path = op["path"]
            .as_str()
            .ok_or_else(|| format!("operation {i} ({name}) has no path"))?;
        let fail = |why: &str| {
            format!(
                "the server rejected our request due to an error in our request: operation {i} ({name} {path}): {why}"
            )
        };
        match name {
            "add" => add(
                &mut doc,
                path,
                op.get("value")
                    .cloned()
                    .ok_or_else(|| fail("missing value"))?,
            )
            .map_err(|e| fail(&e))?,
            "remove" => {
                remove(&mut doc, path).map_err(|e| fail(&e))?;
            }
            "replace" => {
                let value = op
                    .get("value")
                    .cloned()
                    .ok_or_else(|| fail("missing value"))?;
                remove(&mut doc, path).map_err(|e| fail(&e))?;
                add(&mut doc, path, value).map_err(|e| fail(&e))?;
            }
            "move" | "copy" => {
                let from = op["from"].as_str().ok_or_else(|| fail("missing from"))?;
                let value = if name == "move" {
                    remove(&mut doc, from).map_err(|e| fail(&e))?
                } else {
                    doc.pointer(from)
                        .cloned()
                        .ok_or_else(|| fail("from path not found"))?
                };
                add(&mut doc, path, value).map_err(|e| fail(&e))?;
            }
            "test" => {
                let want = op.get("value").unwrap_or(&Value::Null);
                if doc.pointer(path) != Some(want) {
                    return Err(fail("test failed"));
                }
            }
            _ => return Err(fail("unknown operation")),
        }
    }
    Ok(doc)
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    if path.is_empty() {
        return Err("the root cannot be the target".into());
    }
    let idx = path.rfind('/').ok_or("paths must start with /")?;
    let last = path[idx + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..idx].to_string(), last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().map_err(|_| "bad array index")?
            };
            if i > a.len() {
                return Err("array index out of bounds".into());
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err("parent path not found".into()),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(|| "path not found".into()),
        Some(Value::Array(a)) => {
            let i = last.parse::<usize>().map_err(|_| "bad array index")?;
            if i >= a.len() {
                return Err("array index out of bounds".into());
            }
            Ok(a.remove(i))
        }
        _ => Err("path not found".into()),
    }
}

/// Strategic merge patch: like a merge patch, but lists with a merge key merge
/// item by item, and the `$patch`, `$retainKeys`, `$deleteFromPrimitiveList` and
/// `$setElementOrder` directives are honoured.
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    schema: &Schema,
) -> Result<Value, String> {
    match smp_value(Some(target), patch, schema)? {
        Some(v) => Ok(v),
        None => Ok(Value::Object(Map::new())),
    }
}

fn smp_value(
    target: Option<&Value>,
    patch: &Value,
    schema: &Schema,
) -> Result<Option<Value>, String> {
    let Value::Object(p) = patch else {
        return Ok(Some(patch.clone()));
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut out = p.clone();
            out.remove("$patch");
            return Ok(Some(Value::Object(out)));
        }
        Some(other) => return Err(format!("unknown patch type {other:?}")),
        None => {}
    }
    let mut out = match target {
        Some(Value::Object(t)) if !schema.map_is_atomic() => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(del)) = (out.get_mut(field), v.as_array()) {
                items.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let child = schema.field(k);
        let merged = match (out.get(k), v) {
            (Some(Value::Array(cur)), Value::Array(items)) => Some(smp_list(cur, items, &child)?),
            (Some(cur), Value::Object(_)) => smp_value(Some(cur), v, &child)?,
            (None, Value::Object(_)) => smp_value(None, v, &child)?,
            (None, Value::Array(items)) => Some(smp_list(&[], items, &child)?),
            _ => Some(v.clone()),
        };
        match merged {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.remove(k);
            }
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        out.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    Ok(Some(Value::Object(out)))
}

fn smp_list(cur: &[Value], items: &[Value], schema: &Schema) -> Result<Value, String> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        ));
    }
    match schema.list_type() {
        ListType::Atomic => Ok(Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        )),
        ListType::Set => {
            let mut out = cur.to_vec();
            for x in items {
                if !out.contains(x) {
                    out.push(x.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListType::Map(keys) => {
            let merge_key = &keys[..1];
            let mut out = cur.to_vec();
            let item_schema = schema.item();
            for pi in items {
                let key = item_key(pi, merge_key, schema);
                let pos = out
                    .iter()
                    .position(|ci| item_key(ci, merge_key, schema) == key);
                match (pos, smp_value(pos.map(|i| &out[i]), pi, &item_schema)?) {
                    (Some(i), Some(v)) => out[i] = v,
                    (Some(i), None) => {
                        out.remove(i);
                    }
                    (None, Some(v)) => out.push(v),
                    (None, None) => {}
                }
            }
            Ok(Value::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null() {
        let t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        let p = json!({"a": {"b": null, "e": 3}, "d": [2]});
        assert_eq!(
            merge_patch(&t, &p),
            json!({"a": {"c": 2, "e": 3}, "d": [2]})
        );
    }

    #[test]
    fn json_patch_applies_operations_in_order() {
        let t = json!({"a": [1, 2], "b": "x"});
        let ops = json!([
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "replace", "path": "/b", "value": "y"},
            {"op": "test", "path": "/b", "value": "y"},
            {"op": "remove", "path": "/a/0"}
        ]);
        assert_eq!(
            json_patch(&t, &ops).expect("applies"),
            json!({"a": [2, 3], "b": "y"})
        );
        assert!(json_patch(&t, &json!([{"op": "test", "path": "/b", "value": "z"}])).is_err());
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let schema = Schema::root("Deployment", None);
        let t = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "b:2"}, {"name": "a", "$patch": "delete"}, {"name": "c", "image": "c:1"}]}}}});
        let out = strategic_merge_patch(&t, &p, &schema).expect("applies");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}])
        );
    }
}
