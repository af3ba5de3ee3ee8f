//! Values as Helm computes them, ported from `chartutil` (coalesce.go, dependencies.go) so
//! that every corner agrees with `helm template`: user values over the chart's
//! `values.yaml` (a `null` deletes a key), a parent's values over a subchart's, `global`
//! copied down to every subchart, dependencies switched off by `condition` and `tags`,
//! `alias`es, and `import-values` in both forms. Pure functions over JSON maps.

use serde_json::{Map, Value};

use super::chart::Chart;

pub(crate) type Table = Map<String, Value>;

const GLOBAL: &str = "global";

/// `chartutil.CoalesceValues`: the chart's values under `vals`, recursively.
pub(crate) fn coalesce_values(chart: &Chart, vals: &Table) -> Result<Table, String> {
    coalesce(chart, vals.clone(), false)
}

/// `chartutil.MergeValues`: like coalescing, but `null` is kept instead of deleting.
fn merge_values(chart: &Chart, vals: &Table) -> Result<Table, String> {
    coalesce(chart, vals.clone(), true)
}

fn coalesce(chart: &Chart, mut dest: Table, merge: bool) -> Result<Table, String> {
    coalesce_chart_values(chart, &mut dest, merge);
    coalesce_deps(chart, dest, merge)
}

fn coalesce_deps(chart: &Chart, mut dest: Table, merge: bool) -> Result<Table, String> {
    for sub in &chart.dependencies {
        let name = sub.name().to_string();
        let sub_vals = match dest.remove(&name) {
            None => Table::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(format!(
                    "type mismatch on {name}: {} is not a table",
                    short(&other)
                ));
            }
        };
        let mut sub_vals = sub_vals;
        coalesce_globals(&mut sub_vals, &dest);
        let done = coalesce(sub, sub_vals, merge)?;
        dest.insert(name, Value::Object(done));
    }
    Ok(dest)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(37).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// Copies the parent's `global` into the subchart's, the parent winning on conflicts.
fn coalesce_globals(dest: &mut Table, src: &Table) {
    let mut dg = match dest.get(GLOBAL) {
        None => Table::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return,
    };
    let sg = match src.get(GLOBAL) {
        None => Table::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return,
    };
    for (key, val) in sg {
        match val {
            Value::Object(vv) => match dg.remove(&key) {
                None => {
                    dg.insert(key, Value::Object(vv));
                }
                Some(Value::Object(destv)) => {
                    let mut vv = vv;
                    coalesce_tables(&mut vv, destv, true);
                    dg.insert(key, Value::Object(vv));
                }
                Some(other) => {
                    // Helm: cannot merge a map onto a non-map; the subchart's stays.
                    dg.insert(key, other);
                }
            },
            val => {
                if !dg.get(&key).is_some_and(Value::is_object) {
                    dg.insert(key, val);
                }
            }
        }
    }
    dest.insert(GLOBAL.to_string(), Value::Object(dg));
}

/// `coalesceValues`: the chart's own `values.yaml` under `v`.
fn coalesce_chart_values(chart: &Chart, v: &mut Table, merge: bool) {
    for (key, val) in chart.values.clone() {
        match v.get_mut(&key) {
            Some(Value::Null) if !merge => {
                v.remove(&key);
            }
            Some(Value::Object(dest)) => {
                if let Value::Object(src) = val {
                    let merge = merge || chart.dependencies.iter().any(|d| d.name() == key);
                    coalesce_tables(dest, src, merge);
                }
            }
            Some(_) => {}
            None => {
                v.insert(key, val);
            }
        }
    }
}

/// `coalesceTablesFullKey`: `src`'s keys fill in `dst`; `dst` wins; a `null` in `dst`
/// deletes the key unless merging.
pub(crate) fn coalesce_tables(dst: &mut Table, mut src: Table, merge: bool) {
    let src_non_nil: std::collections::BTreeSet<String> = src
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    for (key, val) in dst.iter() {
        if val.is_null() {
            src.insert(key.clone(), Value::Null);
        }
    }
    for (key, val) in src {
        match dst.get_mut(&key) {
            Some(Value::Null) if !merge && src_non_nil.contains(&key) => {
                dst.remove(&key);
            }
            None => {
                dst.insert(key, val);
            }
            Some(dv) => {
                if let (Value::Object(dm), Value::Object(sm)) = (dv, val) {
                    coalesce_tables(dm, sm, merge);
                }
            }
        }
    }
}

