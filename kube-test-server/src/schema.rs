//! Just enough schema to merge lists the way the API server does: which lists are
//! atomic, which are sets, and which are maps keyed by some fields.
//!
//! Built-in kinds use a hand-written table of the common associative lists
//! (`containers` by `name`, container `ports` by `containerPort`+`protocol`, ...),
//! taken from the `x-kubernetes-list-type`/`x-kubernetes-list-map-keys` and
//! `patchMergeKey` markers of the Kubernetes API reference. CRDs use their own
//! `openAPIV3Schema` markers. Anything else is "deduced": maps are granular,
//! lists are atomic (the structured-merge-diff default).
//! See <https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy>.

use std::sync::Arc;

use serde_json::Value;

/// How a list merges.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// Replaced as a whole and owned as one field.
    Atomic,
    /// A set of scalars, merged by value.
    Set,
    /// Items identified by these key fields.
    Map(Vec<String>),
}

/// A position in an object's schema.
#[derive(Debug, Clone)]
pub enum Schema {
    /// A built-in kind: the field names from the root (`"[]"` marks a list item).
    Builtin { kind: Arc<str>, trail: Vec<String> },
    /// A node of a CRD's `openAPIV3Schema`: root plus JSON pointer.
    OpenApi { root: Arc<Value>, pointer: String },
    /// No schema: maps granular, lists atomic.
    Deduced,
}

impl Schema {
    /// The root schema of an object of `kind` (with the CRD schema when there is one).
    pub fn root(kind: &str, crd_schema: Option<Arc<Value>>) -> Schema {
        match crd_schema {
            Some(root) => Schema::OpenApi {
                root,
                pointer: String::new(),
            },
            None => Schema::Builtin {
                kind: Arc::from(kind),
                trail: vec![],
            },
        }
    }

    fn node(&self) -> Option<&Value> {
        match self {
            Schema::OpenApi { root, pointer } => root.pointer(pointer),
            _ => None,
        }
    }

    /// The schema of a map field.
    pub fn field(&self, name: &str) -> Schema {
        match self {
            Schema::Builtin { kind, trail } => {
                let mut trail = trail.clone();
                trail.push(name.to_string());
                Schema::Builtin {
                    kind: kind.clone(),
                    trail,
                }
            }
            Schema::OpenApi { root, pointer } => {
                if pointer.is_empty() && name == "metadata" {
                    return Schema::Builtin {
                        kind: Arc::from(""),
                        trail: vec!["metadata".to_string()],
                    };
                }
                let escaped = name.replace('~', "~0").replace('/', "~1");
                let prop = format!("{pointer}/properties/{escaped}");
                if root.pointer(&prop).is_some() {
                    return Schema::OpenApi {
                        root: root.clone(),
                        pointer: prop,
                    };
                }
                let extra = format!("{pointer}/additionalProperties");
                if root.pointer(&extra).is_some_and(Value::is_object) {
                    return Schema::OpenApi {
                        root: root.clone(),
                        pointer: extra,
                    };
                }
                Schema::Deduced
            }
            Schema::Deduced => Schema::Deduced,
        }
    }

    /// The schema of a list's items.
    pub fn item(&self) -> Schema {
        match self {
            Schema::Builtin { .. } => self.field("[]"),
            Schema::OpenApi { root, pointer } => {
                let p = format!("{pointer}/items");
                if root.pointer(&p).is_some() {
                    Schema::OpenApi {
                        root: root.clone(),
                        pointer: p,
                    }
                } else {
                    Schema::Deduced
                }
            }
            Schema::Deduced => Schema::Deduced,
        }
    }

