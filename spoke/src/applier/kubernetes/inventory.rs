//! The inventory: per bundle, the objects flotilla applied, kept in the cluster as the
//! ConfigMap `flotilla-system/bundle-<bundle>`. It is the memory that pruning works from,
//! so a spoke restarted with an empty state dir (or a new spoke on the same cluster)
//! still prunes what an earlier one applied.

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Digest;

use super::FIELD_MANAGER;
use super::manifest::ObjectRef;

/// Where inventories live.
pub const NAMESPACE: &str = "flotilla-system";
const INVENTORY_LABEL: &str = "flotilla.dev/inventory";

/// What one bundle applied, in apply order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub bundle: String,
    pub deployment_id: String,
    pub objects: Vec<ObjectRef>,
    /// The deployments whose Helm hooks ran, so that a re-apply of the same deployment
    /// (a retry, a drift correction, a restarted spoke) does not run them again.
    #[serde(default)]
    pub hooks_ran: HooksRan,
    /// The ConfigMap's uid once it is stored (what the bundle's Events regard); not part
    /// of its data.
    #[serde(skip)]
    pub uid: Option<String>,
}

/// The deployment id whose pre-install/pre-upgrade hooks all succeeded, and the one
/// whose post-install/post-upgrade hooks did ("" for none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HooksRan {
    pub pre: String,
    pub post: String,
}

/// The ConfigMap's name: `bundle-<bundle>`, or a digest when that would be too long.
pub fn configmap_name(bundle: &str) -> String {
    let name = format!("bundle-{bundle}");
    if name.len() <= 253 {
        name
    } else {
        format!(
            "bundle-{}",
            &hex::encode(sha2::Sha256::digest(bundle))[..40]
        )
    }
}

/// The objects of `old` that `new` no longer holds (whatever their API version), in
/// `old`'s order.
pub fn stale(old: &[ObjectRef], new: &[ObjectRef]) -> Vec<ObjectRef> {
    let keep: BTreeSet<_> = new.iter().map(ObjectRef::identity).collect();
    old.iter()
        .filter(|o| !keep.contains(&o.identity()))
        .cloned()
        .collect()
}

/// `old` followed by what `new` adds: recorded before applying, so that a crash half-way
/// through an apply leaves nothing untracked.
pub fn union(old: &[ObjectRef], new: &[ObjectRef]) -> Vec<ObjectRef> {
    let have: BTreeSet<_> = old.iter().map(ObjectRef::identity).collect();
    let mut out = old.to_vec();
    out.extend(
        new.iter()
            .filter(|n| !have.contains(&n.identity()))
            .cloned(),
    );
    out
}

fn api(client: &Client) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), NAMESPACE)
}

/// Creates `flotilla-system` if it is missing.
pub async fn ensure_namespace(client: &Client) -> Result<()> {
    ensure_namespace_named(client, NAMESPACE).await
}

/// Creates a namespace (not owned by any bundle, so never pruned) if it is missing.
pub async fn ensure_namespace_named(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api
        .get_opt(name)
        .await
        .with_context(|| format!("reading namespace {name}"))?
        .is_some()
    {
        return Ok(());
    }
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/created-by": "flotilla"}}
    }))
    .context("namespace object")?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// The stored inventory of `bundle`, or None if there is none.
pub async fn load(client: &Client, bundle: &str) -> Result<Option<Inventory>> {
    let name = configmap_name(bundle);
    let Some(cm) = api(client)
        .get_opt(&name)
        .await
        .with_context(|| format!("bundle {bundle}: reading inventory {NAMESPACE}/{name}"))?
    else {
        return Ok(None);
    };
    let data = cm.data.unwrap_or_default();
    let objects = data.get("objects").map(String::as_str).unwrap_or("[]");
    let inv = Inventory {
        bundle: data.get("bundle").cloned().unwrap_or_default(),
        deployment_id: data.get("deploymentID").cloned().unwrap_or_default(),
        objects: serde_json::from_str(objects).map_err(|e| {
            anyhow!("bundle {bundle}: inventory {NAMESPACE}/{name} is corrupt: {e}")
        })?,
        hooks_ran: HooksRan {
            pre: data.get("preHooksRan").cloned().unwrap_or_default(),
            post: data.get("postHooksRan").cloned().unwrap_or_default(),
        },
        uid: cm.metadata.uid,
    };
    if inv.bundle != bundle {
        return Err(anyhow!(
            "bundle {bundle}: inventory {NAMESPACE}/{name} belongs to bundle {:?}",
            inv.bundle
        ));
    }
    Ok(Some(inv))
}

/// Writes the inventory and returns the ConfigMap's uid.
pub async fn store(client: &Client, inv: &Inventory) -> Result<Option<String>> {
    let name = configmap_name(&inv.bundle);
    let objects = serde_json::to_string(&inv.objects).context("encoding inventory")?;
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {INVENTORY_LABEL: "true"}},
        "data": {
            "bundle": inv.bundle, "deploymentID": inv.deployment_id, "objects": objects,
            "preHooksRan": inv.hooks_ran.pre, "postHooksRan": inv.hooks_ran.post,
        },
    });
    let stored = api(client)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .with_context(|| {
            format!(
                "bundle {}: writing inventory {NAMESPACE}/{name}",
                inv.bundle
            )
        })?;
    Ok(stored.metadata.uid)
}

pub async fn delete(client: &Client, bundle: &str) -> Result<()> {
    let name = configmap_name(bundle);
    match api(client).delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e)
            .with_context(|| format!("bundle {bundle}: deleting inventory {NAMESPACE}/{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(api_version: &str, kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn stale_objects_ignore_the_api_version() {
        let old = vec![
            r("example.com/v1beta1", "Gadget", "g"),
            r("v1", "ConfigMap", "a"),
            r("v1", "ConfigMap", "b"),
        ];
        let new = vec![
            r("example.com/v1", "Gadget", "g"),
            r("v1", "ConfigMap", "a"),
        ];
        assert_eq!(stale(&old, &new), vec![r("v1", "ConfigMap", "b")]);
        assert_eq!(union(&old, &new), old);
        assert_eq!(union(&new, &old).len(), 3);
    }

    #[test]
    fn configmap_names_stay_valid_for_long_bundle_names() {
        assert_eq!(configmap_name("web"), "bundle-web");
        let long = "a".repeat(250);
        let name = configmap_name(&long);
        assert!(name.len() <= 253 && name.starts_with("bundle-"), "{name}");
    }
}
