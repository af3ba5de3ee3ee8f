//! What a spoke is told about a deployment besides its content: the options of
//! `fleet.yaml` that the spoke acts on (`DeployOptions`), with Fleet's `comparePatches`
//! (`ComparePatch`) and `ignore.conditions` (`IgnoreCondition`) as types.
//!
//! The renderer parses these from `fleet.yaml` and checks them there (with `file:line`
//! errors); the hub derives one `DeployOptions` per render; the wire carries them as
//! protobuf messages (`flotilla_proto::convert`); the spoke enforces them. Their serde
//! form is Fleet's (camelCase) inside `ComparePatch`, because the bundle's canonical
//! options, which the deployment id hashes, embed them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `diff.comparePatches[]` (Rancher Fleet's format): for the objects it selects (every
/// selector that is set must match), an RFC 6902 patch applied to both the applied and
/// the live object before they are compared, and JSON pointers drift detection ignores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ComparePatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub operations: Vec<PatchOperation>,
    pub json_pointers: Vec<String>,
}

impl ComparePatch {
    /// Whether the entry selects the object `(api_version, kind, namespace, name)`.
    pub fn selects(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&self.api_version, api_version)
            && ok(&self.kind, kind)
            && ok(&self.namespace, namespace)
            && ok(&self.name, name)
    }
}

/// One RFC 6902 operation: `add`, `remove`, `replace`, `move`, `copy` or `test`. The op
/// stays the text `fleet.yaml` gave: the renderer refuses any other op with its line
/// (`render::fleet_yaml`), and the spoke applies the operations with the renderer's own
/// JSON patch, which reads RFC 6902 as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PatchOperation {
    pub op: String,
    pub path: String,
    /// Any JSON value (`add`, `replace`, `test`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The source of `move` and `copy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl PatchOperation {
    /// The operation as RFC 6902 JSON.
    pub fn to_json(&self) -> Value {
        let mut op = serde_json::Map::new();
        op.insert("op".into(), Value::String(self.op.clone()));
        op.insert("path".into(), Value::String(self.path.clone()));
        if let Some(v) = &self.value {
            op.insert("value".into(), v.clone());
        }
        if let Some(f) = &self.from {
            op.insert("from".into(), Value::String(f.clone()));
        }
        Value::Object(op)
    }
}

/// One `ignore.conditions[]` entry: a status condition that has every one of these
/// key/value pairs (`{type: Progressing, status: "False"}`) does not count against
/// readiness. An empty entry ignores nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IgnoreCondition(pub BTreeMap<String, String>);

impl IgnoreCondition {
    /// Whether a condition whose fields `field` looks up is ignored.
    pub fn matches<'a>(&self, field: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.0.is_empty() && self.0.iter().all(|(k, want)| field(k) == Some(want))
    }
}

/// The per-deployment options a spoke needs. The hub derives them from the bundle's
/// options for one render; they are covered by the deployment id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredOptions")]
pub struct DeployOptions {
    pub correct_drift: bool,
    pub keep_resources: bool,
    /// Server-side apply `force`: take fields other managers hold.
    pub force: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compare_patches: Vec<ComparePatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignore_conditions: Vec<IgnoreCondition>,
}

/// The stored form of `DeployOptions`, also as hubs and spokes before typed options
/// wrote it: `compare_patches_json` and `ignore_conditions_json` held the lists as JSON
/// text. Those are read once here, so an existing `--data-dir` or `--state-dir` keeps
/// its options; malformed legacy text is an error (a corrupt record), not an empty list.
#[derive(Deserialize)]
struct StoredOptions {
    #[serde(default)]
    correct_drift: bool,
    #[serde(default)]
    keep_resources: bool,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    compare_patches: Vec<ComparePatch>,
    #[serde(default)]
    ignore_conditions: Vec<IgnoreCondition>,
    #[serde(default)]
    compare_patches_json: String,
    #[serde(default)]
    ignore_conditions_json: String,
}

