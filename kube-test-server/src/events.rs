//! `events.k8s.io/v1` Events as a second view of the core v1 Events. On a real API
//! server both APIs read and write one storage: an Event created through
//! `events.k8s.io/v1` is listed by `kubectl get events` (core v1) and the reverse. This
//! server does the same. Events are stored in the core v1 shape, and this module
//! converts between the shapes, maps the field selector labels of `events.k8s.io/v1`,
//! and holds the validation that `events.k8s.io/v1` adds (the core v1 API keeps the lax
//! legacy rules). Pure: no storage, no HTTP.
//!
//! Field names and rules follow
//! <https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/> and
//! the API server's `ValidateEventCreate` / `ValidateEventUpdate`
//! (`pkg/apis/core/validation/events.go`).

use serde_json::{Map, Value};

/// `events.k8s.io/v1` name → core v1 name, for the top-level fields whose names differ.
/// Every other field has the same name in both.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Limits from the API server's event validation.
const NOTE_LIMIT: usize = 1024;
const SHORT_LIMIT: usize = 128;

fn rename_keys(v: &mut Value, from_view: bool) {
    let Some(m) = v.as_object_mut() else { return };
    let mut renamed = Map::new();
    for (view, core) in RENAMED {
        let (from, to) = if from_view {
            (*view, *core)
        } else {
            (*core, *view)
        };
        if let Some(x) = m.remove(from) {
            renamed.insert(to.to_string(), x);
        }
    }
    m.extend(renamed);
}

/// An `events.k8s.io/v1` Event in the core v1 shape it is stored in. Writes through the
/// view patch the view's shape (see `api::load`) and convert only when storing.
pub fn to_storage(mut view: Value) -> Value {
    rename_keys(&mut view, true);
    view
}

/// A stored (core v1) Event as `events.k8s.io/v1` serves it.
pub fn to_view(core: &Value) -> Value {
    let mut v = core.clone();
    rename_keys(&mut v, false);
    v
}

/// The core v1 path that an `events.k8s.io/v1` field selector label selects, as the
/// API server's field label conversion maps them; None when the label is not supported.
pub fn field_label(label: &str) -> Option<&'static str> {
    Some(match label {
        "metadata.name" => "metadata.name",
        "metadata.namespace" => "metadata.namespace",
        "reason" => "reason",
        "type" => "type",
        "regarding.kind" => "involvedObject.kind",
        "regarding.namespace" => "involvedObject.namespace",
        "regarding.name" => "involvedObject.name",
        "regarding.uid" => "involvedObject.uid",
        "regarding.apiVersion" => "involvedObject.apiVersion",
        "regarding.resourceVersion" => "involvedObject.resourceVersion",
        "regarding.fieldPath" => "involvedObject.fieldPath",
        "reportingController" => "reportingComponent",
        _ => return None,
    })
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_i64() != Some(0),
        Value::Object(m) => m.values().any(is_set),
        _ => true,
    }
}

/// `[prefix/]name`, as `ValidateQualifiedName` checks it.
fn qualified_name_errors(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    (!(name_ok && prefix_ok)).then(|| {
        format!(
            "Invalid value: {s:?}: a qualified name must consist of alphanumeric characters, '-', '_' or '.', \
             must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/'"
        )
    })
}

