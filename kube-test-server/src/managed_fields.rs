//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! A simplified port of structured-merge-diff's `Updater`: [`apply`] merges an
//! applied configuration into the live object, prunes what the manager stopped
//! applying (unless someone else owns it), and reports conflicts with other
//! managers unless forced; [`record_update`] gives an `Update` manager the fields a
//! PUT or non-apply PATCH changed, taking them from others. See
//! <https://kubernetes.io/docs/reference/using-api/server-side-apply/>.
//! Pure functions over JSON; no storage.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::fieldpath::{FieldSet, Node, Path, PathElement, collect, item_key, item_matches};
use crate::meta::now_rfc3339;
use crate::schema::{ListType, Schema};

/// `Apply` or `Update`, the `operation` of a managedFields entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerEntry {
    pub manager: String,
    pub operation: Operation,
    /// `""` for the main resource, `"status"` for the status subresource.
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub set: FieldSet,
}

impl ManagerEntry {
    fn is(&self, manager: &str, op: Operation, subresource: &str) -> bool {
        self.manager == manager && self.operation == op && self.subresource == subresource
    }
}

/// All entries of one object, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Managers(pub Vec<ManagerEntry>);

impl Managers {
    /// Reads `metadata.managedFields`; entries that cannot be read are dropped.
    pub fn from_object(obj: &Value) -> Managers {
        let Some(entries) = obj["metadata"]["managedFields"].as_array() else {
            return Managers::default();
        };
        let mut out = Vec::new();
        for e in entries {
            let operation = match e["operation"].as_str() {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                _ => continue,
            };
            let Ok(set) = FieldSet::from_fields_v1(&e["fieldsV1"]) else {
                continue;
            };
            out.push(ManagerEntry {
                manager: e["manager"].as_str().unwrap_or_default().to_string(),
                operation,
                subresource: e["subresource"].as_str().unwrap_or_default().to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                time: e["time"].as_str().unwrap_or_default().to_string(),
                set,
            });
        }
        Managers(out)
    }

    /// The `metadata.managedFields` value.
    pub fn to_value(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|e| {
                    let mut v = json!({
                        "manager": e.manager,
                        "operation": e.operation.as_str(),
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": e.set.to_fields_v1(),
                    });
                    if !e.subresource.is_empty() {
                        v["subresource"] = json!(e.subresource);
                    }
                    v
                })
                .collect(),
        )
    }

    fn entry_mut(
        &mut self,
        manager: &str,
        op: Operation,
        subresource: &str,
        api_version: &str,
    ) -> &mut ManagerEntry {
        let idx = match self.0.iter().position(|e| e.is(manager, op, subresource)) {
            Some(i) => i,
            None => {
                self.0.push(ManagerEntry {
                    manager: manager.to_string(),
                    operation: op,
                    subresource: subresource.to_string(),
                    api_version: api_version.to_string(),
                    time: String::new(),
                    set: FieldSet::default(),
                });
                self.0.len() - 1
            }
        };
        let e = &mut self.0[idx];
        e.api_version = api_version.to_string();
        e.time = now_rfc3339();
        e
    }

    fn drop_empty(&mut self) {
        self.0.retain(|e| !e.set.is_empty());
    }
}

/// Which part of the object a request may write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scope {
    /// The main resource; `status_subresource` says `.status` belongs to `/status`.
    Main { status_subresource: bool },
    /// The `/status` subresource: only `.status`.
    Status,
}

/// Whether a manager can own `path` in `scope` (identity and server-set metadata never are).
pub fn owned_path(path: &[PathElement], scope: Scope) -> bool {
    let field = |i: usize| match path.get(i) {
        Some(PathElement::Field(s)) => Some(s.as_str()),
        _ => None,
    };
    const SERVER_SET: &[&str] = &[
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ];
    let server_set = match field(0) {
        Some("apiVersion" | "kind") => true,
        Some("metadata") => path.len() == 1 || field(1).is_some_and(|f| SERVER_SET.contains(&f)),
        _ => false,
    };
    if server_set {
        return false;
    }
    match scope {
        Scope::Main {
            status_subresource: true,
        } => field(0) != Some("status"),
        Scope::Main { .. } => true,
        Scope::Status => field(0) == Some("status"),
    }
}

