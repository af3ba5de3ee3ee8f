//! Sprig's list and dict functions, and the `default`/`empty`/`coalesce`/`ternary` family.
//! Dicts are shared by reference as Go maps are, so `set`, `unset`, `merge` and
//! `mergeOverwrite` change their first argument in place. Go iterates maps in random
//! order; `keys` and `values` here return key order (sorted), which is one of Go's orders.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{CallError, Ctx, FnResult, Registry, Ty, empty, int_arg, list_of, str_arg, strval};
use crate::Value;
use crate::value::{Map, Walk};

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("list", &[], Some(Any), |c, a| {
        c.alloc_values(a.len())?;
        Ok(Value::list(a))
    });
    r.add("tuple", &[], Some(Any), |_, a| Ok(Value::list(a)));
    r.add("dict", &[], Some(Any), |_, a| {
        let mut m = BTreeMap::new();
        for pair in a.chunks(2) {
            let v = pair.get(1).cloned().unwrap_or_else(|| Value::string(""));
            m.insert(strval(&pair[0]), v);
        }
        Ok(Value::map(m))
    });
    r.add("get", &[Map, Str], None, |_, a| {
        Ok(map_of(&a[0])
            .get(str_arg(&a[1]))
            .unwrap_or_else(|| Value::string("")))
    });
    r.add("set", &[Map, Str, Any], None, |_, a| {
        map_of(&a[0])
            .write()
            .insert(str_arg(&a[1]).to_string(), a[2].clone());
        Ok(a[0].clone())
    });
    r.add("unset", &[Map, Str], None, |_, a| {
        map_of(&a[0]).write().remove(str_arg(&a[1]));
        Ok(a[0].clone())
    });
    r.add("hasKey", &[Map, Str], None, |_, a| {
        Ok(Value::Bool(
            map_of(&a[0]).read().contains_key(str_arg(&a[1])),
        ))
    });
    r.add("pluck", &[Str], Some(Map), |_, a| {
        let k = str_arg(&a[0]);
        Ok(Value::list(
            a[1..].iter().filter_map(|d| map_of(d).get(k)).collect(),
        ))
    });
    r.add("keys", &[], Some(Map), |_, a| {
        let mut out = Vec::new();
        for d in &a {
            out.extend(map_of(d).read().keys().map(|k| Value::string(k.clone())));
        }
        Ok(Value::list(out))
    });
    r.add("values", &[Map], None, |_, a| {
        Ok(Value::list(
            map_of(&a[0]).read().values().cloned().collect(),
        ))
    });
    r.add("pick", &[Map], Some(Str), |_, a| {
        let src = map_of(&a[0]).snapshot();
        let out = a[1..]
            .iter()
            .filter_map(|k| {
                src.get(str_arg(k))
                    .map(|v| (str_arg(k).to_string(), v.clone()))
            })
            .collect();
        Ok(Value::map(out))
    });
    r.add("omit", &[Map], Some(Str), |_, a| {
        let mut src = map_of(&a[0]).snapshot();
        for k in &a[1..] {
            src.remove(str_arg(k));
        }
        Ok(Value::map(src))
    });
    r.add("merge", &[Map], Some(Map), |_, a| merge(a, false));
    r.add("mustMerge", &[Map], Some(Map), |_, a| merge(a, false));
    r.add("mergeOverwrite", &[Map], Some(Map), |_, a| merge(a, true));
    r.add("mustMergeOverwrite", &[Map], Some(Map), |_, a| {
        merge(a, true)
    });
    r.add("deepCopy", &[Any], None, |c, a| deep_copy(c, &a[0]));
    r.add("mustDeepCopy", &[Any], None, |c, a| deep_copy(c, &a[0]));
    r.add("dig", &[], Some(Any), dig);

    r.add("append", &[Any, Any], None, push);
    r.add("push", &[Any, Any], None, push);
    r.add("mustAppend", &[Any, Any], None, push);
    r.add("mustPush", &[Any, Any], None, push);
    r.add("prepend", &[Any, Any], None, prepend);
    r.add("mustPrepend", &[Any, Any], None, prepend);
    r.add("first", &[Any], None, |_, a| {
        Ok(list_of(&a[0], "find first")?
            .first()
            .cloned()
            .unwrap_or_default())
    });
    r.add("mustFirst", &[Any], None, |_, a| {
        Ok(list_of(&a[0], "find first")?
            .first()
            .cloned()
            .unwrap_or_default())
    });
    r.add("last", &[Any], None, |_, a| {
        Ok(list_of(&a[0], "find last")?
            .last()
            .cloned()
            .unwrap_or_default())
    });
    r.add("mustLast", &[Any], None, |_, a| {
        Ok(list_of(&a[0], "find last")?
            .last()
            .cloned()
            .unwrap_or_default())
    });
    r.add("rest", &[Any], None, |_, a| {
        sub_list(&a[0], "find rest", |l| l.get(1..))
    });
    r.add("mustRest", &[Any], None, |_, a| {
        sub_list(&a[0], "find rest", |l| l.get(1..))
    });
    r.add("initial", &[Any], None, |_, a| {
        sub_list(&a[0], "find initial", |l| l.get(..l.len().checked_sub(1)?))
    });
    r.add("mustInitial", &[Any], None, |_, a| {
        sub_list(&a[0], "find initial", |l| l.get(..l.len().checked_sub(1)?))
    });
    r.add("reverse", &[Any], None, reverse);
    r.add("mustReverse", &[Any], None, reverse);
    r.add("uniq", &[Any], None, uniq);
    r.add("mustUniq", &[Any], None, uniq);
    r.add("compact", &[Any], None, compact);
    r.add("mustCompact", &[Any], None, compact);
    r.add("without", &[Any], Some(Any), without);
    r.add("mustWithout", &[Any], Some(Any), without);
    r.add("has", &[Any, Any], None, has);
    r.add("mustHas", &[Any, Any], None, has);
    r.add("slice", &[Any], Some(Any), slice);
    r.add("mustSlice", &[Any], Some(Any), slice);
    r.add("concat", &[], Some(Any), concat);
    r.add("chunk", &[Int, Any], None, chunk);
    r.add("mustChunk", &[Int, Any], None, chunk);
    r.add("sortAlpha", &[Any], None, |_, a| {
        let mut items = to_strings(&a[0]);
        if !matches!(a[0], Value::List(_)) {
            items = vec![strval(&a[0])];
        }
        items.sort();
        Ok(super::strings::str_list(items))
    });
    r.add("toStrings", &[Any], None, |_, a| {
        Ok(super::strings::str_list(to_strings(&a[0])))
    });
    r.add("join", &[Str, Any], None, |c, a| {
        let s = to_strings(&a[1]).join(str_arg(&a[0]));
        c.alloc(s.len())?;
        Ok(Value::string(s))
    });
    r.add("until", &[Int], None, |c, a| {
        let n = int_arg(&a[0]);
        until_step(c, 0, n, if n < 0 { -1 } else { 1 })
    });
    r.add("untilStep", &[Int, Int, Int], None, |c, a| {
        until_step(c, int_arg(&a[0]), int_arg(&a[1]), int_arg(&a[2]))
    });
    r.add("seq", &[], Some(Int), seq);

    r.add("default", &[Any], Some(Any), |_, a| {
        if a.len() < 2 || empty(&a[1]) {
            return Ok(a[0].clone());
        }
        Ok(a[1].clone())
    });
    r.add("empty", &[Any], None, |_, a| Ok(Value::Bool(empty(&a[0]))));
    r.add("coalesce", &[], Some(Any), |_, a| {
        Ok(a.iter().find(|v| !empty(v)).cloned().unwrap_or_default())
    });
    r.add("all", &[], Some(Any), |_, a| {
        Ok(Value::Bool(a.iter().all(|v| !empty(v))))
    });
    r.add("any", &[], Some(Any), |_, a| {
        Ok(Value::Bool(a.iter().any(|v| !empty(v))))
    });
    r.add("ternary", &[Any, Any, Bool], None, |_, a| {
        Ok(if a[2].truth() {
            a[0].clone()
        } else {
            a[1].clone()
        })
    });
}

