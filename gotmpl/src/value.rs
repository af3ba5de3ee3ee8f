//! `Value`: the data a template sees, shaped like the Go values Helm hands to
//! `text/template` (`map[string]interface{}`, `[]interface{}`, float64 numbers), plus
//! `Object` for the few Go values that carry methods (`.Files`, `.Capabilities.APIVersions`,
//! `time.Time`). Owns Go's truthiness and Go's `%v` formatting of values; nothing here
//! evaluates templates.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::gofmt::format_float_v;

/// A Go value as templates see it. Maps are sorted by key (Go ranges maps in key order).
///
/// Lists are behind `Arc` so that passing `.Values` subtrees around, which templates do on
/// every field access, is a pointer copy. Maps are shared and mutable, as Go maps are:
/// `set $d "k" v` changes `$d` everywhere it is referenced (charts rely on this).
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// Go's untyped `nil` (a missing map key, a `null` in values).
    #[default]
    Nil,
    Bool(bool),
    /// Go's `int`/`int64` (template literals, `len`, Sprig's integer math).
    Int(i64),
    /// Go's `float64` (every number read from values YAML or JSON).
    Float(f64),
    String(Arc<str>),
    List(Arc<Vec<Value>>),
    Map(Map),
    /// A Go value with methods or struct fields (`.Files`, `.Capabilities.APIVersions`, ...).
    Object(Arc<dyn Object>),
}

/// A Go value with methods: what a template may call on it, and how it prints.
///
/// `.Foo` on an object first asks `call("Foo", [])`-style methods, then `field("Foo")`; both
/// return `None` when the object has no such member, and the engine then reports Go's "can't
/// evaluate field" error.
pub trait Object: fmt::Debug + Send + Sync {
    /// The Go type name, as `typeOf` and error messages print it (e.g. `engine.files`).
    fn type_name(&self) -> &str;
    /// A struct field or map entry named `name`.
    fn field(&self, _name: &str) -> Option<Value> {
        None
    }
    /// Calls method `name` with `args`; `None` if there is no such method.
    fn call(&self, _name: &str, _args: &[Value]) -> Option<Result<Value, String>> {
        None
    }
    /// How `{{ . }}` and `%v` print it (Go's `String()` method or struct formatting).
    fn display(&self) -> String;
    /// For Go maps and slices with methods (`.Files`, `APIVersions`): the (key or index,
    /// element) pairs `range` visits, in order. `None` for structs.
    fn entries(&self) -> Option<Vec<(Value, Value)>> {
        None
    }
    /// Go truthiness (structs are always true; non-nil slices/maps by length).
    fn truth(&self) -> bool {
        true
    }
    /// The value as plain data, for `toYaml`/`toJson`/`deepCopy`.
    fn to_data(&self) -> Value {
        Value::string(self.display())
    }
    /// Lets typed helpers (dates) find their own objects again.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl Value {
    pub fn string(s: impl Into<Arc<str>>) -> Value {
        Value::String(s.into())
    }

    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Arc::new(items))
    }

    pub fn map(entries: BTreeMap<String, Value>) -> Value {
        Value::Map(Map::new(entries))
    }

    pub fn object(o: impl Object + 'static) -> Value {
        Value::Object(Arc::new(o))
    }

    /// Converts JSON as Go's `encoding/json` decodes it into `interface{}`: every number
    /// becomes a float64. This is how Helm reads values (YAML is turned into JSON first).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Value::string(s.clone()),
            serde_json::Value::Array(a) => Value::list(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(m) => Value::map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Reads a values file as Helm does (`sigs.k8s.io/yaml`: YAML to JSON to Go), so numbers
    /// are float64 and `null` is nil. An empty document is an empty map.
    pub fn from_yaml_values(text: &str) -> Result<Value, String> {
        let json = crate::yaml::parse_yaml(text)?;
        Ok(match json {
            serde_json::Value::Null => Value::map(BTreeMap::new()),
            other => Value::from_json(&other),
        })
    }

    /// The JSON form, as `encoding/json` would marshal it (objects as their data).
    pub fn to_json(&self) -> serde_json::Value {
        self.to_json_at(&Walk::new(), 0)
    }

    /// A map made to contain itself (`set $d "self" $d`) ends in `null` at the walk's limit.
    fn to_json_at(&self, walk: &Walk, depth: usize) -> serde_json::Value {
        if !walk.enter(depth) {
            return serde_json::Value::Null;
        }
        match self {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    serde_json::Value::from(*f as i64)
                } else {
                    serde_json::Number::from_f64(*f)
                        .map(serde_json::Value::Number)
                        .unwrap_or(serde_json::Value::Null)
                }
            }
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::List(l) => {
                serde_json::Value::Array(l.iter().map(|v| v.to_json_at(walk, depth + 1)).collect())
            }
            Value::Map(m) => serde_json::Value::Object(
                m.snapshot()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json_at(walk, depth + 1)))
                    .collect(),
            ),
            Value::Object(o) => o.to_data().to_json_at(walk, depth + 1),
        }
    }

    /// Go's truth for `if`, `with`, `and`, `or`, `not`.
    pub fn truth(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Object(o) => o.truth(),
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Go's type name of the value, as `%T`, `typeOf` and error messages print it.
    pub fn type_name(&self) -> &str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::String(_) => "string",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
            Value::Object(o) => o.type_name(),
        }
    }

    /// Go's `reflect.Kind` name, as `kindOf` prints it.
    pub fn kind_name(&self) -> &str {
        match self {
            Value::Nil => "invalid",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::String(_) => "string",
            Value::List(_) => "slice",
            Value::Map(_) => "map",
            Value::Object(_) => "struct",
        }
    }

    /// Objects as plain data; everything else unchanged.
    pub fn to_data(&self) -> Value {
        match self {
            Value::Object(o) => o.to_data(),
            other => other.clone(),
        }
    }
}

