//! A bundle's content as Kubernetes objects: multi-document YAML parsed into JSON values,
//! each with an [`ObjectRef`] that names it in every message. Pure: no I/O.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The label every applied object carries; watches select on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "flotilla";
/// The annotation naming the bundle that owns an object; pruning checks it so that an
/// object another bundle took over is never deleted.
pub const BUNDLE_ANNOTATION: &str = "flotilla.dev/bundle";
/// Helm's "never delete this" annotation, which Fleet honours too: an object that carries
/// it is not pruned. The renderer puts it on a Namespace it adds for fleet.yaml's
/// `namespaceLabels` without `deleteNamespace`.
pub const KEEP_ANNOTATION: (&str, &str) = ("helm.sh/resource-policy", "keep");

/// Names one object: `apps/v1 Deployment default/web`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(_, v)| v)
            .unwrap_or(&self.api_version)
    }

    /// The object's identity whatever the API version it is served at: moving an object
    /// from `v1beta1` to `v1` in a bundle must not prune it.
    pub fn identity(&self) -> (&str, &str, &str, &str) {
        (self.group(), &self.kind, &self.namespace, &self.name)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {} {}", self.api_version, self.kind, self.name)
        } else {
            write!(
                f,
                "{} {} {}/{}",
                self.api_version, self.kind, self.namespace, self.name
            )
        }
    }
}

/// One object of a bundle, as rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub r: ObjectRef,
    pub value: Value,
}

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    // Kubernetes' own parser reads `defaultMode: 0644` as octal 420.
    o.legacy_octal_numbers = true;
    o
}

/// Parses a bundle's content. Empty documents are skipped and `kind: List` is flattened.
/// Errors name the bundle and, where there is one, the object or document.
pub fn parse(bundle: &str, content: &[u8]) -> Result<Vec<Manifest>, String> {
    let text = std::str::from_utf8(content)
        .map_err(|e| format!("bundle {bundle}: content is not UTF-8: {e}"))?;
    let docs = serde_saphyr::from_multiple_with_options::<Value>(text, options())
        .map_err(|e| format!("bundle {bundle}: invalid YAML: {e}"))?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let items = match doc {
            Value::Null => continue,
            Value::Object(ref m)
                if m.get("kind").and_then(Value::as_str) == Some("List")
                    && m.get("items").is_some_and(Value::is_array) =>
            {
                match doc.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    _ => Vec::new(),
                }
            }
            other => vec![other],
        };
        for value in items {
            let m = object(bundle, i + 1, value)?;
            let id = m.r.identity();
            let key = (
                id.0.to_string(),
                id.1.to_string(),
                id.2.to_string(),
                id.3.to_string(),
            );
            if !seen.insert(key) {
                return Err(format!("bundle {bundle}: {} appears more than once", m.r));
            }
            out.push(m);
        }
    }
    Ok(out)
}

fn object(bundle: &str, doc: usize, value: Value) -> Result<Manifest, String> {
    let Value::Object(map) = &value else {
        return Err(format!(
            "bundle {bundle}: document {doc} is not a Kubernetes object (not a map)"
        ));
    };
    let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or("");
    let meta = |key: &str| {
        map.get("metadata")
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (api_version, kind, name) = (text("apiVersion"), text("kind"), meta("name"));
    if api_version.is_empty() || kind.is_empty() {
        return Err(format!(
            "bundle {bundle}: document {doc} has no apiVersion or kind"
        ));
    }
    if name.is_empty() {
        return Err(format!(
            "bundle {bundle}: document {doc} ({api_version} {kind}) has no metadata.name \
             (generateName cannot be tracked for pruning)"
        ));
    }
    Ok(Manifest {
        r: ObjectRef {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: meta("namespace"),
            name,
        },
        value,
    })
}

/// Stamps what flotilla adds to every object it applies: the managed-by label, the bundle
/// annotation, and the namespace (set for namespaced objects, dropped for cluster-scoped).
pub fn stamp(value: &mut Value, bundle: &str, namespace: Option<&str>) {
    let Value::Object(obj) = value else { return };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Value::Object(meta) = meta else { return };
    match namespace {
        Some(ns) => {
            meta.insert("namespace".into(), Value::String(ns.to_string()));
        }
        None => {
            meta.remove("namespace");
        }
    }
    for (field, key, val) in [
        ("labels", MANAGED_BY_LABEL, MANAGED_BY_VALUE),
        ("annotations", BUNDLE_ANNOTATION, bundle),
    ] {
        let entry = meta
            .entry(field)
            .or_insert_with(|| Value::Object(Default::default()));
        if !entry.is_object() {
            *entry = Value::Object(Default::default());
        }
        if let Value::Object(m) = entry {
            m.insert(key.to_string(), Value::String(val.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_parse_with_octal_modes_and_lists_flatten() {
        let yaml = "---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: x}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n  spec: {mode: 0644}\n";
        let m = parse("b", yaml.as_bytes()).expect("parses");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].r.to_string(), "v1 ConfigMap x/a");
        assert_eq!(m[1].r.group(), "apps");
        assert_eq!(m[1].r.version(), "v1");
        assert_eq!(m[1].value["spec"]["mode"], 420);
    }

    #[test]
    fn bad_documents_name_the_bundle_and_the_document() {
        let err =
            parse("web", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n").expect_err("no name");
        assert!(
            err.contains("bundle web") && err.contains("document 1"),
            "{err}"
        );
        let err = parse("web", b"- a\n- b\n").expect_err("not a map");
        assert!(err.contains("not a Kubernetes object"), "{err}");
        let err = parse("web", b"a: [\n").expect_err("bad yaml");
        assert!(err.contains("invalid YAML"), "{err}");
        let dup = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
        let err = parse("web", dup.as_bytes()).expect_err("duplicate");
        assert!(
            err.contains("v1 ConfigMap a appears more than once"),
            "{err}"
        );
    }

    #[test]
    fn stamping_adds_label_annotation_and_fixes_the_namespace() {
        let mut v = json!({"metadata": {"name": "a", "namespace": "wrong", "labels": {"x": "y"}}});
        stamp(&mut v, "web", None);
        assert_eq!(v["metadata"]["labels"][MANAGED_BY_LABEL], "flotilla");
        assert_eq!(v["metadata"]["labels"]["x"], "y");
        assert_eq!(v["metadata"]["annotations"][BUNDLE_ANNOTATION], "web");
        assert!(v["metadata"].get("namespace").is_none());
        stamp(&mut v, "web", Some("default"));
        assert_eq!(v["metadata"]["namespace"], "default");
    }
}
