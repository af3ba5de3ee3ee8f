//! The discovery cache: which resource (plural, scope) serves a kind at an API version.
//! Filled from the API server's discovery and refreshed when a bundle names a kind the
//! cache does not know; kinds whose CRD sits in the same bundle are resolved from that
//! CRD, so the whole bundle can be checked before anything is applied. The same
//! discovery tells the hub which API versions the cluster serves (`Hello.capabilities`).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kube::Client;
use kube::core::ApiResource;
use kube::discovery::{Discovery, Scope};
use serde_json::Value;

/// Where a kind is served.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub ar: ApiResource,
    pub namespaced: bool,
}

type Key = (String, String, String);

/// A refresh asked for within this long of the last one is skipped: a bundle naming a
/// kind that never appears must not turn every check into a full discovery.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

pub struct Resolver {
    client: Client,
    /// (group, version, kind) → resource. Written by `refresh` only.
    cache: RwLock<HashMap<Key, Resolved>>,
    /// When the last successful refresh finished.
    refreshed: Mutex<Option<Instant>>,
    /// What the last refresh found served, as Helm's `.Capabilities.APIVersions` lists it
    /// (`apps/v1` and `apps/v1/Deployment`), sorted. Written by `refresh` only.
    api_versions: RwLock<Vec<String>>,
}

impl Resolver {
    pub fn new(client: Client) -> Self {
        Resolver {
            client,
            cache: RwLock::new(HashMap::new()),
            refreshed: Mutex::new(None),
            api_versions: RwLock::new(Vec::new()),
        }
    }

    /// The group versions and `group/version/Kind`s the last refresh found; empty before
    /// the first one succeeded.
    pub fn api_versions(&self) -> Vec<String> {
        self.api_versions
            .read()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    pub fn cached(&self, group: &str, version: &str, kind: &str) -> Option<Resolved> {
        let key = (group.to_string(), version.to_string(), kind.to_string());
        self.cache.read().ok()?.get(&key).cloned()
    }

    /// Every (group, kind) the cache holds, once each: what a spoke policy resolves
    /// against.
    pub fn served_kinds(&self) -> Vec<super::GroupKind> {
        let Ok(cache) = self.cache.read() else {
            return Vec::new();
        };
        let kinds: std::collections::BTreeSet<super::GroupKind> = cache
            .keys()
            .map(|(group, _, kind)| super::GroupKind {
                kind: kind.clone(),
                group: group.clone(),
            })
            .collect();
        kinds.into_iter().collect()
    }

    /// Runs discovery again and replaces the cache (unless it just did).
    pub async fn refresh(&self) -> Result<()> {
        let recent = self
            .refreshed
            .lock()
            .ok()
            .and_then(|r| *r)
            .is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL);
        if recent {
            return Ok(());
        }
        // Aggregated discovery reads every group in two requests, as one consistent
        // snapshot. Group by group, a CRD deleted between listing the groups and reading
        // one of them fails the whole run with a 404. Servers before 1.26 lack it, and
        // some answer the request with the plain group list, which reads as no groups.
        let discovery = match Discovery::new(self.client.clone()).run_aggregated().await {
            Ok(d) if d.has_group("") => d,
            other => {
                if let Err(e) = other {
                    tracing::debug!(error = %e, "aggregated discovery unavailable; discovering group by group");
                }
                Discovery::new(self.client.clone())
                    .run()
                    .await
                    .context("API discovery")?
            }
        };
        let mut fresh = HashMap::new();
        let mut api_versions = std::collections::BTreeSet::new();
        for group in discovery.groups() {
            for version in group.versions() {
                let gv = match group.name() {
                    "" => version.to_string(),
                    g => format!("{g}/{version}"),
                };
                for (ar, caps) in group.versioned_resources(version) {
                    api_versions.insert(format!("{gv}/{}", ar.kind));
                    let key = (ar.group.clone(), ar.version.clone(), ar.kind.clone());
                    let namespaced = caps.scope == Scope::Namespaced;
                    fresh.insert(key, Resolved { ar, namespaced });
                }
                api_versions.insert(gv);
            }
        }
        if let Ok(mut cache) = self.cache.write() {
            *cache = fresh;
        }
        if let Ok(mut v) = self.api_versions.write() {
            *v = api_versions.into_iter().collect();
        }
        if let Ok(mut at) = self.refreshed.lock() {
            *at = Some(Instant::now());
        }
        Ok(())
    }
}

/// Resolves `group/version kind` from a CRD manifest, if the CRD defines it.
pub fn from_crd(crd: &Value, group: &str, version: &str, kind: &str) -> Option<Resolved> {
    let spec = crd.get("spec")?;
    let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    if text(spec, "/group")? != group || text(spec, "/names/kind")? != kind {
        return None;
    }
    let served = spec.get("versions")?.as_array()?.iter().any(|v| {
        v.get("name").and_then(Value::as_str) == Some(version)
            && v.get("served").and_then(Value::as_bool) != Some(false)
    });
    if !served {
        return None;
    }
    Some(Resolved {
        ar: ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: format!("{group}/{version}"),
            kind: kind.to_string(),
            plural: text(spec, "/names/plural")?,
        },
        namespaced: text(spec, "/scope").as_deref() != Some("Cluster"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_crd_in_the_bundle_resolves_its_kind() {
        let crd = json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true}, {"name": "v0", "served": false}]}});
        let r = from_crd(&crd, "example.com", "v1", "Gadget").expect("resolves");
        assert_eq!(r.ar.plural, "gadgets");
        assert!(r.namespaced);
        assert!(from_crd(&crd, "example.com", "v0", "Gadget").is_none());
        assert!(from_crd(&crd, "example.com", "v1", "Widget").is_none());
    }
}
