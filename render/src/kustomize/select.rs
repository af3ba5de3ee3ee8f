//! Which resources a kustomize patch applies to: a `target` selector (group, version, kind,
//! name and namespace as anchored regular expressions, see `target_regex`; label and
//! annotation selectors) or, for a strategic-merge patch without one, the patch's own
//! apiVersion/kind/name. Matches the current identity or any earlier one (before
//! prefixes, suffixes and namespaces).

use flotilla_model::{LabelSelector, Labels};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::{Res, target_regex};
use crate::scope::group_of;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct Target {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub annotation_selector: Option<String>,
}

fn labels_of(v: &Value, field: &str) -> Labels {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl Target {
    /// Compiles the selector once per patch: its regular expressions and label selectors.
    pub(crate) fn compile(&self) -> Result<Matcher, String> {
        let re = |field: &'static str, p: &Option<String>| -> Result<Option<Regex>, String> {
            match p.as_deref().filter(|s| !s.is_empty()) {
                Some(p) => target_regex::compile(field, p).map(Some),
                None => Ok(None),
            }
        };
        let sel = |s: &Option<String>| -> Result<Option<LabelSelector>, String> {
            match s.as_deref().filter(|s| !s.is_empty()) {
                Some(s) => s.parse().map(Some).map_err(|e| format!("{e}")),
                None => Ok(None),
            }
        };
        Ok(Matcher {
            group: re("group", &self.group)?,
            version: re("version", &self.version)?,
            kind: re("kind", &self.kind)?,
            name: re("name", &self.name)?,
            namespace: re("namespace", &self.namespace)?,
            labels: sel(&self.label_selector)?,
            annotations: sel(&self.annotation_selector)?,
        })
    }
}

/// A compiled [`Target`]: the regular expressions are anchored like kustomize's
/// (`^(?:pattern)$`) and run in linear time.
pub(crate) struct Matcher {
    group: Option<Regex>,
    version: Option<Regex>,
    kind: Option<Regex>,
    name: Option<Regex>,
    namespace: Option<Regex>,
    labels: Option<LabelSelector>,
    annotations: Option<LabelSelector>,
}

impl Matcher {
    pub(crate) fn matches(&self, r: &Res) -> bool {
        let api_version = r.obj.api_version();
        let version = api_version.rsplit('/').next().unwrap_or("");
        let checks = [
            (&self.group, group_of(api_version)),
            (&self.version, version),
            (&self.kind, r.obj.kind()),
        ];
        if checks
            .iter()
            .any(|(want, have)| want.as_ref().is_some_and(|re| !re.is_match(have)))
        {
            return false;
        }
        if let Some(sel) = &self.labels
            && !sel.matches(&labels_of(&r.obj.value, "labels"))
        {
            return false;
        }
        if let Some(sel) = &self.annotations
            && !sel.matches(&labels_of(&r.obj.value, "annotations"))
        {
            return false;
        }
        r.ids().any(|(name, ns)| {
            self.name.as_ref().is_none_or(|re| re.is_match(name))
                && self.namespace.as_ref().is_none_or(|re| {
                    re.is_match(ns.unwrap_or("default")) || re.is_match(ns.unwrap_or(""))
                })
        })
    }
}

/// True when a strategic-merge patch without a target names resource `r`.
pub(crate) fn patch_names(patch: &Value, r: &Res) -> bool {
    let s = |path: &[&str]| {
        let mut v = patch;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str()
    };
    let kind_ok = s(&["kind"]) == Some(r.obj.kind());
    let group_ok = s(&["apiVersion"]).is_none_or(|a| group_of(a) == group_of(r.obj.api_version()));
    let name = s(&["metadata", "name"]);
    let ns = s(&["metadata", "namespace"]);
    kind_ok
        && group_ok
        && r.ids().any(|(n, rns)| {
            Some(n) == name && ns.is_none_or(|want| same_namespace(Some(want), rns))
        })
}

fn same_namespace(a: Option<&str>, b: Option<&str>) -> bool {
    let norm = |x: Option<&str>| match x {
        None | Some("") => "default".to_string(),
        Some(s) => s.to_string(),
    };
    norm(a) == norm(b)
}
