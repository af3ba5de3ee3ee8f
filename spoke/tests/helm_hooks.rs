//! Helm hooks in the Kubernetes applier, against a real kube-apiserver (see
//! `common/mod.rs`): pre-install hooks run in weight order and are waited for before the
//! rest, post-install hooks wait for the rest to be healthy, a failed hook fails the
//! apply naming it, delete policies are honoured, test hooks are never applied, and a
//! restarted spoke does not run a deployment's hooks again.
//!
//! The control plane of `tests/k8s/up` runs no controllers (`FLOTILLA_E2E_NO_CONTROLLERS`),
//! so a Job never completes or fails by itself: the tests write the Job's status through
//! the admin's credentials, as the Job controller would. On a cluster with controllers
//! they skip, since there the Jobs' real outcome would decide.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, cluster, desired, wait_until};
use flotilla_model::State;
use flotilla_spoke::applier::{Applier, DeployOptions, Outcome, Policy};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

/// A Job manifest in `ns`, with `annotations`.
fn job(ns: &str, name: &str, annotations: serde_json::Value) -> String {
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "run", "image": "busybox:1.36"}]
        }}}
    });
    format!("---\n{job}\n")
}

fn jobs(c: &Cluster, ns: &str) -> Api<DynamicObject> {
    c.admin_api("batch/v1", "Job", "jobs", Some(ns))
}

/// The uid of Job `name`, once it exists.
async fn job_uid(c: &Cluster, ns: &str, name: &str) -> String {
    wait_until(&format!("Job {name} exists"), || async {
        jobs(c, ns)
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|j| j.metadata.uid)
    })
    .await
}

async fn exists(api: &Api<DynamicObject>, name: &str) -> bool {
    api.get_opt(name)
        .await
        .expect("the API server answers")
        .is_some()
}

/// Writes what the Job controller writes when a Job succeeds (the API server requires
/// the times and SuccessCriteriaMet before Complete).
async fn complete(c: &Cluster, ns: &str, name: &str) {
    let now = "2026-01-01T00:00:00Z";
    jobs(c, ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": now, "completionTime": now, "succeeded": 1,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now, "lastProbeTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now, "lastProbeTime": now}
                ]
            }})),
        )
        .await
        .expect("Job status");
}

/// Writes what the Job controller writes when a Job runs out of retries.
async fn fail(c: &Cluster, ns: &str, name: &str) {
    let now = "2026-01-01T00:00:00Z";
    jobs(c, ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": now, "failed": 1,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": now, "lastProbeTime": now},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": now, "lastProbeTime": now}
                ]
            }})),
        )
        .await
        .expect("Job status");
}

fn no_controllers(c: &Cluster) -> bool {
    if c.controllers_run() {
        eprintln!(
            "SKIP: Job status is set by hand here; on a cluster with controllers they own it"
        );
        return false;
    }
    true
}

/// A chart's rendered hooks around an app: two pre-install Jobs whose weights run them
/// in the opposite order of their names, a post-install Job, a test Pod, and the app (a
/// ConfigMap and a Job that must complete before the post-install hook).
fn chart(ns: &str, value: &str) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app, namespace: {ns}}}\ndata: {{v: \"{value}\"}}\n"
    );
    yaml += &job(ns, "main", json!({}));
    yaml += &job(
        ns,
        "z-migrate",
        json!({"helm.sh/hook": "pre-install,pre-upgrade", "helm.sh/hook-weight": "-1"}),
    );
    yaml += &job(
        ns,
        "a-seed",
        json!({"helm.sh/hook": "pre-install", "helm.sh/hook-weight": "5",
               "helm.sh/hook-delete-policy": "hook-succeeded"}),
    );
    yaml += &job(
        ns,
        "notify",
        json!({"helm.sh/hook": "post-install,post-upgrade"}),
    );
    // The spoke's role may not create Pods: applying this one would fail the bundle.
    yaml += &format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: test-connection\n  namespace: {ns}\n  \
         annotations: {{helm.sh/hook: test}}\nspec:\n  containers: [{{name: t, image: busybox:1.36}}]\n"
    );
    yaml
}

