//! `semver` and `semverCompare`: the template face of [`crate::semver`] (a `semver` value is
//! an object with Masterminds' `*semver.Version` methods).

use super::{CallError, Ctx, Registry, Ty, str_arg};
use crate::semver::{Constraint, Version};
use crate::{Object, Value};

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("semver", &[Str], None, |_: &Ctx<'_>, a| {
        let v = Version::parse(str_arg(&a[0]))
            .ok_or_else(|| CallError::Msg("invalid semantic version".into()))?;
        Ok(Value::object(v))
    });
    r.add("semverCompare", &[Str, Str], None, |_, a| {
        let c = Constraint::parse(str_arg(&a[0])).map_err(CallError::Msg)?;
        let v = Version::parse(str_arg(&a[1]))
            .ok_or_else(|| CallError::Msg("invalid semantic version".into()))?;
        Ok(Value::Bool(c.matches(&v)))
    });
}

impl Object for Version {
    fn type_name(&self) -> &str {
        "*semver.Version"
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let v = match name {
            "Major" => Value::Int(self.major as i64),
            "Minor" => Value::Int(self.minor as i64),
            "Patch" => Value::Int(self.patch as i64),
            "Prerelease" => Value::string(self.pre.clone()),
            "Metadata" => Value::string(self.metadata.clone()),
            "Original" => Value::string(self.original.clone()),
            "String" => Value::string(self.to_string()),
            _ => return None,
        };
        if !args.is_empty() {
            return Some(Err(format!(
                "wrong number of args for {name}: want 0 got {}",
                args.len()
            )));
        }
        Some(Ok(v))
    }

    fn display(&self) -> String {
        self.to_string()
    }

    fn to_data(&self) -> Value {
        Value::string(self.to_string())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
