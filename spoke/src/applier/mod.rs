//! Appliers: where a spoke puts its bundles. `dir` writes manifests into a folder;
//! `kubernetes` server-side applies them into a cluster. Both sit behind [`Applier`], and
//! the agent (`session.rs`) only ever talks to that trait.
//!
//! A target returns its verdict as data ([`Outcome`]: a state, a message and the
//! objects that are not ready); the agent decides what to report and when to re-apply.

pub mod dir;
pub mod kubernetes;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
/// Per-bundle options from the hub, as the appliers read them (the same type the hub sends).
pub use flotilla_model::DeployOptions;
use flotilla_model::{ResourceStatus, State};
use futures::future::BoxFuture;
use tokio::sync::Notify;

pub use kubernetes::{KubeOptions, Policy, PolicySpec};

/// One bundle as the hub wants it.
#[derive(Debug, Clone)]
pub struct Desired {
    pub bundle: String,
    pub deployment_id: String,
    /// Rendered multi-document YAML.
    pub content: Vec<u8>,
    pub options: DeployOptions,
}

/// What a target found: the bundle's state, a summary, and every object that is not
/// Ready with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: State,
    pub message: String,
    pub resources: Vec<ResourceStatus>,
}

impl Outcome {
    pub fn ready() -> Self {
        Outcome {
            state: State::Ready,
            message: String::new(),
            resources: Vec::new(),
        }
    }
}

/// What a spoke does with a bundle's rendered manifests.
///
/// `apply` errors mean ErrApplied; their message names the bundle and the object.
pub trait Applier: Send + Sync {
    /// Makes the target hold exactly `desired` (pruning what the bundle no longer
    /// holds), then reports its health.
    fn apply<'a>(&'a self, desired: &'a Desired) -> BoxFuture<'a, Result<Outcome>>;
    /// Removes what `bundle` put there; with `keep_resources` only forgets it.
    fn remove<'a>(&'a self, bundle: &'a str, keep_resources: bool) -> BoxFuture<'a, Result<()>>;
    /// Compares the target with `desired` without changing anything: Modified (with the
    /// differences), NotReady (with reasons) or Ready.
    fn check<'a>(&'a self, desired: &'a Desired) -> BoxFuture<'a, Result<Outcome>>;
    /// Signalled when something the target watches changed, so the agent checks at once
    /// instead of at its next tick. None for targets without watches.
    fn changes(&self) -> Option<Arc<Notify>> {
        None
    }
    /// The bundles whose objects changed since the last call (drained), so a round woken
    /// by `changes` checks only those. None means "not known: check all".
    fn changed_bundles(&self) -> Option<BTreeSet<String>> {
        None
    }
    /// What the target knows of its cluster's Kubernetes API, sent in each Hello for the
    /// hub's charts that read `.Capabilities`. None for a target that is no cluster.
    fn capabilities(&self) -> BoxFuture<'_, Option<ClusterCapabilities>> {
        Box::pin(async { None })
    }
}

/// The Kubernetes API a cluster serves: its version and Helm-style API version list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCapabilities {
    /// `/version`'s gitVersion, e.g. `v1.34.1`.
    pub kube_version: String,
    /// Served group versions and `group/version/Kind` entries, sorted.
    pub api_versions: Vec<String>,
}

/// One enforcement step for one bundle, returned as the outcome to report: a bundle
/// whose last apply failed is applied again; otherwise the target is checked, and a
/// Modified bundle that opted into correctDrift is re-applied with `force` (correcting
/// drift means taking back the fields someone else changed). None when the target could
/// not be read (the last state stands; the next round tries again).
pub async fn enforce(
    target: &dyn Applier,
    desired: &Desired,
    last: State,
    on_drift: &(dyn Fn() + Sync),
) -> Option<Outcome> {
    let reapply = |why: &'static str, force: bool| {
        let mut d = desired.clone();
        d.options.force |= force;
        async move {
            match target.apply(&d).await {
                Ok(o) => o,
                Err(e) => Outcome {
                    state: State::ErrApplied,
                    message: if why.is_empty() {
                        format!("{e:#}")
                    } else {
                        format!("{why}: {e:#}")
                    },
                    resources: Vec::new(),
                },
            }
        }
    };
    if last == State::ErrApplied {
        // The same words as the first failure, so an unchanged failure is not re-reported.
        return Some(reapply("", false).await);
    }
    let checked = match target.check(desired).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(bundle = %desired.bundle, error = %format!("{e:#}"), "cannot check the target");
            return None;
        }
    };
    if checked.state == State::Modified && last != State::Modified {
        on_drift();
    }
    if checked.state == State::Modified && desired.options.correct_drift {
        tracing::info!(bundle = %desired.bundle, drift = %checked.message, "correcting drift");
        return Some(reapply("re-applying after drift", true).await);
    }
    Some(checked)
}

/// `--target` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Dir(PathBuf),
    Kubernetes,
}

impl std::str::FromStr for TargetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("dir", path)) if !path.is_empty() => Ok(TargetSpec::Dir(PathBuf::from(path))),
            _ if s == "kubernetes" => Ok(TargetSpec::Kubernetes),
            _ => Err(format!(
                "unknown target {s:?}; expected dir:PATH or kubernetes"
            )),
        }
    }
}

impl TargetSpec {
    pub async fn build(&self, kube: KubeOptions) -> Result<Box<dyn Applier>> {
        match self {
            TargetSpec::Dir(p) => Ok(Box::new(dir::DirApplier::new(p)?)),
            TargetSpec::Kubernetes => Ok(Box::new(kubernetes::KubeApplier::connect(kube).await?)),
        }
    }
}

/// Bundle names become file names and object names: allow only DNS-1123 subdomains,
/// which cannot contain `/` or `..`.
pub fn check_bundle_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(flotilla_model::names::is_dns_label);
    if !ok {
        bail!("refusing bundle name {name:?}: not a DNS-1123 subdomain");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bundle_names_are_refused() {
        assert!(check_bundle_name("apps-web").is_ok());
        assert!(check_bundle_name("apps.web").is_ok());
        for bad in ["", "../etc", "a/b", "a..b", ".hidden", "UPPER"] {
            assert!(check_bundle_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn target_specs_parse() {
        assert_eq!(
            "dir:/tmp/x".parse::<TargetSpec>(),
            Ok(TargetSpec::Dir("/tmp/x".into()))
        );
        assert_eq!(
            "kubernetes".parse::<TargetSpec>(),
            Ok(TargetSpec::Kubernetes)
        );
        assert!("dir:".parse::<TargetSpec>().is_err());
        assert!("s3://x".parse::<TargetSpec>().is_err());
    }
}