impl TryFrom<StoredOptions> for DeployOptions {
    type Error = String;
    fn try_from(s: StoredOptions) -> Result<Self, String> {
        fn legacy<T: serde::de::DeserializeOwned>(
            field: &str,
            text: &str,
            typed: Vec<T>,
        ) -> Result<Vec<T>, String> {
            if text.is_empty() || !typed.is_empty() {
                return Ok(typed);
            }
            serde_json::from_str(text).map_err(|e| format!("{field}: {e}"))
        }
        Ok(DeployOptions {
            correct_drift: s.correct_drift,
            keep_resources: s.keep_resources,
            force: s.force,
            compare_patches: legacy(
                "compare_patches_json",
                &s.compare_patches_json,
                s.compare_patches,
            )?,
            ignore_conditions: legacy(
                "ignore_conditions_json",
                &s.ignore_conditions_json,
                s.ignore_conditions,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> DeployOptions {
        DeployOptions {
            correct_drift: true,
            keep_resources: false,
            force: true,
            compare_patches: vec![ComparePatch {
                kind: Some("Deployment".into()),
                operations: vec![PatchOperation {
                    op: "replace".into(),
                    path: "/spec/replicas".into(),
                    value: Some(json!(3)),
                    from: None,
                }],
                json_pointers: vec!["/spec/template".into()],
                ..Default::default()
            }],
            ignore_conditions: vec![IgnoreCondition(BTreeMap::from([(
                "type".into(),
                "Progressing".into(),
            )]))],
        }
    }

    #[test]
    fn options_round_trip_through_their_stored_form() {
        let text = serde_json::to_string(&sample()).expect("serialises");
        let back: DeployOptions = serde_json::from_str(&text).expect("reads back");
        assert_eq!(back, sample());
    }

    #[test]
    fn options_stored_as_json_text_by_earlier_versions_still_load() {
        let old = json!({
            "correct_drift": true,
            "keep_resources": false,
            "force": true,
            "compare_patches_json": r#"[{"kind":"Deployment","operations":[{"op":"replace","path":"/spec/replicas","value":3}],"jsonPointers":["/spec/template"]}]"#,
            "ignore_conditions_json": r#"[{"type":"Progressing"}]"#,
        });
        let read: DeployOptions = serde_json::from_value(old).expect("legacy form loads");
        assert_eq!(read, sample());
        let empty = json!({"correct_drift": false, "keep_resources": true, "force": false,
            "compare_patches_json": "", "ignore_conditions_json": ""});
        let read: DeployOptions = serde_json::from_value(empty).expect("loads");
        assert!(read.compare_patches.is_empty() && read.ignore_conditions.is_empty());
    }

    #[test]
    fn malformed_legacy_text_is_an_error_not_an_empty_list() {
        let bad = json!({"correct_drift": false, "keep_resources": false, "force": false,
            "compare_patches_json": "[{"});
        let err = serde_json::from_value::<DeployOptions>(bad).expect_err("refused");
        assert!(err.to_string().contains("compare_patches_json"), "{err}");
    }

    #[test]
    fn an_ignore_condition_needs_every_pair_and_an_empty_one_ignores_nothing() {
        let c = IgnoreCondition(BTreeMap::from([
            ("type".into(), "Progressing".into()),
            ("status".into(), "False".into()),
        ]));
        let cond = json!({"type": "Progressing", "status": "False", "reason": "x"});
        let field = |k: &str| cond.get(k).and_then(Value::as_str);
        assert!(c.matches(field));
        let other = json!({"type": "Progressing", "status": "True"});
        assert!(!c.matches(|k: &str| other.get(k).and_then(Value::as_str)));
        assert!(!IgnoreCondition::default().matches(field));
    }

    #[test]
    fn a_compare_patch_selects_by_every_selector_it_sets() {
        let p = ComparePatch {
            kind: Some("Deployment".into()),
            namespace: Some("web".into()),
            ..Default::default()
        };
        assert!(p.selects("apps/v1", "Deployment", "web", "frontend"));
        assert!(!p.selects("apps/v1", "Deployment", "db", "frontend"));
        assert!(!p.selects("v1", "Service", "web", "frontend"));
        assert!(ComparePatch::default().selects("v1", "ConfigMap", "", "x"));
    }

    #[test]
    fn a_patch_operation_is_rfc_6902_json() {
        let op = PatchOperation {
            op: "move".into(),
            path: "/b".into(),
            value: None,
            from: Some("/a".into()),
        };
        assert_eq!(
            op.to_json(),
            json!({"op": "move", "path": "/b", "from": "/a"})
        );
    }
}
