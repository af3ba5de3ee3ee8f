//! The `helm:` block of `fleet.yaml` (top level and per `targetCustomizations[]` entry), read
//! as Fleet's `HelmOptions` writes it. Owns the field list, merging a target's block over the
//! top one, where the chart comes from (a folder in the repo, or a remote chart the hub
//! fetches), Fleet's default release name, and the options carried to the spoke. It does not
//! load or render charts.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diagnostic::Diagnostic;

/// `helm:` as written in `fleet.yaml` (Fleet's `HelmOptions`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HelmSpec {
    /// A folder in the repo (relative to the bundle), a chart name in `repo`, or `oci://...`.
    pub chart: Option<String>,
    pub repo: Option<String>,
    /// A version or a Masterminds semver range, for remote charts.
    pub version: Option<String>,
    pub release_name: Option<String>,
    pub values: Option<Value>,
    pub values_files: Vec<String>,
    /// Values read from the downstream cluster: cannot apply to hub-side rendering.
    pub values_from: Option<Value>,
    pub take_ownership: Option<bool>,
    pub force: Option<bool>,
    pub atomic: Option<bool>,
    pub wait_for_jobs: Option<bool>,
    pub timeout_seconds: Option<u64>,
    pub max_history: Option<u64>,
    pub disable_pre_process: Option<bool>,
    #[serde(rename = "disableDNS")]
    pub disable_dns: Option<bool>,
    pub skip_schema_validation: Option<bool>,
    pub disable_dependency_update: Option<bool>,
}

impl HelmSpec {
    /// The target's block over the top one, field by field: a field the target sets wins.
    /// `values` and `valuesFiles` are not merged here: each block's values are read on their
    /// own and the target's merged over the top's (`release::block_values`), as Fleet does.
    pub(crate) fn merged(&self, over: &HelmSpec) -> HelmSpec {
        HelmSpec {
            chart: over.chart.clone().or_else(|| self.chart.clone()),
            repo: over.repo.clone().or_else(|| self.repo.clone()),
            version: over.version.clone().or_else(|| self.version.clone()),
            release_name: over
                .release_name
                .clone()
                .or_else(|| self.release_name.clone()),
            values: None,
            values_files: Vec::new(),
            values_from: over
                .values_from
                .clone()
                .or_else(|| self.values_from.clone()),
            take_ownership: over.take_ownership.or(self.take_ownership),
            force: over.force.or(self.force),
            atomic: over.atomic.or(self.atomic),
            wait_for_jobs: over.wait_for_jobs.or(self.wait_for_jobs),
            timeout_seconds: over.timeout_seconds.or(self.timeout_seconds),
            max_history: over.max_history.or(self.max_history),
            disable_pre_process: over.disable_pre_process.or(self.disable_pre_process),
            disable_dns: over.disable_dns.or(self.disable_dns),
            skip_schema_validation: over.skip_schema_validation.or(self.skip_schema_validation),
            disable_dependency_update: over
                .disable_dependency_update
                .or(self.disable_dependency_update),
        }
    }

    /// Where the chart comes from. `None` when the block names no chart: the bundle
    /// folder itself is the chart (it must hold `Chart.yaml`).
    pub(crate) fn source(&self) -> ChartSource {
        let chart = self.chart.as_deref().unwrap_or("").trim();
        let repo = self.repo.as_deref().unwrap_or("").trim();
        if chart.starts_with("oci://") || !repo.is_empty() {
            return ChartSource::Remote(crate::RemoteChart {
                chart: chart.to_string(),
                repo: (!repo.is_empty()).then(|| repo.to_string()),
                version: self.version.clone().filter(|v| !v.trim().is_empty()),
            });
        }
        if chart.contains("://") {
            return ChartSource::Remote(crate::RemoteChart {
                chart: chart.to_string(),
                repo: None,
                version: self.version.clone().filter(|v| !v.trim().is_empty()),
            });
        }
        ChartSource::Folder(if chart.is_empty() {
            ".".to_string()
        } else {
            chart.to_string()
        })
    }

    /// Checks what cannot be rendered on the hub. `line` is the line of the `helm:` key.
    pub(crate) fn check(&self, file: &str, line: u32) -> Result<(), Diagnostic> {
        if self.values_from.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Diagnostic::at(
                file,
                line,
                "helm.valuesFrom is not supported: it reads ConfigMaps and Secrets in the \
                 downstream cluster at deploy time, but flotilla renders charts on the hub, \
                 which holds no cluster credential; put the values in helm.values or \
                 helm.valuesFiles (use ${ .ClusterValues.x } templating for per-cluster values)",
            ));
        }
        if let Some(name) = &self.release_name
            && !is_release_name(name)
        {
            return Err(Diagnostic::at(
                file,
                line,
                format!(
                    "helm.releaseName {name:?} is not a valid release name: at most 53 \
                     characters of lowercase letters, digits, '-' and '.', starting and \
                     ending with a letter or digit"
                ),
            ));
        }
        if let Some(v) = &self.values
            && !(v.is_object() || v.is_null())
        {
            return Err(Diagnostic::at(file, line, "helm.values must be a mapping"));
        }
        Ok(())
    }

    /// The options the spoke receives with the bundle.
    pub(crate) fn deploy_options(&self, release_name: String) -> HelmDeployOptions {
        HelmDeployOptions {
            release_name,
            take_ownership: self.take_ownership.unwrap_or(false),
            force: self.force.unwrap_or(false),
            atomic: self.atomic.unwrap_or(false),
            wait_for_jobs: self.wait_for_jobs.unwrap_or(false),
            timeout_seconds: self.timeout_seconds,
        }
    }
}