/// The map behind a `Ty::Map` argument (conversion made nil an empty map).
fn map_of(v: &Value) -> Map {
    match v {
        Value::Map(m) => m.clone(),
        _ => Map::default(),
    }
}

/// Sprig's `strslice`: a list's non-nil elements as strings; a scalar as one string.
fn to_strings(v: &Value) -> Vec<String> {
    match v {
        Value::List(l) => l.iter().filter(|x| !x.is_nil()).map(strval).collect(),
        Value::Nil => Vec::new(),
        other => vec![strval(other)],
    }
}

/// mergo's `Merge`/`MergeWithOverwrite` of `map[string]interface{}` values, as Sprig calls it.
fn merge(a: Vec<Value>, overwrite: bool) -> FnResult {
    let dst = map_of(&a[0]);
    for src in &a[1..] {
        merge_into(&dst, &map_of(src).snapshot(), overwrite, &Walk::new(), 0);
    }
    Ok(Value::Map(dst))
}

fn merge_into(
    dst: &Map,
    src: &BTreeMap<String, Value>,
    overwrite: bool,
    walk: &Walk,
    depth: usize,
) {
    if !walk.enter(depth) {
        return;
    }
    for (k, sv) in src {
        if sv.is_nil() {
            if overwrite {
                dst.write().insert(k.clone(), Value::Nil);
            }
            continue;
        }
        let dv = dst.get(k);
        match sv {
            Value::Map(sm) => {
                if let Some(Value::Map(dm)) = &dv
                    && !dm.ptr_eq(sm)
                {
                    merge_into(dm, &sm.snapshot(), overwrite, walk, depth + 1);
                }
            }
            Value::List(_) => {
                let dst_empty = dst.is_empty();
                let new = if overwrite || dst_empty {
                    sv.clone()
                } else {
                    dv.clone().unwrap_or_else(|| Value::list(Vec::new()))
                };
                dst.write().insert(k.clone(), new);
            }
            _ => {}
        }
        if let Some(d) = &dv
            && !empty(d)
            && (matches!(sv, Value::List(_)) || matches!((sv, d), (Value::Map(_), Value::Map(_))))
        {
            continue;
        }
        if overwrite || dv.as_ref().is_none_or(empty) {
            dst.write().insert(k.clone(), sv.clone());
        }
    }
}