impl PartialEq for Value {
    /// Deep equality as Go's `reflect.DeepEqual` sees these values (int and float differ).
    fn eq(&self, other: &Value) -> bool {
        self.eq_walk(other, &Walk::new(), 0)
    }
}

impl Value {
    /// Deep equality within a walk's limits (beyond them, values count as different).
    fn eq_walk(&self, other: &Value, walk: &Walk, depth: usize) -> bool {
        if !walk.enter(depth) {
            return false;
        }
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.eq_walk(y, walk, depth + 1))
            }
            (Value::Map(a), Value::Map(b)) => {
                if a.ptr_eq(b) {
                    return true;
                }
                let (a, b) = (a.snapshot(), b.snapshot());
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((ka, va), (kb, vb))| ka == kb && va.eq_walk(vb, walk, depth + 1))
            }
            (Value::Object(a), Value::Object(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// How deep printing and encoding recurse: maps can be made to contain themselves with
/// `set`, and Go would overflow its stack; we print `...` instead.
pub(crate) const MAX_PRINT_DEPTH: usize = 256;

/// How many nodes one walk over a value (printing, encoding, comparing, copying) may
/// visit: maps shared under several keys make a value of a few lines print
/// exponentially, so depth alone does not bound the work.
const MAX_WALK_NODES: usize = 200_000;

thread_local! {
    /// Nodes walked on this thread since the executor last charged them to its step
    /// budget: walks happen inside `Display` and friends, which cannot see the budget.
    static WALKED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Takes the count of nodes walked since the last call.
pub(crate) fn take_walked() -> u64 {
    WALKED.with(|w| w.replace(0))
}

/// Bounds one walk over a value, in depth and in nodes visited.
pub(crate) struct Walk {
    left: std::cell::Cell<usize>,
}

impl Walk {
    pub fn new() -> Walk {
        Walk {
            left: std::cell::Cell::new(MAX_WALK_NODES),
        }
    }

    /// Whether the walk may visit one more node at `depth`.
    pub fn enter(&self, depth: usize) -> bool {
        let left = self.left.get();
        if depth > MAX_PRINT_DEPTH || left == 0 {
            self.left.set(0);
            return false;
        }
        self.left.set(left - 1);
        WALKED.with(|w| w.set(w.get() + 1));
        true
    }
}

/// Go's `%v` (and `fmt.Sprint`) formatting: `map[a:1 b:2]`, `[a b]`, `1e+06`, `<nil>`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_walk(f, &Walk::new(), 0)
    }
}

impl Value {
    fn fmt_walk(&self, f: &mut fmt::Formatter<'_>, walk: &Walk, depth: usize) -> fmt::Result {
        if !walk.enter(depth) {
            return f.write_str("...");
        }
        match self {
            Value::Nil => f.write_str("<nil>"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&format_float_v(*x)),
            Value::String(s) => f.write_str(s),
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    v.fmt_walk(f, walk, depth + 1)?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("map[")?;
                for (i, (k, v)) in m.read().iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{k}:")?;
                    v.fmt_walk(f, walk, depth + 1)?;
                }
                f.write_str("]")
            }
            Value::Object(o) => f.write_str(&o.display()),
        }
    }
}

/// A Go map: shared by reference, mutable through `set`/`unset`/`merge`, iterated in key
/// order. Never hold a guard across a call that may touch another map (`merge $d $d`):
/// take a [`Map::snapshot`] first.
#[derive(Clone, Debug, Default)]
pub struct Map(Arc<RwLock<BTreeMap<String, Value>>>);

impl Map {
    pub fn new(entries: BTreeMap<String, Value>) -> Map {
        Map(Arc::new(RwLock::new(entries)))
    }

    /// Read access. A poisoned lock (a panic elsewhere) still holds valid data.
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Value>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Value>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.read().get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// A copy of the entries (values still share their own maps).
    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        self.read().clone()
    }

    pub fn ptr_eq(&self, other: &Map) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::string(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::string(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Float(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_go_prints_them() {
        let m = Value::from_json(&serde_json::json!({"b": 2, "a": [1, "x", null], "c": 1000000}));
        assert_eq!(m.to_string(), "map[a:[1 x <nil>] b:2 c:1e+06]");
    }

    #[test]
    fn truthiness_follows_go() {
        assert!(!Value::Nil.truth());
        assert!(!Value::Float(0.0).truth());
        assert!(Value::string("0").truth());
        assert!(!Value::list(vec![]).truth());
    }
}
