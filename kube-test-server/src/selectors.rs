//! Label and field selectors in their query-string form (`labelSelector=`,
//! `fieldSelector=`), parsed once into enums and matched against objects.
//!
//! Grammar and semantics follow
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors>
//! and <https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/>.
//! No I/O here.

use std::collections::BTreeSet;

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A conjunction of label requirements; empty matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(term)?);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(x)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(x)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
            LabelRequirement::GreaterThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            LabelRequirement::LessThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_requirement(term: &str) -> Result<LabelRequirement, String> {
    let bad = || format!("unable to parse requirement: invalid label selector {term:?}");
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key)
            .then(|| LabelRequirement::DoesNotExist(key.to_string()))
            .ok_or_else(bad);
    }
    for (op, in_op) in [(" notin ", false), (" in ", true)] {
        if let Some(idx) = term.find(op) {
            let key = term[..idx].trim();
            let rest = term[idx + op.len()..].trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values: BTreeSet<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            if !valid_key(key) || values.iter().any(|v| !valid_value(v)) {
                return Err(bad());
            }
            return Ok(if in_op {
                LabelRequirement::In(key.to_string(), values)
            } else {
                LabelRequirement::NotIn(key.to_string(), values)
            });
        }
    }
    for op in ["!=", "==", "=", ">", "<"] {
        if let Some((k, v)) = term.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) {
                return Err(bad());
            }
            return match op {
                ">" | "<" => {
                    let n = v.parse::<i64>().map_err(|_| bad())?;
                    Ok(if op == ">" {
                        LabelRequirement::GreaterThan(k.to_string(), n)
                    } else {
                        LabelRequirement::LessThan(k.to_string(), n)
                    })
                }
                _ if !valid_value(v) => Err(bad()),
                "!=" => Ok(LabelRequirement::NotEquals(k.to_string(), v.to_string())),
                _ => Ok(LabelRequirement::Equals(k.to_string(), v.to_string())),
            };
        }
    }
    valid_key(term)
        .then(|| LabelRequirement::Exists(term.to_string()))
        .ok_or_else(bad)
}

/// One field requirement: a JSON path into the stored object, `=` or `!=`, a value.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRequirement {
    /// The path in the stored object (for `events.k8s.io/v1`, the core v1 field its
    /// label maps to).
    pub field: String,
    pub equals: bool,
    pub value: String,
}

/// A conjunction of field requirements; empty matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

/// Field labels each kind supports beyond `metadata.name` and `metadata.namespace`.
fn extra_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
        "Secret" => &["type"],
        "Namespace" => &["status.phase"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Job" => &["status.successful"],
        "ReplicaSet" => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses and checks every field label is supported for `group`'s `kind`, as the
    /// API server does (`field label not supported: x`).
    pub fn parse(s: &str, group: &str, kind: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equals, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            let path = if group == "events.k8s.io" && kind == "Event" {
                crate::events::field_label(field)
            } else {
                (field == "metadata.name"
                    || field == "metadata.namespace"
                    || extra_fields(kind).contains(&field))
                .then_some(field)
            };
            let Some(path) = path else {
                return Err(format!("field label not supported: {field}"));
            };
            reqs.push(FieldRequirement {
                field: path.to_string(),
                equals,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let mut cur = obj;
            for part in r.field.split('.') {
                cur = &cur[part];
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == r.value) == r.equals
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equality_and_set_based_label_selectors_match_like_kubernetes() {
        let labels = json!({"app": "web", "tier": "front", "rank": "3"});
        let m = |s: &str| LabelSelector::parse(s).expect("parses").matches(&labels);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier!=back"));
        assert!(!m("app=db"));
        assert!(m("tier in (front, middle)"));
        assert!(!m("tier notin (front)"));
        assert!(m("app,!missing"));
        assert!(!m("!app"));
        assert!(m("missing notin (x)"));
        assert!(m("rank>2,rank<4"));
        assert!(m("app in (web),tier"));
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a=b=c").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_selectors_support_name_and_namespace_and_reject_unknown_labels() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        let fs = FieldSelector::parse("metadata.name=a,metadata.namespace!=other", "", "ConfigMap")
            .expect("parses");
        assert!(fs.matches(&obj));
        assert!(FieldSelector::parse("spec.foo=x", "", "ConfigMap").is_err());
        assert!(FieldSelector::parse("type=Opaque", "", "Secret").is_ok());
    }

    #[test]
    fn events_k8s_io_field_labels_select_the_stored_core_fields() {
        let stored = json!({"metadata": {"name": "e"}, "involvedObject": {"name": "cm"},
            "reportingComponent": "flotilla.dev/spoke"});
        let fs = FieldSelector::parse(
            "regarding.name=cm,reportingController=flotilla.dev/spoke",
            "events.k8s.io",
            "Event",
        )
        .expect("parses");
        assert!(fs.matches(&stored));
        assert!(FieldSelector::parse("involvedObject.name=cm", "events.k8s.io", "Event").is_err());
        assert!(FieldSelector::parse("regarding.name=cm", "", "Event").is_err());
    }
}
