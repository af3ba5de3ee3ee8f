//! Drift: the fields flotilla applied that differ in the live object, as JSON-pointer
//! paths with the applied (`old`) and live (`new`) values. Only fields present in the
//! applied manifest are compared, which under server-side apply are the fields the
//! `flotilla` field manager owns: defaults and fields other managers add are not drift.
//! Pure.

use base64::Engine;
use flotilla_model::ComparePatch;
use serde_json::{Map, Value};

use super::manifest::ObjectRef;

/// One differing field.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// JSON pointer into the applied manifest (`/spec/template/spec/containers/0/image`).
    pub path: String,
    /// What flotilla applied (`null` if the applied value is absent).
    pub old: Value,
    /// What the cluster holds (`null` when the field is gone).
    pub new: Value,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.path, self.old, self.new)
    }
}

/// The pointers ignored for `r`.
pub fn ignored_for<'a>(ignore: &'a [ComparePatch], r: &ObjectRef) -> Vec<&'a str> {
    ignore
        .iter()
        .filter(|i| selects(i, r))
        .flat_map(|i| i.json_pointers.iter().map(String::as_str))
        .collect()
}

/// What drift detection compares for `r`: the applied and live objects, each with the
/// operations of every matching comparePatches entry applied, as Fleet does before it
/// diffs. A patch is all or nothing per side: one that fails on a side (a `test` that does
/// not hold, a path that is not there) leaves that side as it was.
pub fn compared(
    ignore: &[ComparePatch],
    r: &ObjectRef,
    applied: &Value,
    live: &Value,
) -> (Value, Value) {
    let (mut applied, mut live) = (applied.clone(), live.clone());
    for i in ignore
        .iter()
        .filter(|i| selects(i, r) && !i.operations.is_empty())
    {
        // Applied with the renderer's own JSON patch, so hub and spoke agree on what
        // an operation means.
        let ops: Vec<Value> = i.operations.iter().map(|op| op.to_json()).collect();
        for side in [&mut applied, &mut live] {
            let _ = flotilla_render::apply_json_patch(side, &ops);
        }
    }
    (applied, live)
}

fn selects(p: &ComparePatch, r: &ObjectRef) -> bool {
    p.selects(&r.api_version, &r.kind, &r.namespace, &r.name)
}

/// Compares what was applied with the live object.
pub fn diff(kind: &str, applied: &Value, live: &Value, ignored: &[&str]) -> Vec<Change> {
    let applied = normalize(kind, applied);
    let mut out = Vec::new();
    if let (Value::Object(a), Value::Object(l)) = (&applied, live) {
        for (k, v) in a {
            // Identity is matched by the lookup itself (cache key or GET); status is never applied.
            if matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                continue;
            }
            walk(&format!("/{}", escape(k)), v, l.get(k), ignored, &mut out);
        }
    }
    if kind == "Secret" {
        // Drift reports travel to the hub; secret values do not.
        let redact = |v: &mut Value| {
            if !v.is_null() {
                *v = Value::String("(redacted)".into());
            }
        };
        for c in out.iter_mut().filter(|c| c.path.starts_with("/data")) {
            redact(&mut c.old);
            redact(&mut c.new);
        }
    }
    out
}