fn series_errors(ev: &Value, errs: &mut Vec<(&'static str, String)>) {
    let series = &ev["series"];
    if series.is_null() {
        return;
    }
    if series["count"].as_i64().unwrap_or(0) < 2 {
        errs.push((
            "series.count",
            "Invalid value: \"\": should be at least 2".into(),
        ));
    }
    if text(series, "lastObservedTime").is_empty() {
        errs.push(("series.lastObservedTime", "Required value".into()));
    }
}

/// The errors of an `events.k8s.io/v1` Event being created (in the `events.k8s.io/v1`
/// shape, with its namespace set); empty when it is valid.
pub fn validate_create(ev: &Value) -> Vec<(&'static str, String)> {
    let mut errs = Vec::new();
    let required = |errs: &mut Vec<_>, key: &'static str| {
        if text(ev, key).is_empty() {
            errs.push((key, "Required value".to_string()));
        }
    };
    let at_most = |errs: &mut Vec<_>, key: &'static str, limit: usize| {
        if text(ev, key).len() > limit {
            errs.push((
                key,
                format!("Invalid value: \"\": can have at most {limit} characters"),
            ));
        }
    };
    required(&mut errs, "eventTime");
    if !matches!(text(ev, "type"), "Normal" | "Warning") {
        errs.push((
            "type",
            format!(
                "Invalid value: \"\": has invalid value: {}",
                text(ev, "type")
            ),
        ));
    }
    for key in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
        "deprecatedSource",
    ] {
        if is_set(&ev[key]) {
            errs.push((key, "Invalid value: \"\": needs to be unset".into()));
        }
    }
    let controller = text(ev, "reportingController");
    if controller.is_empty() {
        errs.push(("reportingController", "Required value".into()));
    } else if let Some(e) = qualified_name_errors(controller) {
        errs.push(("reportingController", e));
    }
    required(&mut errs, "reportingInstance");
    at_most(&mut errs, "reportingInstance", SHORT_LIMIT);
    required(&mut errs, "action");
    at_most(&mut errs, "action", SHORT_LIMIT);
    required(&mut errs, "reason");
    at_most(&mut errs, "reason", SHORT_LIMIT);
    at_most(&mut errs, "note", NOTE_LIMIT);
    let namespace = ev["metadata"]["namespace"].as_str().unwrap_or_default();
    if text(&ev["regarding"], "namespace").is_empty()
        && !matches!(namespace, "default" | "kube-system")
    {
        errs.push((
            "involvedObject.namespace",
            "Invalid value: \"\": does not match event.namespace".into(),
        ));
    }
    series_errors(ev, &mut errs);
    errs
}

/// The errors of an update through `events.k8s.io/v1`, both sides in the stored (core
/// v1) shape: only the series (and metadata) may change, and the paths are the
/// internal names the real server reports.
pub fn validate_update(old: &Value, new: &Value) -> Vec<(&'static str, String)> {
    let mut errs = Vec::new();
    if old["series"] != new["series"] {
        series_errors(new, &mut errs);
    }
    for key in [
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "action",
        "type",
        "eventTime",
        "related",
        "reportingComponent",
        "reportingInstance",
    ] {
        if old[key] != new[key] {
            let path = if key == "reportingComponent" {
                "reportingController"
            } else {
                key
            };
            errs.push((path, "Invalid value: \"\": field is immutable".into()));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "metadata": {"name": "cm.1", "namespace": "apps"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "type": "Normal", "reason": "Applied", "action": "Apply", "note": "ok",
            "reportingController": "flotilla.dev/spoke", "reportingInstance": "c1",
            "regarding": {"kind": "ConfigMap", "namespace": "apps", "name": "cm", "uid": "u1"},
        })
    }

    #[test]
    fn the_two_shapes_convert_both_ways() {
        let core = to_storage(event());
        assert_eq!(core["involvedObject"]["name"], "cm");
        assert_eq!(core["message"], "ok");
        assert_eq!(core["reportingComponent"], "flotilla.dev/spoke");
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(to_view(&core), event());
    }

    #[test]
    fn a_complete_event_is_valid_and_missing_or_long_fields_are_not() {
        assert_eq!(validate_create(&event()), vec![]);
        let mut bad = event();
        bad["reportingController"] = json!("");
        bad["note"] = json!("x".repeat(1025));
        bad["type"] = json!("Info");
        bad["series"] = json!({"count": 1});
        let fields: Vec<&str> = validate_create(&bad).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                "type",
                "reportingController",
                "note",
                "series.count",
                "series.lastObservedTime"
            ]
        );
        let mut not_qualified = event();
        not_qualified["reportingController"] = json!("Flotilla Spoke");
        assert_eq!(validate_create(&not_qualified)[0].0, "reportingController");
    }

    #[test]
    fn an_update_may_change_only_the_series() {
        let old = to_storage(event());
        let mut new = old.clone();
        new["series"] = json!({"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"});
        assert_eq!(validate_update(&old, &new), vec![]);
        new["message"] = json!("changed");
        assert_eq!(validate_update(&old, &new)[0].0, "message");
    }

    #[test]
    fn events_k8s_io_field_labels_map_to_the_stored_fields() {
        assert_eq!(field_label("regarding.name"), Some("involvedObject.name"));
        assert_eq!(
            field_label("reportingController"),
            Some("reportingComponent")
        );
        assert_eq!(field_label("involvedObject.name"), None);
    }
}
