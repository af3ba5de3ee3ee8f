//! Cluster values: `${cluster.name}` and `${cluster.labels.KEY}` in a bundle's YAML, for
//! bundles that opt in with `clusterValues: true`. Owns finding the placeholders (so the
//! render key holds only the values a bundle uses), resolving them for a cluster, and
//! substituting them into parsed string values (never into YAML text, so a value cannot
//! change the document's structure).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::ClusterInfo;
use crate::diagnostic::Diagnostic;

/// Which cluster value a placeholder names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ValueKey {
    Name,
    Label(String),
}

impl ValueKey {
    pub(crate) fn placeholder(&self) -> String {
        match self {
            ValueKey::Name => "${cluster.name}".to_string(),
            ValueKey::Label(k) => format!("${{cluster.labels.{k}}}"),
        }
    }
}

/// A placeholder found in a file, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub key: ValueKey,
    pub line: u32,
    pub column: u32,
}

/// The values of one cluster for the keys a bundle uses (`None` when the cluster lacks it).
pub(crate) type Values = BTreeMap<ValueKey, Option<String>>;

pub(crate) fn resolve<'a>(
    keys: impl IntoIterator<Item = &'a ValueKey>,
    cluster: &ClusterInfo,
) -> Values {
    keys.into_iter()
        .map(|k| {
            let v = match k {
                ValueKey::Name => Some(cluster.name.clone()),
                ValueKey::Label(l) => cluster.labels.get(l).cloned(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// Finds every `${cluster....}` in `text`; a malformed one is an error.
pub(crate) fn scan(file: &str, text: &str) -> Result<Vec<Found>, Diagnostic> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0usize;
        while let Some(pos) = rest.find("${cluster.") {
            let start = offset + pos;
            let after = &line[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(unterminated(file, i, start));
            };
            let expr = &after[..end];
            let key = if expr == "cluster.name" {
                ValueKey::Name
            } else if let Some(label) = expr.strip_prefix("cluster.labels.") {
                if label.is_empty() || label.contains(char::is_whitespace) {
                    return Err(bad(file, i, start, expr));
                }
                ValueKey::Label(label.to_string())
            } else {
                return Err(bad(file, i, start, expr));
            };
            out.push(Found {
                key,
                line: i as u32 + 1,
                column: start as u32 + 1,
            });
            offset = start + 2 + end + 1;
            rest = &line[offset..];
        }
    }
    Ok(out)
}

fn unterminated(file: &str, line: usize, col: usize) -> Diagnostic {
    Diagnostic::at(
        file,
        line as u32 + 1,
        "unterminated ${cluster...} placeholder",
    )
    .with_column(Some(col as u32 + 1))
}

fn bad(file: &str, line: usize, col: usize, expr: &str) -> Diagnostic {
    Diagnostic::at(
        file,
        line as u32 + 1,
        format!(
            "unknown cluster value ${{{expr}}}: use ${{cluster.name}} or ${{cluster.labels.KEY}}"
        ),
    )
    .with_column(Some(col as u32 + 1))
}

/// Checks every placeholder of `text` has a value.
pub(crate) fn check(file: &str, text: &str, values: &Values) -> Result<(), Vec<Diagnostic>> {
    let found = scan(file, text).map_err(|d| vec![d])?;
    let errors: Vec<Diagnostic> = found
        .into_iter()
        .filter(|f| !matches!(values.get(&f.key), Some(Some(_))))
        .map(|f| {
            let what = match &f.key {
                ValueKey::Name => "a name".to_string(),
                ValueKey::Label(k) => format!("the label {k:?}"),
            };
            Diagnostic::at(
                file,
                f.line,
                format!(
                    "cluster has no value for {}: it lacks {what}",
                    f.key.placeholder()
                ),
            )
            .with_column(Some(f.column))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Replaces placeholders in every string (keys included) of `value`.
pub(crate) fn substitute(value: &mut Value, values: &Values) {
    match value {
        Value::String(s) if s.contains("${cluster.") => *s = substitute_str(s, values),
        Value::Array(a) => a.iter_mut().for_each(|v| substitute(v, values)),
        Value::Object(m) => {
            let needs_key_change = m.keys().any(|k| k.contains("${cluster."));
            if needs_key_change {
                let old = std::mem::take(m);
                for (k, v) in old {
                    m.insert(substitute_str(&k, values), v);
                }
            }
            m.values_mut().for_each(|v| substitute(v, values));
        }
        _ => {}
    }
}

fn substitute_str(s: &str, values: &Values) -> String {
    let mut out = s.to_string();
    for (k, v) in values {
        if let Some(v) = v {
            out = out.replace(&k.placeholder(), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            name: "edge-1".into(),
            labels: [("env".to_string(), "prod".to_string())]
                .into_iter()
                .collect(),
            groups: vec![],
            capabilities: None,
        }
    }

    #[test]
    fn finds_placeholders_with_positions() {
        let found = scan(
            "f",
            "a: ${cluster.name}\nb: x-${cluster.labels.env}-${cluster.name}\n",
        )
        .expect("scans");
        let keys: Vec<_> = found
            .iter()
            .map(|f| (f.key.clone(), f.line, f.column))
            .collect();
        assert_eq!(
            keys,
            vec![
                (ValueKey::Name, 1, 4),
                (ValueKey::Label("env".into()), 2, 6),
                (ValueKey::Name, 2, 28)
            ]
        );
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        let err = scan("f.yaml", "x: ${cluster.nme}\n").expect_err("bad");
        assert_eq!(err.line, Some(1));
        assert!(err.message.contains("unknown cluster value"));
    }

    #[test]
    fn missing_labels_name_the_file_and_line() {
        let values = resolve(&[ValueKey::Label("region".into())], &cluster());
        let errs = check(
            "a/cm.yaml",
            "data:\n  r: ${cluster.labels.region}\n",
            &values,
        )
        .expect_err("missing");
        assert_eq!(
            errs[0].to_string(),
            "a/cm.yaml:2:6: cluster has no value for ${cluster.labels.region}: it lacks the label \"region\""
        );
    }

    #[test]
    fn substitutes_in_strings_and_keys_only() {
        let values = resolve(&[ValueKey::Name, ValueKey::Label("env".into())], &cluster());
        let mut v = json!({"name": "app-${cluster.name}", "n": 3, "${cluster.labels.env}": ["${cluster.labels.env}"]});
        substitute(&mut v, &values);
        assert_eq!(v, json!({"name": "app-edge-1", "n": 3, "prod": ["prod"]}));
    }
}
