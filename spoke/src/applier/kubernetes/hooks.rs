//! Helm hooks, mapped to apply phases the way Argo CD maps them. A rendered chart keeps
//! its hook objects with their annotations (as `helm template` does); this module reads
//! those annotations and runs a hook: delete the old one, apply, wait, clean up.
//!
//! - `pre-install`/`pre-upgrade` run before the bundle's other objects (after its
//!   Namespaces and CRDs, so that a hook may live in a namespace the bundle creates);
//!   `post-install`/`post-upgrade` run once the other objects are healthy. As in Argo CD,
//!   both install and upgrade hooks run on every new deployment of the bundle.
//! - Within a phase: by `helm.sh/hook-weight` (an integer; not a number counts as 0, as
//!   in Helm), then kind order (`order::Phase`, then the kind's name), then name. One hook
//!   at a time: each must succeed (a Job Complete, a Pod Succeeded, anything else healthy
//!   by `health`) before the next is applied.
//! - `helm.sh/hook-delete-policy`: `before-hook-creation` (the default when none is
//!   given, as in Helm) deletes the hook left from an earlier run before applying it;
//!   `hook-succeeded` and `hook-failed` delete it after it ends so.
//! - `test` hooks, and `pre-delete`/`post-delete`/`pre-rollback`/`post-rollback` (a
//!   bundle is neither uninstalled nor rolled back by Helm here), are not applied.
//!
//! The pure part (`role`, `order_key`, `progress`) reads objects; `run` makes the API
//! calls of one hook.

use std::time::Duration;

use futures::TryStreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher::watch_object;
use serde_json::Value;

use super::health::{self, Health};
use super::order::Phase;

pub const HOOK_ANNOTATION: &str = "helm.sh/hook";
pub const WEIGHT_ANNOTATION: &str = "helm.sh/hook-weight";
pub const DELETE_POLICY_ANNOTATION: &str = "helm.sh/hook-delete-policy";

/// How long one hook may take to succeed, and a deleted hook to be gone: Helm's default
/// `--timeout`.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookPhase {
    /// `pre-install`, `pre-upgrade`: before the bundle's other objects.
    PreSync,
    /// `post-install`, `post-upgrade`: after the other objects are healthy.
    PostSync,
}

impl std::fmt::Display for HookPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookPhase::PreSync => "pre-install/pre-upgrade",
            HookPhase::PostSync => "post-install/post-upgrade",
        })
    }
}

/// `helm.sh/hook-delete-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletePolicy {
    pub before_hook_creation: bool,
    pub hook_succeeded: bool,
    pub hook_failed: bool,
}

/// A hook object's annotations, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub phase: HookPhase,
    /// The `helm.sh/hook` value, as written (for messages).
    pub events: String,
    pub weight: i64,
    pub delete: DeletePolicy,
}

/// What an object of a rendered bundle is to the applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// An ordinary object (no `helm.sh/hook`).
    Resource,
    Hook(Hook),
    /// A hook for an event that flotilla does not run (`test`, `pre-delete`, ...): not
    /// applied. Holds the `helm.sh/hook` value.
    Skipped(String),
}

fn annotation<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.pointer("/metadata/annotations")?.get(key)?.as_str()
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The role of one rendered object, from its annotations.
pub fn role(value: &Value) -> Role {
    let Some(events) = annotation(value, HOOK_ANNOTATION) else {
        return Role::Resource;
    };
    let has = |names: &[&str]| list(events).any(|e| names.contains(&e));
    let phase = if has(&["pre-install", "pre-upgrade"]) {
        HookPhase::PreSync
    } else if has(&["post-install", "post-upgrade"]) {
        HookPhase::PostSync
    } else {
        return Role::Skipped(events.to_string());
    };
    let weight = annotation(value, WEIGHT_ANNOTATION)
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0);
    let policies = annotation(value, DELETE_POLICY_ANNOTATION).unwrap_or("");
    let named = |p: &str| list(policies).any(|x| x == p);
    let delete = DeletePolicy {
        // Helm's default when no policy is given.
        before_hook_creation: named("before-hook-creation") || list(policies).next().is_none(),
        hook_succeeded: named("hook-succeeded"),
        hook_failed: named("hook-failed"),
    };
    Role::Hook(Hook {
        phase,
        events: events.to_string(),
        weight,
        delete,
    })
}