fn paths(obj: &Value, schema: &Schema, scope: Scope) -> BTreeMap<Path, Node> {
    let mut all = BTreeMap::new();
    collect(obj, schema, &mut Vec::new(), &mut all);
    all.retain(|p, _| owned_path(p, scope));
    all
}

/// Differences between two objects, as sets of paths.
#[derive(Debug, Default)]
struct Comparison {
    added: BTreeSet<Path>,
    removed: BTreeSet<Path>,
    modified: BTreeSet<Path>,
}

fn compare(old: &Value, new: &Value, schema: &Schema, scope: Scope) -> Comparison {
    let (a, b) = (paths(old, schema, scope), paths(new, schema, scope));
    let mut c = Comparison::default();
    for (p, n) in &b {
        match a.get(p) {
            None => {
                c.added.insert(p.clone());
            }
            Some(o) if o != n => {
                c.modified.insert(p.clone());
            }
            Some(_) => {}
        }
    }
    for p in a.keys() {
        if !b.contains_key(p) {
            c.removed.insert(p.clone());
        }
    }
    c
}

/// Gives the `Update` manager the fields that changed from `old` to `new`, taking
/// them from every other manager, and forgets removed fields everywhere.
pub fn record_update(
    managers: &mut Managers,
    old: Option<&Value>,
    new: &Value,
    schema: &Schema,
    scope: Scope,
    who: &Who<'_>,
) {
    let empty = Value::Object(Map::new());
    let c = compare(old.unwrap_or(&empty), new, schema, scope);
    let changed: BTreeSet<Path> = c.added.union(&c.modified).cloned().collect();
    if changed.is_empty() && c.removed.is_empty() {
        return;
    }
    for e in managers.0.iter_mut() {
        if !e.is(who.manager, Operation::Update, who.subresource) {
            e.set
                .0
                .retain(|p| !changed.contains(p) && !c.removed.contains(p));
        }
    }
    if !changed.is_empty() {
        let e = managers.entry_mut(
            who.manager,
            Operation::Update,
            who.subresource,
            who.api_version,
        );
        e.set.0.retain(|p| !c.removed.contains(p));
        e.set.0.extend(changed);
    } else if let Some(e) = managers
        .0
        .iter_mut()
        .find(|e| e.is(who.manager, Operation::Update, who.subresource))
    {
        e.set.0.retain(|p| !c.removed.contains(p));
    }
    managers.drop_empty();
}

/// The manager making a request.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: &'a str,
}

/// A field another manager owns and the apply would change: `(manager, apiVersion, path)`.
pub type Conflict = (String, String, Path);

/// Server-side apply of `config` (already stripped to the writable scope) onto
/// `live`. Returns the new object and managers, or the conflicts when not forced.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    managers: &Managers,
    schema: &Schema,
    scope: Scope,
    who: &Who<'_>,
    force: bool,
) -> Result<(Value, Managers), Vec<Conflict>> {
    let empty = Value::Object(Map::new());
    let live = live.unwrap_or(&empty);
    let mut managers = managers.clone();

    let config_set: BTreeSet<Path> = paths(config, schema, scope)
        .into_iter()
        .filter(|(_, n)| *n != Node::Map)
        .map(|(p, _)| p)
        .collect();
    let prev: BTreeSet<Path> = managers
        .0
        .iter()
        .find(|e| e.is(who.manager, Operation::Apply, who.subresource))
        .map(|e| e.set.0.clone())
        .unwrap_or_default();
    let others: BTreeSet<Path> = managers
        .0
        .iter()
        .filter(|e| !e.is(who.manager, Operation::Apply, who.subresource))
        .flat_map(|e| e.set.0.iter().cloned())
        .collect();

    let mut new = merge(live, config, schema);
    let dropped: BTreeSet<&Path> = prev
        .iter()
        .filter(|p| !config_set.contains(*p) && !others.contains(*p))
        .collect();
    // Removing an item removes its children; removing a key field first would
    // change the item's identity, so only the outermost dropped paths are removed.
    let to_remove: Vec<&Path> = dropped
        .iter()
        .filter(|p| !(1..p.len()).any(|l| dropped.contains(&p[..l].to_vec())))
        .copied()
        .collect();
    for p in &to_remove {
        remove_path(&mut new, p, schema);
    }
    for p in &to_remove {
        for len in (1..p.len()).rev() {
            let ancestor = &p[..len];
            let emptied = get_path(&new, ancestor, schema)
                .is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
            if emptied && get_path(config, ancestor, schema).is_none() {
                remove_path(&mut new, ancestor, schema);
            } else {
                break;
            }
        }
    }

    let c = compare(live, &new, schema, scope);
    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, BTreeSet<Path>)> = Vec::new();
    for (i, e) in managers.0.iter().enumerate() {
        if e.is(who.manager, Operation::Apply, who.subresource) {
            continue;
        }
        let hit: BTreeSet<Path> = e
            .set
            .0
            .iter()
            .filter(|p| c.modified.contains(*p) || c.added.contains(*p))
            .cloned()
            .collect();
        for p in &hit {
            conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
        }
        if !hit.is_empty() {
            taken.push((i, hit));
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }
    for (i, hit) in taken {
        managers.0[i].set.0.retain(|p| !hit.contains(p));
    }
    for e in managers.0.iter_mut() {
        e.set.0.retain(|p| !c.removed.contains(p));
    }
    let e = managers.entry_mut(
        who.manager,
        Operation::Apply,
        who.subresource,
        who.api_version,
    );
    e.set = FieldSet(config_set);
    managers.drop_empty();
    Ok((new, managers))
}