/// Where a Helm bundle's chart comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ChartSource {
    /// A folder relative to the bundle folder (`.` for the bundle itself).
    Folder(String),
    Remote(crate::RemoteChart),
}

/// Helm options the spoke carries out (Fleet's names): recorded with the bundle so that a
/// change deploys again; see docs/bundles.md for what each one does in flotilla.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HelmDeployOptions {
    pub release_name: String,
    pub take_ownership: bool,
    pub force: bool,
    pub atomic: bool,
    pub wait_for_jobs: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// Helm's limit on release names.
const MAX_RELEASE_NAME: usize = 53;

/// Helm's release name rule: a DNS-1123 subdomain of at most 53 characters.
fn is_release_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_RELEASE_NAME
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Fleet's default release name: the bundle name when it is a valid release name, else
/// the name cut to fit with a short hash of the whole name, so that two long names stay
/// apart (Fleet's `names.HelmReleaseName`; Fleet hashes with MD5, flotilla with SHA-256, so
/// a bundle name over 53 characters gives a different suffix than in Fleet).
pub(crate) fn default_release_name(bundle: &str) -> String {
    if is_release_name(bundle) {
        return bundle.to_string();
    }
    let mut clean: String = bundle
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let hash = hex::encode(Sha256::digest(bundle.as_bytes()));
    if clean.len() > MAX_RELEASE_NAME || clean != bundle {
        clean.truncate(MAX_RELEASE_NAME - 6);
        while clean.ends_with('-') {
            clean.pop();
        }
        clean = format!("{clean}-{}", &hash[..5]);
    }
    clean.trim_start_matches('-').to_string()
}

/// `b` deep-merged over `a`: maps merge key by key, anything else in `b` replaces.
pub(crate) fn merge_values(mut a: Value, b: &Value) -> Value {
    match (&mut a, b) {
        (Value::Object(am), Value::Object(bm)) => {
            for (k, bv) in bm {
                let merged = match am.remove(k) {
                    Some(av) => merge_values(av, bv),
                    None => bv.clone(),
                };
                am.insert(k.clone(), merged);
            }
            a
        }
        _ => b.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> HelmSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn a_target_block_overrides_field_by_field() {
        let top = spec(json!({"chart": "./c", "atomic": true, "force": true}));
        let target = spec(json!({"version": "1.2.3", "force": false}));
        let m = top.merged(&target);
        assert_eq!(m.chart.as_deref(), Some("./c"));
        assert_eq!(m.version.as_deref(), Some("1.2.3"));
        assert_eq!(m.atomic, Some(true));
        assert_eq!(m.force, Some(false));
    }

    #[test]
    fn values_merge_deeply_and_the_later_wins() {
        let merged = merge_values(
            json!({"a": {"x": 1, "y": 2}, "b": 1}),
            &json!({"a": {"y": 3}, "b": null}),
        );
        assert_eq!(merged, json!({"a": {"x": 1, "y": 3}, "b": null}));
    }

    #[test]
    fn chart_sources() {
        assert_eq!(spec(json!({})).source(), ChartSource::Folder(".".into()));
        assert_eq!(
            spec(json!({"chart": "charts/web"})).source(),
            ChartSource::Folder("charts/web".into())
        );
        let remote =
            spec(json!({"chart": "nginx", "repo": "https://charts.example", "version": "^1"}));
        assert_eq!(
            remote.source(),
            ChartSource::Remote(crate::RemoteChart {
                chart: "nginx".into(),
                repo: Some("https://charts.example".into()),
                version: Some("^1".into()),
            })
        );
        assert!(matches!(
            spec(json!({"chart": "oci://r.example/c"})).source(),
            ChartSource::Remote(_)
        ));
    }

    #[test]
    fn values_from_is_refused_with_the_reason() {
        let e = spec(json!({"valuesFrom": [{"secretKeyRef": {"name": "s"}}]}))
            .check("b/fleet.yaml", 3)
            .expect_err("refused");
        assert!(
            e.to_string().starts_with("b/fleet.yaml:3: helm.valuesFrom"),
            "{e}"
        );
        assert!(e.message.contains("no cluster credential"), "{e}");
    }

    #[test]
    fn release_names_follow_helm_and_fleet() {
        assert_eq!(default_release_name("src-apps-web"), "src-apps-web");
        let long = default_release_name(&"a".repeat(63));
        assert_eq!(long.len(), 53);
        assert_ne!(long, default_release_name(&"a".repeat(62)));
        assert!(is_release_name(&long));
        assert!(!is_release_name("Web"));
        assert!(
            spec(json!({"releaseName": "Bad_Name"}))
                .check("f", 1)
                .is_err()
        );
    }
}