/// The order hooks of one phase run in: weight, then kind order, then name.
pub fn order_key<'a>(
    hook: &Hook,
    phase: Phase,
    kind: &'a str,
    name: &'a str,
) -> (i64, Phase, &'a str, &'a str) {
    (hook.weight, phase, kind, name)
}

/// Where a running hook is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Succeeded,
    Running(String),
    Failed(String),
}

/// A hook's progress from its live object: a Job until Complete or Failed, a Pod until
/// Succeeded or Failed, anything else until `health` says Ready.
pub fn progress(group: &str, kind: &str, live: &Value) -> Progress {
    if let Some(why) = health::failed(group, kind, live) {
        return Progress::Failed(why);
    }
    if (group, kind) == ("", "Pod") {
        return match live.pointer("/status/phase").and_then(Value::as_str) {
            Some("Succeeded") => Progress::Succeeded,
            phase => Progress::Running(format!("pod is {}", phase.unwrap_or("Pending"))),
        };
    }
    match health::health(group, kind, live) {
        Health::Ready => Progress::Succeeded,
        Health::NotReady(why) => Progress::Running(why),
    }
}

/// Runs one hook: deletes the one an earlier run left (`before-hook-creation`), applies
/// it, waits until it succeeds or fails, and deletes it if its policy says so. The error
/// says what went wrong, without naming the hook (the caller does).
pub async fn run(
    api: &Api<DynamicObject>,
    (group, kind, name): (&str, &str, &str),
    value: &Value,
    hook: &Hook,
    params: &PatchParams,
) -> Result<(), String> {
    if hook.delete.before_hook_creation {
        delete(api, name).await?;
        wait_for(api, name, |live| live.is_none().then_some(()))
            .await
            .map_err(|e| format!("the hook of an earlier run is not gone: {e}"))?;
    }
    api.patch(name, params, &Patch::Apply(value))
        .await
        .map_err(|e| format!("applying it: {}", super::api_error(e)))?;
    let mut last = String::new();
    let outcome = wait_for(api, name, |live| {
        let Some(live) = live else {
            return Some(Err("it was deleted while running".to_string()));
        };
        let live = serde_json::to_value(live).unwrap_or(Value::Null);
        match progress(group, kind, &live) {
            Progress::Succeeded => Some(Ok(())),
            Progress::Failed(why) => Some(Err(why)),
            Progress::Running(why) => {
                last = why;
                None
            }
        }
    })
    .await
    .map_err(|e| format!("{e} (last seen: {last})"))?;
    let cleanup = match &outcome {
        Ok(()) => hook.delete.hook_succeeded,
        Err(_) => hook.delete.hook_failed,
    };
    if cleanup {
        delete(api, name).await?;
    }
    outcome
}

/// Deletes an object if it exists. Background propagation: the object goes at once and
/// the garbage collector takes its dependents (a Job's Pods) later, so no finalizer
/// holds the delete up.
async fn delete(api: &Api<DynamicObject>, name: &str) -> Result<(), String> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(format!("deleting it: {}", super::api_error(e))),
    }
}