/// `Values.PathValue`: the non-table value at `a.b.c`.
fn path_value<'a>(vals: &'a Table, path: &str) -> Option<&'a Value> {
    let parts: Vec<&str> = path.split('.').collect();
    let (last, tables) = parts.split_last()?;
    let mut cur = vals;
    for p in tables {
        cur = cur.get(*p)?.as_object()?;
    }
    cur.get(*last).filter(|v| !v.is_object())
}

/// `Values.Table`: the table at `a.b.c`.
fn table<'a>(vals: &'a Table, path: &str) -> Option<&'a Table> {
    let mut cur = vals;
    for p in path.split('.') {
        cur = cur.get(p)?.as_object()?;
    }
    Some(cur)
}

/// `chartutil.ProcessDependenciesWithMerge`: drops disabled subcharts (conditions, tags),
/// applies aliases, and imports values, rewriting `chart` in place. `version_ok` is
/// Helm's `IsCompatibleRange(constraint, version)`.
pub(crate) fn process_dependencies(
    chart: &mut Chart,
    vals: &Table,
    version_ok: &dyn Fn(&str, &str) -> bool,
) -> Result<(), String> {
    process_enabled(chart, vals, "", version_ok)?;
    process_import_values(chart)
}

fn process_enabled(
    chart: &mut Chart,
    vals: &Table,
    path: &str,
    version_ok: &dyn Fn(&str, &str) -> bool,
) -> Result<(), String> {
    if chart.metadata.dependencies.is_empty() {
        return Ok(());
    }
    let existing = std::mem::take(&mut chart.dependencies);
    // Subcharts no dependency entry asks for stay as they are.
    let mut deps: Vec<Chart> = existing
        .iter()
        .filter(|c| {
            !chart
                .metadata
                .dependencies
                .iter()
                .any(|r| c.name() == r.name && version_ok(&r.version, &c.metadata.version))
        })
        .cloned()
        .collect();
    for req in chart.metadata.dependencies.iter_mut() {
        let found = existing
            .iter()
            .find(|c| c.name() == req.name && version_ok(&req.version, &c.metadata.version));
        if let Some(c) = found {
            let mut c = c.clone();
            if !req.alias.is_empty() {
                c.metadata.name = req.alias.clone();
            }
            deps.push(c);
        }
        if !req.alias.is_empty() {
            req.name = req.alias.clone();
        }
    }
    chart.dependencies = deps;
    for r in chart.metadata.dependencies.iter_mut() {
        r.enabled = true;
    }
    let cvals = coalesce_values(chart, vals)?;
    // Tags, then conditions (a condition that resolves wins over tags).
    if let Some(tags) = table(&cvals, "tags") {
        for r in chart.metadata.dependencies.iter_mut() {
            let (mut has_true, mut has_false) = (false, false);
            for k in &r.tags {
                match tags.get(k) {
                    Some(Value::Bool(true)) => has_true = true,
                    Some(Value::Bool(false)) => has_false = true,
                    _ => {}
                }
            }
            r.enabled = has_true || !has_false;
        }
    }
    for r in chart.metadata.dependencies.iter_mut() {
        for c in r.condition.trim().split(',') {
            if c.is_empty() {
                continue;
            }
            if let Some(Value::Bool(b)) = path_value(&cvals, &format!("{path}{c}")) {
                r.enabled = *b;
                break;
            }
        }
    }
    let disabled: Vec<String> = chart
        .metadata
        .dependencies
        .iter()
        .filter(|r| !r.enabled)
        .map(|r| r.name.clone())
        .collect();
    chart
        .dependencies
        .retain(|c| !disabled.iter().any(|d| d == c.name()));
    chart
        .metadata
        .dependencies
        .retain(|r| !disabled.contains(&r.name));
    for sub in chart.dependencies.iter_mut() {
        let subpath = format!("{path}{}.", sub.name());
        process_enabled(sub, &cvals, &subpath, version_ok)?;
    }
    Ok(())
}

/// A table at `parent` path (`.` is the root).
fn path_to_map(path: &str, data: Table) -> Table {
    if path == "." {
        return data;
    }
    let mut cur = data;
    for p in path.split('.').rev() {
        let mut m = Table::new();
        m.insert(p.to_string(), Value::Object(cur));
        cur = m;
    }
    cur
}