/// Merges an applied configuration into the live object: maps field by field,
/// associative lists by key, sets by value, everything else replaced.
pub fn merge(live: &Value, config: &Value, schema: &Schema) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !schema.map_is_atomic() => {
            let mut out = l.clone();
            for (k, cv) in c {
                let nv = match l.get(k) {
                    Some(lv) => merge(lv, cv, &schema.field(k)),
                    None => cv.clone(),
                };
                out.insert(k.clone(), nv);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match schema.list_type() {
            ListType::Atomic => config.clone(),
            ListType::Set => {
                let mut out = l.clone();
                for x in c {
                    if !out.contains(x) {
                        out.push(x.clone());
                    }
                }
                Value::Array(out)
            }
            ListType::Map(keys) => {
                let mut out = l.clone();
                let item_schema = schema.item();
                for ci in c {
                    let k = item_key(ci, &keys, schema);
                    match out.iter().position(|li| item_key(li, &keys, schema) == k) {
                        Some(i) => out[i] = merge(&out[i], ci, &item_schema),
                        None => out.push(ci.clone()),
                    }
                }
                Value::Array(out)
            }
        },
        _ => config.clone(),
    }
}

fn list_keys(schema: &Schema) -> Vec<String> {
    match schema.list_type() {
        ListType::Map(k) => k,
        _ => vec![],
    }
}

/// The value at `path`, if any.
pub fn get_path<'v>(v: &'v Value, path: &[PathElement], schema: &Schema) -> Option<&'v Value> {
    let Some((pe, rest)) = path.split_first() else {
        return Some(v);
    };
    match (pe, v) {
        (PathElement::Field(f), Value::Object(m)) => get_path(m.get(f)?, rest, &schema.field(f)),
        (PathElement::Key(_) | PathElement::Value(_), Value::Array(items)) => {
            let keys = list_keys(schema);
            let item = items
                .iter()
                .find(|it| item_matches(it, pe, &keys, schema))?;
            get_path(item, rest, &schema.item())
        }
        (PathElement::Index(i), Value::Array(items)) => {
            get_path(items.get(*i)?, rest, &schema.item())
        }
        _ => None,
    }
}

