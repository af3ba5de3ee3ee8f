//! The function table: Go's builtins, Sprig's functions and Helm's, each with the Go
//! parameter types that decide argument conversion errors (`wrong type for value; expected
//! string; got float64`). Implementations live in the submodules by theme; `include` and
//! `tpl` need the template set and are run by the executor.

mod builtin;
mod collections;
mod crypto;
mod date;
mod encoding;
mod math;
mod secrets;
mod semver;
mod strings;
mod url;

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::exec::Budget;
use crate::{Error, Options, Value};

/// A Go parameter type, as far as templates can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Ty {
    /// `interface{}` or `reflect.Value`: anything, nil included.
    Any,
    Str,
    /// `string` for functions over its bytes (`b64enc`, digests): keeps binary strings.
    Bytes,
    Int,
    Float,
    Bool,
    /// `map[string]interface{}`: nil becomes an empty map.
    Map,
}

impl Ty {
    pub fn go_name(self) -> &'static str {
        match self {
            Ty::Any => "interface {}",
            Ty::Str | Ty::Bytes => "string",
            Ty::Int => "int",
            Ty::Float => "float64",
            Ty::Bool => "bool",
            Ty::Map => "map[string]interface {}",
        }
    }
}

/// Converts an evaluated value to parameter type `ty`, as Go's `validateType` does.
pub(crate) fn convert(v: Value, ty: Ty) -> Result<Value, String> {
    if let Value::Object(o) = &v
        && o.type_name() == "string"
    {
        // A binary Go string: functions over bytes keep it, others see its text.
        return Ok(match ty {
            Ty::Bytes | Ty::Any => v,
            _ => Value::string(o.display()),
        });
    }
    let ok = match (&v, ty) {
        (_, Ty::Any) => true,
        (Value::String(_), Ty::Str | Ty::Bytes)
        | (Value::Int(_), Ty::Int)
        | (Value::Float(_), Ty::Float)
        | (Value::Bool(_), Ty::Bool)
        | (Value::Map(_), Ty::Map) => true,
        (Value::Nil, Ty::Map) => return Ok(Value::map(Default::default())),
        (Value::Nil, _) => return Err(format!("invalid value; expected {}", ty.go_name())),
        _ => false,
    };
    if ok {
        Ok(v)
    } else {
        Err(format!(
            "wrong type for value; expected {}; got {}",
            ty.go_name(),
            v.type_name()
        ))
    }
}

/// Why a function call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Go: the function returned an error (or panicked); printed as `error calling NAME: MSG`.
    Msg(String),
    /// Helm's `fail`/`required`.
    Fail(String),
    /// A budget ran out inside the function.
    Budget(String),
    /// `include` failed with this error.
    Inner(Error),
    /// `tpl` failed: Helm's wrapping text, then the error.
    Wrapped(String, Box<Error>),
}

impl From<String> for CallError {
    fn from(m: String) -> CallError {
        CallError::Msg(m)
    }
}

pub(crate) type FnResult = Result<Value, CallError>;

/// What a plain function may use besides its arguments.
pub(crate) struct Ctx<'a> {
    pub budget: &'a Budget,
    pub options: &'a Options,
}

impl Ctx<'_> {
    /// Charges the work of building `n` elements or bytes, and refuses results beyond the
    /// output limit before they are allocated.
    pub fn alloc(&self, n: usize) -> Result<(), CallError> {
        self.budget.check_size(n).map_err(CallError::Budget)?;
        self.budget
            .charge((n / 64) as u64)
            .map_err(CallError::Budget)
    }

    /// [`Ctx::alloc`] for a list of `n` values (counted by their size in memory).
    pub fn alloc_values(&self, n: usize) -> Result<(), CallError> {
        self.alloc(n.saturating_mul(std::mem::size_of::<Value>()))
    }
}

pub(crate) type PlainFn = fn(&Ctx<'_>, Vec<Value>) -> FnResult;

/// How a function runs: `and`/`or` evaluate their own arguments (they short-circuit);
/// everything else is called with evaluated arguments.
#[derive(Clone, Copy)]
pub(crate) enum Imp {
    And,
    Or,
    Call(Callee),
}

#[derive(Clone, Copy)]
pub(crate) enum Callee {
    Plain(PlainFn),
    /// `include` and `tpl` need the template set: the executor runs them.
    Include,
    Tpl,
}

#[derive(Clone, Copy)]
pub(crate) struct Func {
    pub params: &'static [Ty],
    pub variadic: Option<Ty>,
    pub imp: Imp,
}

/// Registers functions: `reg(map, name, params, variadic, imp)`.
pub(crate) struct Registry(HashMap<&'static str, Func>);

impl Registry {
    pub fn add(
        &mut self,
        name: &'static str,
        params: &'static [Ty],
        variadic: Option<Ty>,
        f: PlainFn,
    ) {
        self.0.insert(
            name,
            Func {
                params,
                variadic,
                imp: Imp::Call(Callee::Plain(f)),
            },
        );
    }

    fn special(
        &mut self,
        name: &'static str,
        params: &'static [Ty],
        variadic: Option<Ty>,
        imp: Imp,
    ) {
        self.0.insert(
            name,
            Func {
                params,
                variadic,
                imp,
            },
        );
    }
}

fn table() -> &'static HashMap<&'static str, Func> {
    static TABLE: OnceLock<HashMap<&'static str, Func>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut r = Registry(HashMap::new());
        r.special("and", &[Ty::Any], Some(Ty::Any), Imp::And);
        r.special("or", &[Ty::Any], Some(Ty::Any), Imp::Or);
        r.special(
            "include",
            &[Ty::Str, Ty::Any],
            None,
            Imp::Call(Callee::Include),
        );
        r.special("tpl", &[Ty::Str, Ty::Any], None, Imp::Call(Callee::Tpl));
        builtin::register(&mut r);
        strings::register(&mut r);
        collections::register(&mut r);
        crypto::register(&mut r);
        math::register(&mut r);
        encoding::register(&mut r);
        semver::register(&mut r);
        secrets::register(&mut r);
        url::register(&mut r);
        date::register(&mut r);
        r.0
    })
}

pub(crate) fn get(name: &str) -> Option<&'static Func> {
    table().get(name)
}

/// Whether `name` is a function (a parse-time check in Go).
pub(crate) fn exists(name: &str) -> bool {
    table().contains_key(name)
}

/// Go's `%v` of one value, as Sprig's `strval`/`toString` produce it.
pub(crate) fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Sprig's `empty`.
pub(crate) fn empty(v: &Value) -> bool {
    match v {
        Value::Object(_) => false,
        other => !other.truth(),
    }
}

/// A list argument's elements, or Sprig's error for a non-list.
pub(crate) fn list_of(v: &Value, what: &str) -> Result<std::sync::Arc<Vec<Value>>, CallError> {
    match v {
        Value::List(l) => Ok(l.clone()),
        Value::Nil => Err(CallError::Msg(
            "runtime error: invalid memory address or nil pointer dereference".into(),
        )),
        other => Err(CallError::Msg(format!(
            "Cannot {what} on type {}",
            other.kind_name()
        ))),
    }
}

pub(crate) fn str_arg(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

pub(crate) fn int_arg(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_errors_match_go() {
        assert_eq!(
            convert(Value::Float(3.0), Ty::Int).err().as_deref(),
            Some("wrong type for value; expected int; got float64")
        );
        assert_eq!(
            convert(Value::Nil, Ty::Str).err().as_deref(),
            Some("invalid value; expected string")
        );
        assert!(matches!(convert(Value::Nil, Ty::Map), Ok(Value::Map(_))));
    }
}