/// Watches object `name` until `done` returns Some, for at most `HOOK_TIMEOUT`.
pub async fn wait_for<T>(
    api: &Api<DynamicObject>,
    name: &str,
    mut done: impl FnMut(Option<&DynamicObject>) -> Option<T>,
) -> Result<T, String> {
    let watch = watch_object(api.clone(), name);
    let found = tokio::time::timeout(HOOK_TIMEOUT, async {
        let mut watch = std::pin::pin!(watch);
        while let Some(seen) = watch
            .try_next()
            .await
            .map_err(|e| format!("watching it: {e}"))?
        {
            if let Some(out) = done(seen.as_ref()) {
                return Ok(out);
            }
        }
        Err("its watch ended".to_string())
    })
    .await;
    match found {
        Ok(r) => r,
        Err(_) => Err(format!("not done after {}s", HOOK_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn annotated(a: Value) -> Value {
        json!({"metadata": {"name": "x", "annotations": a}})
    }

    #[test]
    fn hook_events_map_to_phases_and_tests_are_skipped() {
        assert_eq!(role(&json!({"metadata": {"name": "x"}})), Role::Resource);
        let pre = role(&annotated(
            json!({HOOK_ANNOTATION: "pre-install, pre-upgrade"}),
        ));
        let Role::Hook(pre) = pre else {
            panic!("{pre:?}")
        };
        assert_eq!(pre.phase, HookPhase::PreSync);
        assert_eq!(pre.weight, 0);
        let post = role(&annotated(
            json!({HOOK_ANNOTATION: "post-upgrade", WEIGHT_ANNOTATION: "-5"}),
        ));
        assert!(
            matches!(&post, Role::Hook(h) if h.phase == HookPhase::PostSync && h.weight == -5),
            "{post:?}"
        );
        for skipped in [
            "test",
            "test-success",
            "pre-delete",
            "post-delete,pre-rollback",
            "crd-install",
        ] {
            assert_eq!(
                role(&annotated(json!({HOOK_ANNOTATION: skipped}))),
                Role::Skipped(skipped.to_string())
            );
        }
    }

    #[test]
    fn delete_policy_defaults_to_before_hook_creation_and_a_bad_weight_counts_as_zero() {
        let hook = |a: Value| match role(&annotated(a)) {
            Role::Hook(h) => h,
            other => panic!("{other:?}"),
        };
        let h = hook(json!({HOOK_ANNOTATION: "pre-install", WEIGHT_ANNOTATION: "heavy"}));
        assert_eq!(h.weight, 0);
        assert_eq!(
            h.delete,
            DeletePolicy {
                before_hook_creation: true,
                hook_succeeded: false,
                hook_failed: false
            }
        );
        let h = hook(json!({HOOK_ANNOTATION: "post-install",
            DELETE_POLICY_ANNOTATION: "hook-succeeded,hook-failed"}));
        assert_eq!(
            h.delete,
            DeletePolicy {
                before_hook_creation: false,
                hook_succeeded: true,
                hook_failed: true
            }
        );
    }

    #[test]
    fn hooks_order_by_weight_then_kind_then_name() {
        let h = |w: i64| Hook {
            phase: HookPhase::PreSync,
            events: "pre-install".into(),
            weight: w,
            delete: DeletePolicy {
                before_hook_creation: true,
                hook_succeeded: false,
                hook_failed: false,
            },
        };
        let mut v = [
            order_key(&h(5), Phase::Namespaced, "Job", "a"),
            order_key(&h(0), Phase::Namespaced, "Job", "b"),
            order_key(&h(0), Phase::Namespaced, "ConfigMap", "z"),
            order_key(&h(0), Phase::ClusterScoped, "ClusterRole", "y"),
            order_key(&h(-1), Phase::Namespaced, "Job", "c"),
        ];
        v.sort();
        let names: Vec<&str> = v.iter().map(|k| k.3).collect();
        assert_eq!(names, ["c", "y", "z", "b", "a"]);
    }

    #[test]
    fn progress_of_jobs_pods_and_other_kinds() {
        let running = json!({"status": {}});
        assert!(matches!(
            progress("batch", "Job", &running),
            Progress::Running(_)
        ));
        let done = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(progress("batch", "Job", &done), Progress::Succeeded);
        let failed = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert!(
            matches!(progress("batch", "Job", &failed), Progress::Failed(w) if w.contains("BackoffLimitExceeded"))
        );
        let pod = |phase: &str| json!({"status": {"phase": phase}});
        assert_eq!(progress("", "Pod", &pod("Succeeded")), Progress::Succeeded);
        assert!(matches!(
            progress("", "Pod", &pod("Running")),
            Progress::Running(_)
        ));
        assert!(matches!(
            progress("", "Pod", &pod("Failed")),
            Progress::Failed(_)
        ));
        assert_eq!(
            progress("", "ConfigMap", &json!({"data": {}})),
            Progress::Succeeded
        );
    }
}