/// Removes the value at `path`; returns whether something was removed.
pub fn remove_path(v: &mut Value, path: &[PathElement], schema: &Schema) -> bool {
    let Some((pe, rest)) = path.split_first() else {
        return false;
    };
    match (pe, v) {
        (PathElement::Field(f), Value::Object(m)) => {
            if rest.is_empty() {
                m.remove(f).is_some()
            } else {
                let child_schema = schema.field(f);
                m.get_mut(f)
                    .is_some_and(|c| remove_path(c, rest, &child_schema))
            }
        }
        (PathElement::Key(_) | PathElement::Value(_), Value::Array(items)) => {
            let keys = list_keys(schema);
            let Some(i) = items
                .iter()
                .position(|it| item_matches(it, pe, &keys, schema))
            else {
                return false;
            };
            if rest.is_empty() {
                items.remove(i);
                true
            } else {
                remove_path(&mut items[i], rest, &schema.item())
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main {
        status_subresource: false,
    };

    fn who(m: &str) -> Who<'_> {
        Who {
            manager: m,
            subresource: "",
            api_version: "v1",
        }
    }

    fn cm() -> Schema {
        Schema::root("ConfigMap", None)
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"a": "1", "b": "2"}});
        let (obj, m) = apply(
            None,
            &first,
            &Managers::default(),
            &cm(),
            MAIN,
            &who("m1"),
            false,
        )
        .expect("no conflict");
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"a": "1"}});
        let (obj, m) =
            apply(Some(&obj), &second, &m, &cm(), MAIN, &who("m1"), false).expect("no conflict");
        assert_eq!(obj["data"], json!({"a": "1"}));
        assert!(obj["metadata"].get("labels").is_none(), "{obj}");
        assert_eq!(m.0.len(), 1);
    }

    #[test]
    fn fields_shared_with_another_manager_survive_when_one_drops_them() {
        let cfg = json!({"data": {"a": "1"}});
        let (obj, m) = apply(
            None,
            &cfg,
            &Managers::default(),
            &cm(),
            MAIN,
            &who("m1"),
            false,
        )
        .expect("ok");
        let (obj, m) = apply(Some(&obj), &cfg, &m, &cm(), MAIN, &who("m2"), false)
            .expect("same value is shared, not a conflict");
        let (obj, _) =
            apply(Some(&obj), &json!({}), &m, &cm(), MAIN, &who("m1"), false).expect("ok");
        assert_eq!(obj["data"]["a"], "1");
    }

    #[test]
    fn changing_a_field_another_manager_owns_conflicts_unless_forced() {
        let (obj, m) = apply(
            None,
            &json!({"data": {"a": "1"}}),
            &Managers::default(),
            &cm(),
            MAIN,
            &who("m1"),
            false,
        )
        .expect("ok");
        let change = json!({"data": {"a": "2"}});
        let err =
            apply(Some(&obj), &change, &m, &cm(), MAIN, &who("m2"), false).expect_err("conflict");
        assert_eq!(err[0].0, "m1");
        let (obj, m) =
            apply(Some(&obj), &change, &m, &cm(), MAIN, &who("m2"), true).expect("forced");
        assert_eq!(obj["data"]["a"], "2");
        assert_eq!(m.0.len(), 1, "m1 lost its only field: {m:?}");
        assert_eq!(m.0[0].manager, "m2");
    }

    #[test]
    fn an_update_takes_ownership_of_what_it_changed() {
        let (obj, mut m) = apply(
            None,
            &json!({"data": {"a": "1", "b": "1"}}),
            &Managers::default(),
            &cm(),
            MAIN,
            &who("m1"),
            false,
        )
        .expect("ok");
        let mut edited = obj.clone();
        edited["data"]["a"] = json!("changed");
        record_update(&mut m, Some(&obj), &edited, &cm(), MAIN, &who("editor"));
        let editor = m.0.iter().find(|e| e.manager == "editor").expect("entry");
        assert_eq!(editor.set.to_fields_v1(), json!({"f:data": {"f:a": {}}}));
        let err = apply(
            Some(&edited),
            &json!({"data": {"a": "1", "b": "1"}}),
            &m,
            &cm(),
            MAIN,
            &who("m1"),
            false,
        )
        .expect_err("the editor now owns data.a");
        assert_eq!(crate::fieldpath::display_path(&err[0].2), ".data.a");
    }

    #[test]
    fn dropped_list_items_are_pruned_by_key() {
        let schema = Schema::root("Deployment", None);
        let cfg = |names: &[&str]| {
            let cs: Vec<Value> = names
                .iter()
                .map(|n| json!({"name": n, "image": "img"}))
                .collect();
            json!({"spec": {"template": {"spec": {"containers": cs}}}})
        };
        let (obj, m) = apply(
            None,
            &cfg(&["a", "b"]),
            &Managers::default(),
            &schema,
            MAIN,
            &who("m"),
            false,
        )
        .expect("ok");
        let (obj, _) = apply(
            Some(&obj),
            &cfg(&["b"]),
            &m,
            &schema,
            MAIN,
            &who("m"),
            false,
        )
        .expect("ok");
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "img"}])
        );
    }
}