fn deep_copy(c: &Ctx<'_>, v: &Value) -> FnResult {
    fn copy(c: &Ctx<'_>, v: &Value, walk: &Walk, depth: usize) -> FnResult {
        if !walk.enter(depth) {
            return Err(CallError::Msg(
                "deepCopy error: value nested too deeply (a cycle?)".into(),
            ));
        }
        c.alloc(1)?;
        Ok(match v {
            Value::List(l) => Value::list(
                l.iter()
                    .map(|x| copy(c, x, walk, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Map(m) => {
                let snap = m.snapshot();
                let mut out = BTreeMap::new();
                for (k, x) in snap {
                    out.insert(k, copy(c, &x, walk, depth + 1)?);
                }
                Value::map(out)
            }
            other => other.clone(),
        })
    }
    if v.is_nil() {
        return Err(CallError::Msg(
            "deepCopy error: copystructure: nil value".into(),
        ));
    }
    copy(c, v, &Walk::new(), 0)
}

fn dig(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    if a.len() < 3 {
        return Err(CallError::Msg("dig needs at least three arguments".into()));
    }
    let Value::Map(dict) = &a[a.len() - 1] else {
        return Err(CallError::Msg(format!(
            "interface conversion: interface {{}} is {}, not map[string]interface {{}}",
            a[a.len() - 1].type_name()
        )));
    };
    let default = a[a.len() - 2].clone();
    let keys = &a[..a.len() - 2];
    let mut cur = dict.clone();
    for (i, k) in keys.iter().enumerate() {
        let Value::String(k) = k else {
            return Err(CallError::Msg(format!(
                "interface conversion: interface {{}} is {}, not string",
                k.type_name()
            )));
        };
        let Some(step) = cur.get(k) else {
            return Ok(default);
        };
        if i + 1 == keys.len() {
            return Ok(step);
        }
        match step {
            Value::Map(m) => cur = m,
            other => {
                return Err(CallError::Msg(format!(
                    "interface conversion: interface {{}} is {}, not map[string]interface {{}}",
                    other.type_name()
                )));
            }
        }
    }
    Ok(default)
}

fn push(c: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let l = list_of(&a[0], "push")?;
    c.alloc_values(l.len() + 1)?;
    let mut out = Vec::with_capacity(l.len() + 1);
    out.extend(l.iter().cloned());
    out.push(a[1].clone());
    Ok(Value::list(out))
}

fn prepend(c: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let l = list_of(&a[0], "prepend")?;
    c.alloc_values(l.len() + 1)?;
    let mut out = Vec::with_capacity(l.len() + 1);
    out.push(a[1].clone());
    out.extend(l.iter().cloned());
    Ok(Value::list(out))
}

fn sub_list(v: &Value, what: &str, pick: impl Fn(&[Value]) -> Option<&[Value]>) -> FnResult {
    let l = list_of(v, what)?;
    if l.is_empty() {
        return Ok(Value::Nil);
    }
    Ok(Value::list(pick(&l).unwrap_or_default().to_vec()))
}

fn reverse(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let l = list_of(&a[0], "find reverse")?;
    Ok(Value::list(l.iter().rev().cloned().collect()))
}

fn uniq(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let l = list_of(&a[0], "find uniq")?;
    let mut out: Vec<Value> = Vec::new();
    for v in l.iter() {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(Value::list(out))
}

fn compact(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let l = list_of(&a[0], "compact")?;
    Ok(Value::list(
        l.iter().filter(|v| !empty(v)).cloned().collect(),
    ))
}

fn without(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let l = list_of(&a[0], "find without")?;
    let omit = &a[1..];
    Ok(Value::list(
        l.iter().filter(|v| !omit.contains(v)).cloned().collect(),
    ))
}

fn has(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    match &a[1] {
        Value::Nil => Ok(Value::Bool(false)),
        Value::List(l) => Ok(Value::Bool(l.contains(&a[0]))),
        other => Err(CallError::Msg(format!(
            "Cannot find has on type {}",
            other.kind_name()
        ))),
    }
}

fn slice(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let l = match &a[0] {
        Value::List(l) => l.clone(),
        // Sprig's `slice` replaces Go's builtin, and takes lists only (not strings).
        other => {
            return Err(CallError::Msg(format!(
                "list should be type of slice or array but {}",
                other.kind_name()
            )));
        }
    };
    if l.is_empty() {
        return Ok(Value::Nil);
    }
    let to_int = |v: &Value| super::math::to_int64(v);
    let start = a.get(1).map_or(0, to_int);
    let end = a.get(2).map_or(l.len() as i64, to_int);
    if start < 0 || end < start || end as usize > l.len() {
        return Err(CallError::Msg(format!(
            "reflect: slice index out of range [{start}:{end}] with capacity {}",
            l.len()
        )));
    }
    Ok(Value::list(l[start as usize..end as usize].to_vec()))
}

fn concat(c: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let mut out = Vec::new();
    for v in &a {
        match v {
            Value::List(l) => {
                c.alloc_values(out.len() + l.len())?;
                out.extend(l.iter().cloned());
            }
            other => {
                return Err(CallError::Msg(format!(
                    "Cannot concat type {} as list",
                    other.kind_name()
                )));
            }
        }
    }
    Ok(Value::list(out))
}

fn chunk(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let size = int_arg(&a[0]);
    let l = match &a[1] {
        Value::List(l) => l.clone(),
        other => {
            return Err(CallError::Msg(format!(
                "Cannot chunk type {}",
                other.kind_name()
            )));
        }
    };
    if size <= 0 {
        return Err(CallError::Msg(
            "runtime error: integer divide by zero".into(),
        ));
    }
    Ok(Value::list(
        l.chunks(size as usize)
            .map(|c| Value::list(c.to_vec()))
            .collect(),
    ))
}

fn until_step(c: &Ctx<'_>, start: i64, stop: i64, step: i64) -> FnResult {
    let count = if step > 0 && stop > start {
        ((stop - start) as u64).div_ceil(step as u64)
    } else if step < 0 && stop < start {
        ((start - stop) as u64).div_ceil(step.unsigned_abs())
    } else {
        0
    };
    c.alloc_values(usize::try_from(count).unwrap_or(usize::MAX))?;
    c.budget.charge(count).map_err(CallError::Budget)?;
    let mut out = Vec::with_capacity(count as usize);
    let mut i = start;
    for _ in 0..count {
        out.push(Value::Int(i));
        i += step;
    }
    Ok(Value::List(Arc::new(out)))
}

fn seq(c: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let p: Vec<i64> = a.iter().map(int_arg).collect();
    let list = match p.len() {
        0 => return Ok(Value::string("")),
        1 => {
            let (start, end) = (1, p[0]);
            let inc = if end < start { -1 } else { 1 };
            until_step(c, start, end + inc, inc)?
        }
        2 => {
            let (start, end) = (p[0], p[1]);
            let step = if end < start { -1 } else { 1 };
            until_step(c, start, end + step, step)?
        }
        3 => {
            let (start, step, end) = (p[0], p[1], p[2]);
            let mut inc = 1;
            if end < start {
                inc = -1;
                if step > 0 {
                    return Ok(Value::string(""));
                }
            }
            until_step(c, start, end + inc, step)?
        }
        _ => return Ok(Value::string("")),
    };
    let Value::List(l) = list else {
        return Ok(Value::string(""));
    };
    let parts: Vec<String> = l.iter().map(|v| v.to_string()).collect();
    Ok(Value::string(parts.join(" ")))
}