fn process_import_values(chart: &mut Chart) -> Result<(), String> {
    for sub in chart.dependencies.iter_mut() {
        process_import_values(sub)?;
    }
    if chart.metadata.dependencies.is_empty() {
        return Ok(());
    }
    let cvals = merge_values(chart, &Table::new())?;
    let mut imported = Table::new();
    for r in chart.metadata.dependencies.iter_mut() {
        let mut out = Vec::new();
        for iv in &r.import_values {
            let (child, parent) = match iv {
                Value::Object(m) => (go_string(m.get("child")), go_string(m.get("parent"))),
                Value::String(s) => (format!("exports.{s}"), ".".to_string()),
                _ => continue,
            };
            let mut entry = Table::new();
            entry.insert("child".into(), Value::String(child.clone()));
            entry.insert("parent".into(), Value::String(parent.clone()));
            out.push(Value::Object(entry));
            let Some(vv) = table(&cvals, &format!("{}.{child}", r.name)) else {
                continue;
            };
            let add = if matches!(iv, Value::String(_)) {
                vv.clone()
            } else {
                path_to_map(&parent, vv.clone())
            };
            // MergeTables(b, add): what is already imported wins.
            coalesce_tables(&mut imported, add, true);
        }
        r.import_values = out;
    }
    let mut base = cvals;
    coalesce_tables(&mut base, imported, true);
    chart.values = base;
    Ok(())
}

/// Go's `fmt.Sprintf("%v", x)` of a YAML scalar, for `child`/`parent` keys.
fn go_string(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<nil>".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::chart::{Dependency, Metadata};
    use serde_json::json;

    fn chart(name: &str, values: Value, deps: Vec<Chart>, reqs: Vec<Dependency>) -> Chart {
        Chart {
            origin: name.into(),
            metadata: Metadata {
                name: name.into(),
                version: "1.0.0".into(),
                api_version: "v2".into(),
                dependencies: reqs,
                ..Metadata::default()
            },
            values: values.as_object().cloned().unwrap_or_default(),
            schema: None,
            templates: Vec::new(),
            files: Default::default(),
            dependencies: deps,
        }
    }

    fn t(v: Value) -> Table {
        v.as_object().cloned().unwrap_or_default()
    }

    fn any_version(_: &str, _: &str) -> bool {
        true
    }

    #[test]
    fn user_values_win_null_deletes_and_globals_flow_down() {
        let sub = chart(
            "sub",
            json!({"port": 1, "global": {"a": "sub"}, "x": {"y": 1}}),
            vec![],
            vec![],
        );
        let top = chart(
            "top",
            json!({"name": "n", "drop": "me", "global": {"a": "top", "b": 2}, "sub": {"port": 2}}),
            vec![sub],
            vec![],
        );
        let v = coalesce_values(&top, &t(json!({"drop": null, "sub": {"x": {"y": null}}})))
            .expect("ok");
        assert_eq!(
            Value::Object(v),
            json!({
                "name": "n",
                "global": {"a": "top", "b": 2},
                "sub": {"port": 2, "global": {"a": "top", "b": 2}, "x": {}}
            })
        );
    }

    #[test]
    fn conditions_tags_and_aliases() {
        let a = chart("a", json!({}), vec![], vec![]);
        let b = chart("b", json!({}), vec![], vec![]);
        let reqs = vec![
            Dependency {
                name: "a".into(),
                condition: "a.enabled".into(),
                ..Default::default()
            },
            Dependency {
                name: "b".into(),
                tags: vec!["back".into()],
                ..Default::default()
            },
            Dependency {
                name: "a".into(),
                alias: "a2".into(),
                ..Default::default()
            },
        ];
        let mut top = chart("top", json!({"a": {"enabled": false}}), vec![a, b], reqs);
        process_dependencies(&mut top, &t(json!({"tags": {"back": false}})), &any_version)
            .expect("ok");
        let names: Vec<&str> = top.dependencies.iter().map(Chart::name).collect();
        assert_eq!(names, vec!["a2"]);
    }

    #[test]
    fn import_values_both_forms() {
        let sub = chart(
            "sub",
            json!({"exports": {"data": {"p": 1}}, "cfg": {"q": 2}}),
            vec![],
            vec![],
        );
        let reqs = vec![Dependency {
            name: "sub".into(),
            import_values: vec![json!("data"), json!({"child": "cfg", "parent": "imp.cfg"})],
            ..Default::default()
        }];
        let mut top = chart("top", json!({"p": 0}), vec![sub], reqs);
        process_dependencies(&mut top, &Table::new(), &any_version).expect("ok");
        assert_eq!(top.values["p"], json!(0), "the parent's own value wins");
        assert_eq!(top.values["imp"], json!({"cfg": {"q": 2}}));
    }
}
