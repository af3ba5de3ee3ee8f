//! The last stage: checks every object has an identity, refuses duplicates, sorts objects
//! into a stable order (namespaces and CRDs first, webhooks last, then by identity), and
//! writes the manifest whose bytes give the content digest. Also owns canonical JSON.

use std::collections::BTreeMap;

use flotilla_model::ContentDigest;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, Diags};
use crate::{Rendered, RenderedObject};

/// An object on its way through the pipeline, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Object {
    pub file: String,
    pub line: u32,
    pub value: Value,
}

impl Object {
    pub(crate) fn str_field(&self, path: &[&str]) -> Option<&str> {
        let mut v = &self.value;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str()
    }
    pub(crate) fn api_version(&self) -> &str {
        self.str_field(&["apiVersion"]).unwrap_or("")
    }
    pub(crate) fn kind(&self) -> &str {
        self.str_field(&["kind"]).unwrap_or("")
    }
    pub(crate) fn name(&self) -> &str {
        self.str_field(&["metadata", "name"]).unwrap_or("")
    }
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.str_field(&["metadata", "namespace"])
    }
    pub(crate) fn diag(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(&self.file, self.line, message)
    }
}

const ORDER_FIRST: &[&str] = &[
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
const ORDER_LAST: &[&str] = &[
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

fn kind_rank(kind: &str) -> usize {
    if let Some(i) = ORDER_FIRST.iter().position(|k| *k == kind) {
        return i;
    }
    if let Some(i) = ORDER_LAST.iter().position(|k| *k == kind) {
        return ORDER_FIRST.len() + 1 + i;
    }
    ORDER_FIRST.len()
}

/// (apiVersion, kind, namespace, name): the identity two objects may not share.
pub(crate) type ObjectId = (String, String, String, String);

pub(crate) fn id_of(o: &Object) -> ObjectId {
    (
        o.api_version().to_string(),
        o.kind().to_string(),
        o.namespace().unwrap_or("").to_string(),
        o.name().to_string(),
    )
}

/// Checks, sorts and serialises the objects of one render.
pub(crate) fn finish(objects: Vec<Object>) -> Diags<Rendered> {
    finish_with(objects, true)
}

/// Checks and serialises objects in the order given (a Helm chart's: Helm's install order,
/// which the spoke keeps).
pub(crate) fn finish_in_order(objects: Vec<Object>) -> Diags<Rendered> {
    finish_with(objects, false)
}

fn finish_with(objects: Vec<Object>, sort: bool) -> Diags<Rendered> {
    check(&objects)?;
    let mut kept = objects;
    if sort {
        kept.sort_by_cached_key(|o| (kind_rank(o.kind()), id_of(o)));
    }
    let mut manifest = String::new();
    let mut out = Vec::with_capacity(kept.len());
    for o in kept {
        manifest.push_str("---\n");
        crate::yaml::write_yaml(&mut manifest, &o.value);
        let api_version = o.api_version().to_string();
        let kind = o.kind().to_string();
        let namespace = o.namespace().map(str::to_string);
        let name = o.name().to_string();
        out.push(RenderedObject {
            source: o.file,
            api_version,
            kind,
            namespace,
            name,
            value: o.value,
        });
    }
    let digest = ContentDigest::of(manifest.as_bytes());
    Ok(Rendered {
        objects: out,
        manifest,
        digest,
    })
}

/// Every object a mapping with an identity, no identity twice. Identities are borrowed
/// from the objects (no copies: this runs on every object of every render).
fn check(objects: &[Object]) -> Diags<()> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<(&str, &str, &str, &str), (&str, u32)> = BTreeMap::new();
    for o in objects {
        if !o.value.is_object() {
            errors.push(o.diag("a resource must be a YAML mapping"));
            continue;
        }
        let missing: Vec<&str> = [
            ("apiVersion", o.str_field(&["apiVersion"])),
            ("kind", o.str_field(&["kind"])),
            ("metadata.name", o.str_field(&["metadata", "name"])),
        ]
        .iter()
        .filter(|(_, v)| v.is_none_or(str::is_empty))
        .map(|(k, _)| *k)
        .collect();
        if !missing.is_empty() {
            errors.push(o.diag(format!("resource has no {}", missing.join(", "))));
            continue;
        }
        let id = (
            o.api_version(),
            o.kind(),
            o.namespace().unwrap_or(""),
            o.name(),
        );
        if let Some((file, line)) = seen.get(&id) {
            let place = if id.2.is_empty() {
                String::new()
            } else {
                format!(" in namespace {}", id.2)
            };
            errors.push(o.diag(format!(
                "duplicate object {}/{}{place} (apiVersion {}): first defined at {file}:{line}",
                id.1, id.3, id.0,
            )));
            continue;
        }
        seen.insert(id, (&o.file, o.line));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// JSON with object keys sorted at every level and no insignificant whitespace.
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(m) => {
            // Already in key order: see `yaml::tests::map_iterates_in_key_order`.
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // (Serialising a `&str` cannot fail.)
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, v);
            }
            out.push(']');
        }
        scalar => crate::yaml::push_display(out, scalar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(file: &str, line: u32, v: Value) -> Object {
        Object {
            file: file.into(),
            line,
            value: v,
        }
    }

    #[test]
    fn orders_namespaces_first_then_by_identity() {
        let r = finish(vec![
            obj(
                "b.yaml",
                1,
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}}),
            ),
            obj(
                "a.yaml",
                1,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "z"}}),
            ),
            obj(
                "c.yaml",
                1,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}),
            ),
        ])
        .expect("renders");
        let kinds: Vec<&str> = r.objects.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds, vec!["Namespace", "ConfigMap", "Deployment"]);
        assert!(
            r.manifest
                .starts_with("---\napiVersion: v1\nkind: Namespace\n")
        );
        assert_eq!(r.digest, ContentDigest::of(r.manifest.as_bytes()));
    }

    #[test]
    fn duplicates_name_both_places() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}});
        let errs =
            finish(vec![obj("a.yaml", 3, cm.clone()), obj("b.yaml", 7, cm)]).expect_err("dup");
        assert_eq!(
            errs[0].to_string(),
            "b.yaml:7: duplicate object ConfigMap/x in namespace n (apiVersion v1): first defined at a.yaml:3"
        );
    }

    #[test]
    fn objects_without_identity_are_errors() {
        let errs = finish(vec![obj("a.yaml", 2, json!({"kind": "ConfigMap"}))]).expect_err("bad");
        assert_eq!(
            errs[0].to_string(),
            "a.yaml:2: resource has no apiVersion, metadata.name"
        );
    }
}