    /// How the list at this position merges.
    pub fn list_type(&self) -> ListType {
        match self {
            Schema::Builtin { kind, trail } => builtin_list_type(kind, trail),
            Schema::OpenApi { .. } => {
                let Some(node) = self.node() else {
                    return ListType::Atomic;
                };
                match node["x-kubernetes-list-type"].as_str() {
                    Some("set") => ListType::Set,
                    Some("map") => {
                        let keys: Vec<String> = node["x-kubernetes-list-map-keys"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|k| k.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if keys.is_empty() {
                            ListType::Atomic
                        } else {
                            ListType::Map(keys)
                        }
                    }
                    _ => ListType::Atomic,
                }
            }
            Schema::Deduced => ListType::Atomic,
        }
    }

    /// Whether the map at this position is replaced and owned as a whole.
    pub fn map_is_atomic(&self) -> bool {
        match self {
            Schema::OpenApi { .. } => self
                .node()
                .is_some_and(|n| n["x-kubernetes-map-type"] == "atomic"),
            // Label selectors are `+structType=atomic` / `+mapType=atomic` in the API.
            Schema::Builtin { trail, .. } => trail.last().is_some_and(|l| {
                matches!(l.as_str(), "selector" | "podSelector" | "namespaceSelector")
            }),
            Schema::Deduced => false,
        }
    }

    /// The default of a list-map key field that the client may omit
    /// (`protocol: TCP` on ports), used when identifying list items.
    pub fn key_default(&self, key: &str) -> Option<Value> {
        match self {
            Schema::Builtin { .. } if key == "protocol" => Some(Value::String("TCP".into())),
            Schema::OpenApi { .. } => self
                .item()
                .node()
                .and_then(|n| n.pointer(&format!("/properties/{key}/default")).cloned()),
            _ => None,
        }
    }
}

fn builtin_list_type(kind: &str, trail: &[String]) -> ListType {
    let n = trail.len();
    let Some(last) = trail.last().map(String::as_str) else {
        return ListType::Atomic;
    };
    let parent = if n >= 2 { trail[n - 2].as_str() } else { "" };
    let keys = |k: &[&str]| ListType::Map(k.iter().map(|s| s.to_string()).collect());
    match last {
        "finalizers" if n == 2 && parent == "metadata" => ListType::Set,
        "ownerReferences" if parent == "metadata" => keys(&["uid"]),
        "managedFields" => ListType::Atomic,
        "containers" | "initContainers" | "ephemeralContainers" => keys(&["name"]),
        "env" if parent == "[]" => keys(&["name"]),
        "ports" if kind == "Service" && n == 2 && parent == "spec" => keys(&["port", "protocol"]),
        "ports" if parent == "[]" && n >= 3 && trail[n - 3].ends_with("ontainers") => {
            keys(&["containerPort", "protocol"])
        }
        "volumes" if parent == "spec" => keys(&["name"]),
        "volumeMounts" => keys(&["mountPath"]),
        "volumeDevices" => keys(&["devicePath"]),
        "imagePullSecrets" => keys(&["name"]),
        "conditions" if trail.first().is_some_and(|f| f == "status") => keys(&["type"]),
        "hostAliases" => keys(&["ip"]),
        "topologySpreadConstraints" => keys(&["topologyKey", "whenUnsatisfiable"]),
        "resourceClaims" | "schedulingGates" if parent == "spec" => keys(&["name"]),
        _ => ListType::Atomic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn built_in_container_lists_are_keyed_like_the_api_reference() {
        let root = Schema::root("Deployment", None);
        let containers = root
            .field("spec")
            .field("template")
            .field("spec")
            .field("containers");
        assert_eq!(containers.list_type(), ListType::Map(vec!["name".into()]));
        assert_eq!(
            containers.item().field("ports").list_type(),
            ListType::Map(vec!["containerPort".into(), "protocol".into()])
        );
        assert_eq!(
            containers.item().field("args").list_type(),
            ListType::Atomic
        );
    }

    #[test]
    fn crd_schemas_declare_their_own_list_types() {
        let root = Arc::new(
            json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"items": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["id"], "items": {"type": "object"}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set"}}}}}),
        );
        let s = Schema::root("Widget", Some(root));
        assert_eq!(
            s.field("spec").field("items").list_type(),
            ListType::Map(vec!["id".into()])
        );
        assert_eq!(s.field("spec").field("tags").list_type(), ListType::Set);
        assert_eq!(s.field("spec").field("other").list_type(), ListType::Atomic);
        assert_eq!(
            s.field("metadata").field("finalizers").list_type(),
            ListType::Set
        );
    }
}
