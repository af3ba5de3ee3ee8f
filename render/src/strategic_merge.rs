//! Kubernetes strategic merge patch for built-in kinds, without the OpenAPI schema: lists
//! are merged by the merge keys Kubernetes declares for the common fields (containers and
//! env by name, ports by containerPort or port, volumeMounts by mountPath ...), every other
//! list is replaced, and the `$patch: delete|replace|merge`, `$retainKeys`,
//! `$deleteFromPrimitiveList/` and `$setElementOrder/` directives are honoured.

use serde_json::{Map, Value};

/// What became of the patched document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Kept,
    /// The patch said `$patch: delete` at the top: drop the object.
    Deleted,
}

/// Whose strategic merge to reproduce. They differ in list order and in what a list of
/// a kind without a schema does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// apimachinery's (kubectl patch, Fleet overlays): merged lists keep the original
    /// order and new elements are appended.
    Builtin,
    /// kustomize's (kyaml) for built-in kinds: patch elements come first, in patch order,
    /// then the original elements the patch did not mention.
    Kustomize,
    /// kustomize's for kinds it has no schema for: every list is replaced.
    KustomizeUnknownKind,
}

enum ListStrategy {
    Replace,
    MergeBy(&'static str),
    PrimitiveUnion,
}

/// `path` holds the field names from the object root to the list, list indices left out.
fn list_strategy(kind: &str, path: &[String]) -> ListStrategy {
    let Some(field) = path.last() else {
        return ListStrategy::Replace;
    };
    let parent = path.len().checked_sub(2).and_then(|i| path.get(i));
    let in_container = parent.is_some_and(|p| {
        matches!(
            p.as_str(),
            "containers" | "initContainers" | "ephemeralContainers"
        )
    });
    match field.as_str() {
        "containers" | "initContainers" | "ephemeralContainers" => ListStrategy::MergeBy("name"),
        "env" if in_container => ListStrategy::MergeBy("name"),
        "ports" if in_container => ListStrategy::MergeBy("containerPort"),
        "ports" if kind == "Service" && path.len() == 2 && path[0] == "spec" => {
            ListStrategy::MergeBy("port")
        }
        "volumeMounts" if in_container => ListStrategy::MergeBy("mountPath"),
        "volumeDevices" if in_container => ListStrategy::MergeBy("devicePath"),
        "resizePolicy" if in_container => ListStrategy::MergeBy("resourceName"),
        "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" => {
            ListStrategy::MergeBy("name")
        }
        "hostAliases" => ListStrategy::MergeBy("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeBy("topologyKey"),
        "conditions" => ListStrategy::MergeBy("type"),
        "ownerReferences" if parent.is_some_and(|p| p == "metadata") => {
            ListStrategy::MergeBy("uid")
        }
        "finalizers" if parent.is_some_and(|p| p == "metadata") => ListStrategy::PrimitiveUnion,
        _ => ListStrategy::Replace,
    }
}

/// Applies `patch` to `doc` (an object of kind `kind`).
pub(crate) fn apply(doc: &mut Value, patch: &Value, kind: &str) -> Result<Outcome, String> {
    apply_with(doc, patch, kind, Schema::Builtin)
}

/// Applies `patch` with list merge keys taken from `schema`. All or nothing.
pub(crate) fn apply_with(
    doc: &mut Value,
    patch: &Value,
    kind: &str,
    schema: Schema,
) -> Result<Outcome, String> {
    if directive(patch) == Some("delete") {
        return Ok(Outcome::Deleted);
    }
    let mut path = Vec::new();
    let mut work = doc.clone();
    let ctx = Ctx { kind, schema };
    merge_value(&mut work, patch, &ctx, &mut path)?;
    *doc = work;
    Ok(Outcome::Kept)
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

/// A patch value with every directive removed, for places it replaces wholesale.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| directive(e).is_none_or(|d| d != "replace" && d != "delete"))
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

struct Ctx<'a> {
    kind: &'a str,
    schema: Schema,
}

fn merge_value(
    target: &mut Value,
    patch: &Value,
    kind: &Ctx<'_>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    match patch {
        Value::Object(pm) => {
            match directive(patch) {
                Some("replace") => {
                    *target = strip(patch);
                    return Ok(());
                }
                Some("merge") | None => {}
                Some(other) => return Err(format!("unknown $patch directive {other:?}")),
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            merge_map(target, pm, kind, path)
        }
        Value::Array(_) => merge_list(target, patch, kind, path),
        scalar => {
            *target = scalar.clone();
            Ok(())
        }
    }
}

fn merge_map(
    target: &mut Value,
    pm: &Map<String, Value>,
    kind: &Ctx<'_>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(tm) = target else {
        return Ok(());
    };
    for (k, v) in pm {
        if k == "$patch" || k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (tm.get_mut(field), v.as_array()) {
                list.retain(|e| !remove.contains(e));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!("unknown directive {k:?}"));
        }
        if v.is_null() || directive(v) == Some("delete") {
            tm.remove(k);
            continue;
        }
        path.push(k.clone());
        let slot = tm.entry(k.clone()).or_insert(Value::Null);
        let result = match v {
            Value::Object(_) if !slot.is_object() => {
                *slot = strip(v);
                Ok(())
            }
            _ => merge_value(slot, v, kind, path),
        };
        path.pop();
        result?;
    }
    if let Some(Value::Array(keep)) = pm.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        tm.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_list(
    target: &mut Value,
    patch: &Value,
    kind: &Ctx<'_>,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let Some(items) = patch.as_array() else {
        return Ok(());
    };
    let replace_all = items.iter().any(|e| directive(e) == Some("replace"));
    let field = path.last().cloned().unwrap_or_default();
    let strategy = match kind.schema {
        Schema::Builtin | Schema::Kustomize => list_strategy(kind.kind, path),
        Schema::KustomizeUnknownKind => ListStrategy::Replace,
    };
    let patch_first = kind.schema == Schema::Kustomize;
    match strategy {
        _ if replace_all || !target.is_array() => {
            *target = strip(patch);
            Ok(())
        }
        ListStrategy::Replace => {
            *target = strip(patch);
            Ok(())
        }
        ListStrategy::PrimitiveUnion => {
            if let Value::Array(existing) = target {
                let mut merged: Vec<Value> = Vec::new();
                let (first, second) = if patch_first {
                    (items.as_slice(), existing.as_slice())
                } else {
                    (existing.as_slice(), items.as_slice())
                };
                for item in first.iter().chain(second) {
                    if !merged.contains(item) {
                        merged.push(item.clone());
                    }
                }
                *existing = merged;
            }
            Ok(())
        }
        ListStrategy::MergeBy(key) => {
            let Value::Array(existing) = target else {
                return Ok(());
            };
            // Each original element, and whether the patch mentioned it.
            let mut original: Vec<(Value, bool)> = existing.drain(..).map(|e| (e, false)).collect();
            let mut from_patch: Vec<Value> = Vec::new();
            for item in items {
                let Some(key_value) = item.get(key) else {
                    if item.is_object() {
                        return Err(format!("an element of {field} has no merge key {key:?}"));
                    }
                    from_patch.push(item.clone());
                    continue;
                };
                let pos = original
                    .iter()
                    .position(|(e, seen)| !seen && e.get(key) == Some(key_value));
                match (directive(item), pos) {
                    (Some("delete"), Some(i)) => {
                        original.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (Some("replace"), Some(i)) => {
                        original[i] = (strip(item), true);
                        if patch_first {
                            from_patch.push(original.remove(i).0);
                        }
                    }
                    (_, Some(i)) => {
                        merge_value(&mut original[i].0, item, kind, path)?;
                        original[i].1 = true;
                        if patch_first {
                            from_patch.push(original.remove(i).0);
                        }
                    }
                    (_, None) => from_patch.push(strip(item)),
                }
            }
            let rest = original.into_iter().map(|(e, _)| e);
            *existing = if patch_first {
                from_patch.into_iter().chain(rest).collect()
            } else {
                rest.chain(from_patch).collect()
            };
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "1"}},
            "spec": {"template": {"spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80}], "args": ["x", "y"]},
                    {"name": "side", "image": "side:1"}
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "a"}]
            }}}
        })
    }

    #[test]
    fn merges_containers_and_env_by_name_and_replaces_plain_lists() {
        let mut d = deployment();
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                            "args": ["z"]}],
            "tolerations": [{"key": "b"}]
        }}}});
        assert_eq!(apply(&mut d, &patch, "Deployment"), Ok(Outcome::Kept));
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "app:2");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(c[0]["args"], json!(["z"]));
        assert_eq!(c[1]["name"], "side");
        assert_eq!(
            d["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b"}])
        );
    }

    #[test]
    fn patch_directives_delete_and_replace() {
        let mut d = deployment();
        let patch = json!({
            "metadata": {"labels": {"$patch": "replace", "b": "2"}},
            "spec": {"template": {"spec": {
                "containers": [{"name": "side", "$patch": "delete"}],
                "volumes": [{"$patch": "replace"}, {"name": "other", "emptyDir": {}}]
            }}}
        });
        apply(&mut d, &patch, "Deployment").expect("applies");
        assert_eq!(d["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "other", "emptyDir": {}}])
        );
    }

    #[test]
    fn top_level_delete_drops_the_object_and_null_removes_fields() {
        let mut d = deployment();
        assert_eq!(
            apply(&mut d, &json!({"$patch": "delete"}), "Deployment"),
            Ok(Outcome::Deleted)
        );
        apply(&mut d, &json!({"metadata": {"labels": null}}), "Deployment").expect("ok");
        assert!(d["metadata"].get("labels").is_none());
    }

    #[test]
    fn service_ports_merge_by_port() {
        let mut s = json!({"kind": "Service", "spec": {"ports": [{"port": 80, "name": "http"}]}});
        apply(
            &mut s,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
            "Service",
        )
        .expect("ok");
        assert_eq!(
            s["spec"]["ports"],
            json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}])
        );
    }
}