#[tokio::test]
async fn pre_hooks_run_in_weight_order_before_the_rest_and_post_hooks_once_it_is_healthy() {
    let c = cluster().await;
    if !no_controllers(&c) {
        return;
    }
    let t = Arc::new(c.target(Policy::default()));
    let ns = c.n("hooks");
    let bundle = c.n("chart");
    let d = desired(&bundle, "d-1", &chart(&ns, "one"), DeployOptions::default());
    let applying = tokio::spawn({
        let (t, d) = (t.clone(), d.clone());
        async move { t.apply(&d).await }
    });
    let (cms, job_api) = (c.configmaps(&ns), jobs(&c, &ns));

    // Weight -1 first, although its name sorts last; nothing else yet.
    job_uid(&c, &ns, "z-migrate").await;
    assert!(
        !exists(&job_api, "a-seed").await,
        "weight 5 waits for weight -1"
    );
    assert!(
        !exists(&cms, "app").await,
        "the app waits for its pre-install hooks"
    );
    complete(&c, &ns, "z-migrate").await;

    job_uid(&c, &ns, "a-seed").await;
    assert!(
        !exists(&cms, "app").await,
        "the app waits for every pre-install hook"
    );
    complete(&c, &ns, "a-seed").await;

    // The app is applied; the post-install hook waits until it is healthy.
    wait_until("the app is applied", || async {
        exists(&cms, "app").await.then_some(())
    })
    .await;
    job_uid(&c, &ns, "main").await;
    assert!(
        !exists(&job_api, "notify").await,
        "the post-install hook waits for the app's Job to complete"
    );
    complete(&c, &ns, "main").await;
    job_uid(&c, &ns, "notify").await;
    complete(&c, &ns, "notify").await;

    let out = applying.await.expect("the apply task").expect("applies");
    assert_eq!(out.state, State::Ready, "{out:?}");
    assert!(
        !exists(&job_api, "a-seed").await,
        "hook-succeeded deleted the hook once it succeeded"
    );
    assert!(
        exists(&job_api, "z-migrate").await,
        "before-hook-creation (the default) keeps it until the next run"
    );
    let pods = c.admin_api("v1", "Pod", "pods", Some(&ns));
    assert!(
        !exists(&pods, "test-connection").await,
        "test hooks are not applied"
    );
    let checked = t.check(&d).await.expect("checks");
    assert_eq!(
        checked.state,
        State::Ready,
        "a hook its policy deleted is not drift: {checked:?}"
    );

    // A restarted spoke applying the same deployment runs no hook again: nothing waits
    // on a Job, and the deleted hook stays deleted.
    let migrate_uid = job_uid(&c, &ns, "z-migrate").await;
    let restarted = c.target(Policy::default());
    let again: Outcome = tokio::time::timeout(Duration::from_secs(60), restarted.apply(&d))
        .await
        .expect("the same deployment's apply does not wait on hooks")
        .expect("applies");
    assert_eq!(again.state, State::Ready, "{again:?}");
    assert_eq!(job_uid(&c, &ns, "z-migrate").await, migrate_uid);
    assert!(!exists(&job_api, "a-seed").await, "not run again");

    // A new deployment runs them again: before-hook-creation replaces the old Job.
    let d2 = desired(&bundle, "d-2", &chart(&ns, "two"), DeployOptions::default());
    let upgrading = tokio::spawn({
        let t = t.clone();
        async move { t.apply(&d2).await }
    });
    wait_until("the pre-upgrade hook is created anew", || async {
        let uid = jobs(&c, &ns)
            .get_opt("z-migrate")
            .await
            .ok()
            .flatten()
            .and_then(|j| j.metadata.uid);
        uid.filter(|u| *u != migrate_uid)
    })
    .await;
    assert!(
        !exists(&job_api, "a-seed").await,
        "a pre-install hook of weight 5 still waits for weight -1"
    );
    upgrading.abort();
    let _ = upgrading.await;
    t.remove(&bundle, false).await.expect("cleanup");
}

#[tokio::test]
async fn a_failed_hook_fails_the_apply_naming_it_and_hook_failed_deletes_it() {
    let c = cluster().await;
    if !no_controllers(&c) {
        return;
    }
    let t = Arc::new(c.target(Policy::default()));
    let ns = c.n("failing");
    let bundle = c.n("chart");
    let mut yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app, namespace: {ns}}}\ndata: {{v: one}}\n"
    );
    yaml += &job(
        &ns,
        "check",
        json!({"helm.sh/hook": "pre-install", "helm.sh/hook-delete-policy": "hook-failed"}),
    );
    let d = desired(&bundle, "d-1", &yaml, DeployOptions::default());
    let applying = tokio::spawn({
        let (t, d) = (t.clone(), d.clone());
        async move { t.apply(&d).await }
    });
    job_uid(&c, &ns, "check").await;
    fail(&c, &ns, "check").await;

    let err = applying
        .await
        .expect("the apply task")
        .expect_err("a failed hook fails the apply");
    let message = format!("{err:#}");
    eprintln!("the apply failed with: {message}");
    assert!(
        message.contains(&format!(
            "bundle {bundle}: Helm hook batch/v1 Job {ns}/check (pre-install) failed: job failed: BackoffLimitExceeded"
        )),
        "{message}"
    );
    assert!(
        !exists(&c.configmaps(&ns), "app").await,
        "nothing after a failed pre-install hook is applied"
    );
    wait_until("hook-failed deletes the failed hook", || async {
        (!exists(&jobs(&c, &ns), "check").await).then_some(())
    })
    .await;
    t.remove(&bundle, false).await.expect("cleanup");
}