/// Secrets: `stringData` is write-only; the server folds it into base64 `data`.
fn normalize(kind: &str, applied: &Value) -> Value {
    let mut v = applied.clone();
    if kind == "Secret"
        && let Some(Value::Object(string_data)) =
            v.as_object_mut().and_then(|o| o.remove("stringData"))
        && let Some(obj) = v.as_object_mut()
    {
        let data = obj
            .entry("data")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(data) = data {
            for (k, s) in string_data {
                let text = s
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| s.to_string());
                data.insert(
                    k,
                    Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                );
            }
        }
    }
    v
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn is_ignored(path: &str, ignored: &[&str]) -> bool {
    ignored.iter().any(|i| {
        path == *i
            || path
                .strip_prefix(i)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

fn walk(
    path: &str,
    applied: &Value,
    live: Option<&Value>,
    ignored: &[&str],
    out: &mut Vec<Change>,
) {
    if is_ignored(path, ignored) {
        return;
    }
    let Some(live) = live else {
        // The server omits empty maps and lists (`labels: {}`); that is not drift.
        if !is_empty(applied) {
            out.push(Change {
                path: path.to_string(),
                old: applied.clone(),
                new: Value::Null,
            });
        }
        return;
    };
    match (applied, live) {
        (Value::Object(a), Value::Object(l)) => {
            for (k, v) in a {
                walk(&format!("{path}/{}", escape(k)), v, l.get(k), ignored, out);
            }
        }
        (Value::Array(a), Value::Array(l)) => walk_list(path, a, l, ignored, out),
        (Value::Number(a), Value::Number(l)) if a.as_f64() == l.as_f64() => {}
        (a, l) if a == l => {}
        (a, l) if is_quantity_path(path) && same_quantity(a, l) => {}
        (a, l) => out.push(Change {
            path: path.to_string(),
            old: a.clone(),
            new: l.clone(),
        }),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Fields that hold resource quantities, which the server rewrites in canonical form
/// (`cpu: 1` becomes `"1"`, `0.5` becomes `"500m"`).
fn is_quantity_path(path: &str) -> bool {
    [
        "/limits/",
        "/requests/",
        "/hard/",
        "/capacity/",
        "/overhead/",
    ]
    .iter()
    .any(|p| path.contains(p))
        || path.ends_with("/storage")
        || path.ends_with("/sizeLimit")
}

fn same_quantity(a: &Value, b: &Value) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// A Kubernetes quantity (`500m`, `1.5Gi`, `2e3`, `1`) as a number of base units.
fn quantity(v: &Value) -> Option<f64> {
    let s = match v {
        Value::Number(n) => return n.as_f64(),
        Value::String(s) => s.trim(),
        _ => return None,
    };
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    s.parse::<f64>().ok()
}

/// The key that identifies items of an associative list (containers by `name`, mounts
/// by `mountPath`, ports by `containerPort`...), if every applied item has it.
fn merge_key(items: &[Value]) -> Option<&'static str> {
    [
        "mountPath",
        "devicePath",
        "containerPort",
        "name",
        "port",
        "ip",
        "type",
    ]
    .into_iter()
    .find(|k| !items.is_empty() && items.iter().all(|i| i.get(k).is_some_and(|v| !v.is_null())))
}

fn walk_list(
    path: &str,
    applied: &[Value],
    live: &[Value],
    ignored: &[&str],
    out: &mut Vec<Change>,
) {
    let objects = applied.iter().all(Value::is_object);
    match merge_key(applied).filter(|_| objects) {
        Some(key) => {
            for (i, item) in applied.iter().enumerate() {
                let found = live.iter().find(|l| l.get(key) == item.get(key));
                walk(&format!("{path}/{i}"), item, found, ignored, out);
            }
        }
        // Atomic and set lists are owned whole: compare them item by item.
        None if applied.len() == live.len() => {
            for (i, (a, l)) in applied.iter().zip(live).enumerate() {
                walk(&format!("{path}/{i}"), a, Some(l), ignored, out);
            }
        }
        None => out.push(Change {
            path: path.to_string(),
            old: Value::Array(applied.to_vec()),
            new: Value::Array(live.to_vec()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "envoy"}, {"name": "web", "image": image}]}}}})
    }

    #[test]
    fn only_applied_fields_count_and_changes_are_json_pointers() {
        let applied = deployment(2, "nginx:1");
        let mut live = deployment(5, "nginx:2");
        live["metadata"]["uid"] = json!("u");
        live["metadata"]["labels"]["extra"] = json!("added by someone else");
        live["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] = json!("Always");
        // The server may return items in another order; they match by name.
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .reverse();
        live["status"] = json!({"replicas": 5});
        let changes = diff("Deployment", &applied, &live, &[]);
        assert_eq!(
            changes,
            vec![
                Change {
                    path: "/spec/replicas".into(),
                    old: json!(2),
                    new: json!(5)
                },
                Change {
                    path: "/spec/template/spec/containers/1/image".into(),
                    old: json!("nginx:1"),
                    new: json!("nginx:2")
                },
            ]
        );
        assert_eq!(changes[0].to_string(), "/spec/replicas: 2 -> 5");
    }

    #[test]
    fn removed_fields_and_list_items_are_reported() {
        let applied = json!({"metadata": {"labels": {"a/b": "1"}}, "data": {"k": "v"},
            "spec": {"args": ["x", "y"]}});
        let live = json!({"metadata": {"labels": {}}, "data": {}, "spec": {"args": ["x"]}});
        let paths: Vec<String> = diff("ConfigMap", &applied, &live, &[])
            .into_iter()
            .map(|c| c.path)
            .collect();
        assert_eq!(
            paths,
            vec!["/data/k", "/metadata/labels/a~1b", "/spec/args"]
        );
    }

    #[test]
    fn compare_patches_ignore_matching_objects_only() {
        let applied = deployment(2, "nginx:1");
        let live = deployment(5, "nginx:1");
        let ignore: Vec<ComparePatch> = serde_json::from_value(json!([
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
             "operations": [{"op": "remove", "path": "/spec/replicas"}]},
            {"kind": "Deployment", "name": "other", "jsonPointers": ["/spec"]}
        ]))
        .expect("parses");
        let r = ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: "web".into(),
        };
        let (a, l) = compared(&ignore, &r, &applied, &live);
        let ignored = ignored_for(&ignore, &r);
        assert!(ignored.is_empty(), "the other entry names another object");
        assert!(diff("Deployment", &a, &l, &ignored).is_empty());
        assert_eq!(diff("Deployment", &applied, &live, &[]).len(), 1);
        let other = ObjectRef {
            name: "other".into(),
            ..r
        };
        assert_eq!(ignored_for(&ignore, &other), vec!["/spec"]);
    }

    fn web() -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    fn patch(ops: Value) -> Vec<ComparePatch> {
        serde_json::from_value(json!([{"kind": "Deployment", "operations": ops}])).expect("parses")
    }

    fn drift_after(ops: Value, applied: &Value, live: &Value) -> Vec<String> {
        let (a, l) = compared(&patch(ops), &web(), applied, live);
        diff("Deployment", &a, &l, &[])
            .into_iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn every_json_patch_op_is_applied_to_both_sides_before_comparing() {
        let applied = deployment(2, "nginx:1");
        let live = deployment(5, "nginx:2");
        let image = "/spec/template/spec/containers/1/image";
        // replace and add make both sides equal at the path.
        assert_eq!(
            drift_after(
                json!([{"op": "replace", "path": "/spec/replicas", "value": 1}]),
                &applied,
                &live
            ),
            vec![format!("{image}: \"nginx:1\" -> \"nginx:2\"")]
        );
        assert!(
            drift_after(
                json!([{"op": "add", "path": "/spec/replicas", "value": 0},
                   {"op": "add", "path": image, "value": "x"}]),
                &applied,
                &live
            )
            .is_empty()
        );
        // test gates the rest: it holds on neither side here, so nothing is patched.
        assert_eq!(
            drift_after(
                json!([{"op": "test", "path": "/spec/replicas", "value": 3},
                       {"op": "remove", "path": "/spec/replicas"}]),
                &applied,
                &live
            )
            .len(),
            2
        );
        // copy overwrites the target with the source on both sides; move also drops it.
        assert_eq!(
            drift_after(
                json!([{"op": "copy", "from": "/metadata/name", "path": "/spec/replicas"}]),
                &applied,
                &live
            ),
            vec![format!("{image}: \"nginx:1\" -> \"nginx:2\"")]
        );
        assert_eq!(
            drift_after(
                json!([{"op": "move", "from": "/spec/template", "path": "/spec/replicas"}]),
                &applied,
                &live
            ),
            vec![format!(
                "/spec/replicas/spec/containers/1/image: \"nginx:1\" -> \"nginx:2\""
            )]
        );
        // A patch that fails on one side (here its test) leaves that side alone.
        assert_eq!(
            drift_after(
                json!([{"op": "test", "path": "/spec/replicas", "value": 2},
                       {"op": "replace", "path": image, "value": "x"}]),
                &applied,
                &live
            ),
            vec![
                "/spec/replicas: 2 -> 5".to_string(),
                format!("{image}: \"x\" -> \"nginx:2\""),
            ]
        );
    }

    #[test]
    fn secret_string_data_compares_with_the_stored_data() {
        let applied = json!({"kind": "Secret", "stringData": {"password": "hunter2"}});
        let live = json!({"kind": "Secret", "data": {"password": "aHVudGVyMg=="}});
        assert!(diff("Secret", &applied, &live, &[]).is_empty());
        let changed = json!({"kind": "Secret", "data": {"password": "b3RoZXI="}});
        let c = &diff("Secret", &applied, &changed, &[])[0];
        assert_eq!(c.path, "/data/password");
        assert_eq!(
            (&c.old, &c.new),
            (&json!("(redacted)"), &json!("(redacted)")),
            "values never leave the spoke"
        );
    }

    #[test]
    fn server_normalisation_is_not_drift() {
        let applied = json!({"metadata": {"labels": {}}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"cpu": 1, "memory": "1Gi"}, "requests": {"cpu": "0.5"}}}]}});
        let live = json!({"metadata": {}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"cpu": "1", "memory": "1024Mi"}, "requests": {"cpu": "500m"}}}]}});
        assert!(diff("Deployment", &applied, &live, &[]).is_empty());
        let scaled = json!({"metadata": {}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}]}});
        let changes = diff("Deployment", &applied, &scaled, &[]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "/spec/containers/0/resources/limits/cpu");
        // Outside quantity fields, "1" and 1 stay different.
        assert_eq!(
            diff(
                "ConfigMap",
                &json!({"data": {"k": "1.0"}}),
                &json!({"data": {"k": "1"}}),
                &[]
            )
            .len(),
            1
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(diff("X", &json!({"a": 1}), &json!({"a": 1.0}), &[]).is_empty());
    }
}
