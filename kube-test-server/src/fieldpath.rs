//! Field paths and field sets, and their `FieldsV1` encoding in `metadata.managedFields`.
//!
//! A path is a list of [`PathElement`]s (`f:name`, `k:{keys}`, `v:value`, `i:index`).
//! [`collect`] walks an object with its [`Schema`] and lists every path it holds,
//! which is what ownership and comparison work on. See
//! <https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management>.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::schema::{ListType, Schema};

/// One step into an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A map field, `f:name`.
    Field(String),
    /// An associative-list item, `k:{"name":"x"}` (canonical JSON, sorted keys).
    Key(String),
    /// A set-list item, `v:"x"` (canonical JSON).
    Value(String),
    /// A positional list item, `i:0`.
    Index(usize),
}

pub type Path = Vec<PathElement>;

/// What [`collect`] found at a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar, atomic list or atomic map, compared by value.
    Leaf(Value),
    /// An associative- or set-list item (owned as a member, compared through its children).
    Item,
    /// A granular map (never owned by Apply; Update owns new ones as `.`).
    Map,
}

/// Every path of `value` below `path`, with what lies there.
pub fn collect(value: &Value, schema: &Schema, path: &mut Path, out: &mut BTreeMap<Path, Node>) {
    match value {
        Value::Object(map) if !schema.map_is_atomic() => {
            if !path.is_empty() {
                out.insert(path.clone(), Node::Map);
            }
            for (k, v) in map {
                path.push(PathElement::Field(k.clone()));
                collect(v, &schema.field(k), path, out);
                path.pop();
            }
        }
        Value::Array(items) => match schema.list_type() {
            ListType::Atomic => {
                out.insert(path.clone(), Node::Leaf(value.clone()));
            }
            ListType::Set => {
                for item in items {
                    path.push(PathElement::Value(item.to_string()));
                    out.insert(path.clone(), Node::Item);
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                let item_schema = schema.item();
                for item in items {
                    path.push(item_key(item, &keys, schema));
                    out.insert(path.clone(), Node::Item);
                    if let Value::Object(m) = item {
                        for (k, v) in m {
                            path.push(PathElement::Field(k.clone()));
                            collect(v, &item_schema.field(k), path, out);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone(), Node::Leaf(value.clone()));
        }
    }
}

/// The `k:` element identifying `item` in an associative list with `keys`.
pub fn item_key(item: &Value, keys: &[String], list_schema: &Schema) -> PathElement {
    let mut m = Map::new();
    for k in keys {
        match item.get(k) {
            Some(v) => {
                m.insert(k.clone(), v.clone());
            }
            None => {
                if let Some(d) = list_schema.key_default(k) {
                    m.insert(k.clone(), d);
                }
            }
        }
    }
    PathElement::Key(Value::Object(m).to_string())
}

/// Whether `item` is the list item that `pe` identifies.
pub fn item_matches(item: &Value, pe: &PathElement, keys: &[String], list_schema: &Schema) -> bool {
    match pe {
        PathElement::Key(_) => item_key(item, keys, list_schema) == *pe,
        PathElement::Value(v) => serde_json::from_str::<Value>(v).is_ok_and(|x| x == *item),
        _ => false,
    }
}

/// A set of paths (the fields one manager owns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet(pub BTreeSet<Path>);

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Decodes a `fieldsV1` object.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let mut set = BTreeSet::new();
        decode(v, &mut Vec::new(), &mut set)?;
        Ok(FieldSet(set))
    }

    /// Encodes as a `fieldsV1` object: members with children carry `".": {}`.
    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Tree {
            member: bool,
            children: BTreeMap<PathElement, Tree>,
        }
        fn encode(t: &Tree) -> Value {
            let mut m = Map::new();
            if t.member && !t.children.is_empty() {
                m.insert(".".to_string(), Value::Object(Map::new()));
            }
            for (pe, child) in &t.children {
                m.insert(encode_element(pe), encode(child));
            }
            Value::Object(m)
        }
        let mut root = Tree::default();
        for path in &self.0 {
            let mut cur = &mut root;
            for pe in path {
                cur = cur.children.entry(pe.clone()).or_default();
            }
            cur.member = !path.is_empty();
        }
        encode(&root)
    }
}

fn decode(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) -> Result<(), String> {
    let Value::Object(map) = v else {
        return Err("fieldsV1 nodes must be objects".into());
    };
    if map.is_empty() && !path.is_empty() {
        out.insert(path.clone());
    }
    for (k, child) in map {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        path.push(decode_element(k)?);
        decode(child, path, out)?;
        path.pop();
    }
    Ok(())
}

fn encode_element(pe: &PathElement) -> String {
    match pe {
        PathElement::Field(f) => format!("f:{f}"),
        PathElement::Key(k) => format!("k:{k}"),
        PathElement::Value(v) => format!("v:{v}"),
        PathElement::Index(i) => format!("i:{i}"),
    }
}

fn decode_element(s: &str) -> Result<PathElement, String> {
    let canonical = |j: &str| -> Result<String, String> {
        serde_json::from_str::<Value>(j)
            .map(|v| v.to_string())
            .map_err(|e| format!("bad fieldsV1 key {s:?}: {e}"))
    };
    match s.split_at_checked(2) {
        Some(("f:", f)) => Ok(PathElement::Field(f.to_string())),
        Some(("k:", k)) => Ok(PathElement::Key(canonical(k)?)),
        Some(("v:", v)) => Ok(PathElement::Value(canonical(v)?)),
        Some(("i:", i)) => i
            .parse()
            .map(PathElement::Index)
            .map_err(|_| format!("bad fieldsV1 index {s:?}")),
        _ => Err(format!("bad fieldsV1 key {s:?}")),
    }
}

/// The path as structured-merge-diff prints it in conflict messages:
/// `.spec.template.spec.containers[name="web"].image`.
pub fn display_path(path: &[PathElement]) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            PathElement::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            PathElement::Key(k) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            PathElement::Value(v) => s.push_str(&format!("[={v}]")),
            PathElement::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trips_and_marks_members_with_children() {
        let v = json!({"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}},
            "f:metadata": {"f:labels": {"f:app": {}}}});
        let set = FieldSet::from_fields_v1(&v).expect("decodes");
        assert_eq!(set.0.len(), 4);
        assert_eq!(set.to_fields_v1(), v);
    }

    #[test]
    fn collect_identifies_list_items_by_key() {
        let obj = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx",
            "ports": [{"containerPort": 80}]}]}}}});
        let mut out = BTreeMap::new();
        collect(
            &obj,
            &Schema::root("Deployment", None),
            &mut Vec::new(),
            &mut out,
        );
        let paths: Vec<String> = out.keys().map(|p| display_path(p)).collect();
        assert!(paths.contains(&".spec.template.spec.containers[name=\"web\"].image".to_string()));
        assert!(paths.contains(
            &".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].containerPort"
                .to_string()
        ));
    }
}
