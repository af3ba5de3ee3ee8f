//! The Kubernetes applier against a real kube-apiserver (`tests/k8s/up`, or any cluster
//! named by `FLOTILLA_E2E_KUBECONFIG`), as the spoke's restricted ServiceAccount: apply order, inventory and pruning, drift and its
//! correction, health through status updates, spoke policy, pruning after a restart, and
//! the Kubernetes Events the applier records.

mod common;

use std::time::Duration;

use common::{Cluster, TEST_CLUSTER, cluster, desired, wait_until};
use flotilla_model::{ComparePatch, IgnoreCondition, State};
use flotilla_spoke::applier::kubernetes::{INVENTORY_NAMESPACE, KubeApplier, REPORTING_CONTROLLER};
use flotilla_spoke::applier::{
    Applier, DeployOptions, Desired, Outcome, Policy, PolicySpec, enforce,
};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

/// A bundle with a Namespace, a CRD and one of its objects, a Deployment and ConfigMaps.
fn full_bundle(c: &Cluster, config_value: &str, with_extra: bool) -> String {
    let ns = c.n("shop");
    let (group, plural, kind) = gadget_names(c);
    let mut yaml = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
apiVersion: {group}/v1
kind: {kind}
metadata: {{name: g1, namespace: {ns}}}
spec: {{size: 3}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{mode: "{config_value}"}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: {plural}, singular: {singular}, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
---
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
"#,
        singular = plural.trim_end_matches('s'),
    );
    if with_extra {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: extra, namespace: {ns}}}\ndata: {{a: b}}\n"
        ));
    }
    yaml
}

/// The test CRD's group, plural and kind. The group is fixed so that the spoke's
/// ClusterRole (`examples/spoke-rbac.yaml`) can grant it; the names carry the test's
/// suffix so tests sharing a cluster do not collide.
fn gadget_names(c: &Cluster) -> (String, String, String) {
    (
        "test.flotilla.dev".to_string(),
        format!("gadgets{}", c.id),
        format!("Gadget{}", c.id),
    )
}

fn gadgets(c: &Cluster) -> kube::Api<kube::api::DynamicObject> {
    let (group, plural, kind) = gadget_names(c);
    c.api(&format!("{group}/v1"), &kind, &plural, Some(&c.n("shop")))
}

fn deployments(c: &Cluster, ns: &str) -> kube::Api<kube::api::DynamicObject> {
    c.api("apps/v1", "Deployment", "deployments", Some(ns))
}

/// Checks `d` until the outcome is what `want` says. Checks read the watch caches, which
/// hold an out-of-band change a moment after the API server accepted it (the watch event
/// that delivers it also wakes the agent, which then checks again).
async fn check_until(
    t: &KubeApplier,
    d: &Desired,
    what: &str,
    want: impl Fn(&Outcome) -> bool,
) -> Outcome {
    wait_until(what, || async {
        let out = t.check(d).await.expect("check works");
        want(&out).then_some(out)
    })
    .await
}

async fn cleanup(c: &Cluster, t: &dyn Applier, bundles: &[&str]) {
    for b in bundles {
        t.remove(b, false).await.expect("cleanup");
    }
    let _ = c;
}

#[tokio::test]
async fn a_bundle_with_a_namespace_a_crd_and_its_object_a_deployment_and_a_configmap_is_applied() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("shop");
    let d = desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", true),
        DeployOptions::default(),
    );

    let out = t.apply(&d).await.expect("the bundle applies");

    let ns = c.n("shop");
    let cm = c
        .configmaps(&ns)
        .get("settings")
        .await
        .expect("ConfigMap exists");
    assert_eq!(cm.data["data"]["mode"], "fast");
    let labels = cm.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("flotilla")
    );
    let annotations = cm.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("flotilla.dev/bundle"), Some(&bundle));
    let managers: Vec<_> = cm
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(
        managers,
        vec!["flotilla".to_string()],
        "server-side applied by flotilla"
    );
    let g = gadgets(&c)
        .get("g1")
        .await
        .expect("the custom object exists");
    assert_eq!(g.data["spec"]["size"], 3);
    assert!(c.exists(&deployments(&c, &ns), "web").await);

    // The inventory remembers every object, in apply order.
    let inv = c
        .configmaps(INVENTORY_NAMESPACE)
        .get(&format!("bundle-{bundle}"))
        .await
        .expect("inventory exists");
    let objects: Vec<serde_json::Value> =
        serde_json::from_str(inv.data["data"]["objects"].as_str().expect("objects")).expect("JSON");
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "Namespace",
            "CustomResourceDefinition",
            "Deployment",
            gadget_names(&c).2.as_str(),
            "ConfigMap",
            "ConfigMap"
        ]
    );

    if !c.controllers_run() {
        // No controller runs here, so the Deployment has not rolled out.
        assert_eq!(out.state, State::NotReady, "{out:?}");
        assert!(
            out.message.contains(&format!(
                "apps/v1 Deployment {ns}/web: waiting for the controller"
            )),
            "{}",
            out.message
        );
        assert_eq!(out.resources.len(), 1, "{:?}", out.resources);
    }
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn changing_a_bundle_updates_objects_and_an_object_dropped_from_it_is_pruned() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("shop");
    let ns = c.n("shop");
    t.apply(&desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", true),
        DeployOptions::default(),
    ))
    .await
    .expect("v1 applies");
    assert!(c.exists(&c.configmaps(&ns), "extra").await);

    t.apply(&desired(
        &bundle,
        "d-2",
        &full_bundle(&c, "slow", false),
        DeployOptions::default(),
    ))
    .await
    .expect("v2 applies");

    assert!(
        !c.exists(&c.configmaps(&ns), "extra").await,
        "dropped object is pruned"
    );
    let cm = c
        .configmaps(&ns)
        .get("settings")
        .await
        .expect("still there");
    assert_eq!(cm.data["data"]["mode"], "slow");
    assert!(c.exists(&gadgets(&c), "g1").await, "the rest stays");

    // With keepResources, a dropped object stays (and is forgotten).
    let keep = DeployOptions {
        keep_resources: true,
        ..Default::default()
    };
    t.apply(&desired(
        &bundle,
        "d-3",
        &full_bundle(&c, "slow", true),
        keep.clone(),
    ))
    .await
    .expect("v3 applies");
    t.apply(&desired(
        &bundle,
        "d-4",
        &full_bundle(&c, "slow", false),
        keep,
    ))
    .await
    .expect("v4 applies");
    assert!(c.exists(&c.configmaps(&ns), "extra").await, "kept");
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn unassigning_deletes_the_bundles_objects_unless_keep_resources() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("shop");
    let ns = c.n("shop");
    t.apply(&desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", false),
        DeployOptions::default(),
    ))
    .await
    .expect("applies");

    t.remove(&bundle, false).await.expect("removed");

    let namespaces = c.api("v1", "Namespace", "namespaces", None);
    let crds = c.api(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        None,
    );
    wait_until("the namespace and the CRD are gone", || async {
        (c.deleted(&namespaces, &ns).await
            && !c
                .exists(&crds, &{
                    let (group, plural, _) = gadget_names(&c);
                    format!("{plural}.{group}")
                })
                .await)
            .then_some(())
    })
    .await;
    assert!(
        !c.exists(
            &c.configmaps(INVENTORY_NAMESPACE),
            &format!("bundle-{bundle}")
        )
        .await
    );

    // keepResources: the objects stay, only the inventory goes.
    let b2 = c.n("kept");
    let ns2 = c.n("kept-ns");
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns2}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {ns2}}}\n"
    );
    t.apply(&desired(&b2, "d-1", &yaml, DeployOptions::default()))
        .await
        .expect("applies");
    t.remove(&b2, true).await.expect("forgotten");
    assert!(c.exists(&c.configmaps(&ns2), "c").await);
    assert!(
        !c.exists(&c.configmaps(INVENTORY_NAMESPACE), &format!("bundle-{b2}"))
            .await
    );
    let _ = namespaces.delete(&ns2, &DeleteParams::default()).await;
}

#[tokio::test]
async fn out_of_band_edits_and_deletions_are_modified_with_a_field_diff_then_corrected() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let changed = t.changes().expect("the Kubernetes target has watches");
    let bundle = c.n("shop");
    let ns = c.n("shop");
    let plain = desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", true),
        DeployOptions::default(),
    );
    t.apply(&plain).await.expect("applies");

    // Someone edits a field flotilla owns and deletes an object.
    c.edit_by_hand(&ns, "settings", json!({"mode": "hacked"}))
        .await;
    c.configmaps(&ns)
        .delete("extra", &DeleteParams::default())
        .await
        .expect("out-of-band delete");
    // The watches see it, wake the agent and name the bundle.
    tokio::time::timeout(Duration::from_secs(20), changed.notified())
        .await
        .expect("a drift watch fires");
    wait_until("a drift watch names the bundle", || async {
        t.changed_bundles()
            .is_some_and(|b| b.contains(&bundle))
            .then_some(())
    })
    .await;

    // The first watch event may be another object's (the stand-in controller writes the
    // Deployment's status), before the caches hold both edits: wait for the check to see them.
    let out = wait_until("the check reports both edits", || async {
        t.check(&plain).await.ok().filter(|o| {
            o.state == State::Modified
                && o.message.contains("settings")
                && o.message.contains("extra")
        })
    })
    .await;
    assert!(
        out.message.contains(&format!(
            "v1 ConfigMap {ns}/settings: /data/mode: \"fast\" -> \"hacked\""
        )),
        "{}",
        out.message
    );
    assert!(
        out.message
            .contains(&format!("v1 ConfigMap {ns}/extra: deleted")),
        "{}",
        out.message
    );
    let settings = out
        .resources
        .iter()
        .find(|r| r.name == "settings")
        .expect("listed in resources");
    assert_eq!(settings.state, State::Modified);

    // Without correctDrift the agent only reports.
    let still = enforce(&t, &plain, State::NotReady, &|| {})
        .await
        .expect("checked");
    assert_eq!(still.state, State::Modified);
    assert_eq!(
        c.configmaps(&ns).get("settings").await.expect("cm").data["data"]["mode"],
        "hacked"
    );

    // With correctDrift it re-applies (taking the field back from kubectl-edit).
    let correcting = desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", true),
        DeployOptions {
            correct_drift: true,
            ..Default::default()
        },
    );
    let fixed = enforce(&t, &correcting, State::Modified, &|| {})
        .await
        .expect("corrected");
    assert_ne!(fixed.state, State::Modified, "{fixed:?}");
    assert_ne!(fixed.state, State::ErrApplied, "{fixed:?}");
    assert_eq!(
        c.configmaps(&ns).get("settings").await.expect("cm").data["data"]["mode"],
        "fast"
    );
    assert!(
        c.exists(&c.configmaps(&ns), "extra").await,
        "deleted object is back"
    );
    let after = t.check(&plain).await.expect("check");
    assert_ne!(after.state, State::Modified, "{after:?}");

    // Fields other managers add are not drift.
    c.configmaps(&ns)
        .patch(
            "settings",
            &PatchParams {
                field_manager: Some("other".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"added": "x"}, "metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .expect("additive edit");
    assert_ne!(t.check(&plain).await.expect("check").state, State::Modified);
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn compare_patches_make_drift_detection_ignore_fields() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("shop");
    let ns = c.n("shop");
    let ignore: Vec<ComparePatch> = serde_json::from_value(json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": ns,
        "operations": [{"op": "remove", "path": "/spec/replicas"}]
    }]))
    .expect("comparePatches parse");
    let d = desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", false),
        DeployOptions {
            compare_patches: ignore,
            ..Default::default()
        },
    );
    t.apply(&d).await.expect("applies");
    deployments(&c, &ns)
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("hpa".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .expect("scaled");
    let strict = desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", false),
        DeployOptions::default(),
    );
    check_until(
        &t,
        &strict,
        "the scaling is drift without comparePatches",
        |out| out.message.contains("/spec/replicas: 2 -> 7"),
    )
    .await;
    assert_ne!(t.check(&d).await.expect("check").state, State::Modified);
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn fleet_yaml_ignore_conditions_and_compare_patch_ops_hold_against_the_api_server() {
    let c = cluster().await;
    if c.controllers_run() {
        eprintln!("SKIP: status is set by hand here; on a cluster with controllers they own it");
        return;
    }
    let t = c.target(Policy::default());
    let ns = c.n("ignore");
    let yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec: {{containers: [{{name: api, image: api:1}}]}}
"#
    );
    let bundle = c.n("ign");
    let plain = desired(&bundle, "d-1", &yaml, DeployOptions::default());
    t.apply(&plain).await.expect("applies");
    // All replicas up, but the Progressing condition says the deadline passed.
    let now = "2026-01-01T00:00:00Z";
    c.admin_api("apps/v1", "Deployment", "deployments", Some(&ns))
        .patch_status(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                "readyReplicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Progressing", "status": "False",
                    "reason": "ProgressDeadlineExceeded", "message": "slow",
                    "lastUpdateTime": now, "lastTransitionTime": now}]
            }})),
        )
        .await
        .expect("status");
    check_until(&t, &plain, "the deadline to count", |out| {
        out.message
            .contains("rollout failed: ProgressDeadlineExceeded")
    })
    .await;
    let ignoring = desired(
        &bundle,
        "d-1",
        &yaml,
        DeployOptions {
            ignore_conditions: vec![IgnoreCondition(
                [
                    ("type".to_string(), "Progressing".to_string()),
                    ("reason".to_string(), "ProgressDeadlineExceeded".to_string()),
                ]
                .into(),
            )],
            ..Default::default()
        },
    );
    assert_eq!(t.check(&ignoring).await.expect("check").state, State::Ready);

    // Someone scales by hand; a comparePatch that replaces replicas on both sides hides it,
    // and one whose test does not hold on the live object does not.
    deployments(&c, &ns)
        .patch(
            "api",
            &PatchParams {
                field_manager: Some("hpa".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("scaled");
    check_until(&t, &plain, "the scale to be drift", |out| {
        out.state == State::Modified
    })
    .await;
    let patched = |ops: serde_json::Value| {
        let ignore: Vec<ComparePatch> = serde_json::from_value(json!([{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "operations": ops
        }]))
        .expect("comparePatches parse");
        desired(
            &bundle,
            "d-1",
            &yaml,
            DeployOptions {
                compare_patches: ignore,
                ..Default::default()
            },
        )
    };
    let replaced = patched(json!([{"op": "replace", "path": "/spec/replicas", "value": 0}]));
    assert_ne!(
        t.check(&replaced).await.expect("check").state,
        State::Modified
    );
    let tested = patched(json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 0}
    ]));
    let out = t.check(&tested).await.expect("check");
    assert_eq!(out.state, State::Modified, "{out:?}");
    assert!(
        out.message.contains("/spec/replicas: 0 -> 4"),
        "{}",
        out.message
    );
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn a_namespace_marked_keep_survives_its_bundle_and_a_plain_one_is_pruned() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    // What the renderer makes of fleet.yaml `namespaceLabels` without and with
    // `deleteNamespace`.
    let (kept, gone) = (c.n("kept"), c.n("gone"));
    let yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {kept}
  labels: {{team: a}}
  annotations: {{helm.sh/resource-policy: keep}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: {gone}
  labels: {{team: a}}
"#
    );
    let bundle = c.n("nsmeta");
    let d = desired(&bundle, "d-1", &yaml, DeployOptions::default());
    t.apply(&d).await.expect("applies");
    let namespaces = c.admin_api("v1", "Namespace", "namespaces", None);
    let live = namespaces.get(&kept).await.expect("kept namespace");
    assert_eq!(
        live.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("a")
    );
    t.remove(&bundle, false).await.expect("removes");
    let deleting = |name: &str| {
        let namespaces = namespaces.clone();
        let name = name.to_string();
        async move {
            namespaces
                .get_opt(&name)
                .await
                .expect("get")
                .is_none_or(|n| n.metadata.deletion_timestamp.is_some())
        }
    };
    assert!(
        deleting(&gone).await,
        "a namespace without keep goes with its bundle"
    );
    assert!(
        !deleting(&kept).await,
        "helm.sh/resource-policy: keep stays"
    );
    namespaces
        .delete(&kept, &Default::default())
        .await
        .expect("test cleanup");
}

#[tokio::test]
async fn health_moves_from_not_ready_to_ready_through_status_updates() {
    let c = cluster().await;
    if c.controllers_run() {
        eprintln!("SKIP: status is set by hand here; on a cluster with controllers they own it");
        return;
    }
    // No kubelet and no controllers run (the etcd + kube-apiserver of
    // tests/k8s/up), so the test writes status through the status subresource, as the
    // Deployment and Job controllers would, with the admin's credentials.
    let t = c.target(Policy::default());
    let ns = c.n("health");
    let yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec: {{containers: [{{name: api, image: api:1}}]}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate, namespace: {ns}}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: m, image: migrate:1}}]
"#
    );
    let bundle = c.n("app");
    let d = desired(&bundle, "d-1", &yaml, DeployOptions::default());
    let out = t.apply(&d).await.expect("applies");
    assert_eq!(out.state, State::NotReady);
    assert!(
        out.message
            .contains(&format!("apps/v1 Deployment {ns}/api")),
        "{}",
        out.message
    );
    assert!(
        out.message
            .contains(&format!("batch/v1 Job {ns}/migrate: job has not completed")),
        "{}",
        out.message
    );

    let deploy = c.admin_api("apps/v1", "Deployment", "deployments", Some(&ns));
    deploy
        .patch_status(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}})),
        )
        .await
        .expect("status");
    let half = format!("apps/v1 Deployment {ns}/api: 1 of 2 updated replicas available");
    check_until(&t, &d, &half, |out| out.message.contains(&half)).await;
    deploy
        .patch_status(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 2, "availableReplicas": 2}})),
        )
        .await
        .expect("status");
    let out = check_until(&t, &d, "the Deployment is ready", |out| {
        !out.message.contains("Deployment")
    })
    .await;
    assert_eq!(out.resources.len(), 1, "only the Job is left: {out:?}");

    // What the Job controller writes when a Job succeeds: the API server requires the
    // start and completion times and SuccessCriteriaMet before Complete.
    let now = "2026-01-01T00:00:00Z";
    c.admin_api("batch/v1", "Job", "jobs", Some(&ns))
        .patch_status(
            "migrate",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": now,
                "completionTime": now,
                "succeeded": 1,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now, "lastProbeTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now, "lastProbeTime": now}
                ]
            }})),
        )
        .await
        .expect("status");
    let out = check_until(&t, &d, "the Job is complete", |out| {
        out.state == State::Ready
    })
    .await;
    assert!(out.resources.is_empty());
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn a_bundle_that_breaks_the_spoke_policy_is_refused_whole_and_nothing_is_applied() {
    let c = cluster().await;
    let allowed = c.n("team-a");
    let policy = PolicySpec::from_flags(&allowed, "ClusterRoleBinding.rbac.authorization.k8s.io")
        .expect("policy parses");
    let t = c.target_with(&policy).await.expect("policy resolves");
    let bundle = c.n("sneaky");
    let yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {allowed}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: fine, namespace: {allowed}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: sneaky, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {bundle}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}
subjects: [{{kind: ServiceAccount, name: default, namespace: {allowed}}}]
"#
    );
    let err = t
        .apply(&desired(&bundle, "d-1", &yaml, DeployOptions::default()))
        .await
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "bundle {bundle} refused by spoke policy, nothing applied"
        )),
        "{msg}"
    );
    assert!(msg.contains("v1 ConfigMap kube-system/sneaky"), "{msg}");
    assert!(msg.contains(&format!("ClusterRoleBinding {bundle}: kind ClusterRoleBinding.rbac.authorization.k8s.io is denied")), "{msg}");

    let namespaces = c.api("v1", "Namespace", "namespaces", None);
    assert!(
        !c.exists(&namespaces, &allowed).await,
        "nothing was applied"
    );
    assert!(!c.exists(&c.configmaps("kube-system"), "sneaky").await);
    assert!(
        !c.exists(
            &c.configmaps(INVENTORY_NAMESPACE),
            &format!("bundle-{bundle}")
        )
        .await
    );

    // A bundle applied before the policy was tightened is reported refused on the next
    // check, in the same words.
    let open = c.target(Policy::default());
    let outside = c.n("outside");
    let earlier =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {outside}}}\n");
    let d = desired(&bundle, "d-1", &earlier, DeployOptions::default());
    open.apply(&d).await.expect("no policy, no refusal");
    let first = format!("{:#}", t.apply(&d).await.expect_err("refused now"));
    assert!(
        first.contains(&format!("v1 ConfigMap {outside}/c: namespace")),
        "{first}"
    );
    let checked = t.check(&d).await.expect("check runs");
    assert_eq!(checked.state, State::ErrApplied);
    assert_eq!(checked.message, first);
    open.remove(&bundle, false).await.expect("cleanup");
    let _ = namespaces.delete(&outside, &DeleteParams::default()).await;
}

#[tokio::test]
async fn a_restarted_spoke_prunes_from_the_inventory_stored_in_the_cluster() {
    let c = cluster().await;
    let bundle = c.n("shop");
    let ns = c.n("shop");
    {
        let first = c.target(Policy::default());
        first
            .apply(&desired(
                &bundle,
                "d-1",
                &full_bundle(&c, "fast", true),
                DeployOptions::default(),
            ))
            .await
            .expect("applies");
    } // the first applier is gone, with everything it held in memory

    let second = c.target(Policy::default());
    second
        .apply(&desired(
            &bundle,
            "d-2",
            &full_bundle(&c, "fast", false),
            DeployOptions::default(),
        ))
        .await
        .expect("applies");
    assert!(
        !c.exists(&c.configmaps(&ns), "extra").await,
        "pruned by the new applier"
    );

    let third = c.target(Policy::default());
    third.remove(&bundle, false).await.expect("unassigned");
    wait_until("the bundle's objects are gone", || async {
        (!c.exists(&c.configmaps(&ns), "settings").await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn errors_name_the_bundle_and_the_object() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("bad");

    let unknown = "apiVersion: nowhere.example.com/v1\nkind: Ghost\nmetadata: {name: boo}\n";
    let err = format!(
        "{:#}",
        t.apply(&desired(&bundle, "d-1", unknown, DeployOptions::default()))
            .await
            .expect_err("unknown kind")
    );
    assert!(
        err.contains(&format!(
            "bundle {bundle}: nowhere.example.com/v1 Ghost default/boo"
        )) || err.contains(&format!(
            "bundle {bundle}: nowhere.example.com/v1 Ghost boo"
        )),
        "{err}"
    );
    assert!(err.contains("does not serve kind Ghost"), "{err}");

    let broken = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n";
    let err = format!(
        "{:#}",
        t.apply(&desired(&bundle, "d-1", broken, DeployOptions::default()))
            .await
            .expect_err("bad YAML")
    );
    assert!(
        err.contains(&format!("bundle {bundle}: invalid YAML")),
        "{err}"
    );

    // A field another manager owns: a conflict without force, taken over with force.
    let owned = c.n("owned");
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {owned}, namespace: default}}\ndata: {{k: mine}}\n"
    );
    c.someone_else_applies("default", &owned, json!({"k": "theirs"}))
        .await;
    let err = format!(
        "{:#}",
        t.apply(&desired(&bundle, "d-1", &cm, DeployOptions::default()))
            .await
            .expect_err("conflict")
    );
    assert!(
        err.contains(&format!(
            "bundle {bundle}: applying v1 ConfigMap default/{owned}"
        )),
        "{err}"
    );
    assert!(err.contains("conflict"), "{err}");
    t.apply(&desired(
        &bundle,
        "d-1",
        &cm,
        DeployOptions {
            force: true,
            ..Default::default()
        },
    ))
    .await
    .expect("force takes the field");
    assert_eq!(
        c.configmaps("default").get(&owned).await.expect("cm").data["data"]["k"],
        "mine"
    );
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn an_object_another_bundle_took_over_is_not_pruned() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let (a, b) = (c.n("a"), c.n("b"));
    let name = c.n("shared");
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\n"
    );
    t.apply(&desired(&a, "d-1", &cm, DeployOptions::default()))
        .await
        .expect("a applies");
    t.apply(&desired(&b, "d-1", &cm, DeployOptions::default()))
        .await
        .expect("b takes it over");
    t.remove(&a, false).await.expect("a removed");
    assert!(
        c.exists(&c.configmaps("default"), &name).await,
        "b's object stays"
    );
    t.remove(&b, false).await.expect("b removed");
    assert!(!c.exists(&c.configmaps("default"), &name).await);
}

#[tokio::test]
async fn an_object_whose_apply_failed_is_not_pruned_when_the_bundle_drops_it() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("never-mine");
    let (theirs, mine) = (c.n("theirs"), c.n("mine"));
    c.someone_else_applies("default", &theirs, json!({"k": "theirs"}))
        .await;
    let own = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {mine}, namespace: default}}\n"
    );
    let both = format!(
        "{own}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {theirs}, namespace: default}}\ndata: {{k: mine}}\n"
    );
    t.apply(&desired(&bundle, "d-1", &both, DeployOptions::default()))
        .await
        .expect_err("the other manager's field conflicts");
    t.apply(&desired(&bundle, "d-2", &own, DeployOptions::default()))
        .await
        .expect("the revision without it applies");
    let cm = c
        .configmaps("default")
        .get_opt(&theirs)
        .await
        .expect("read")
        .expect("the object flotilla never applied is still there");
    assert_eq!(cm.data["data"]["k"], "theirs");
    cleanup(&c, &t, &[&bundle]).await;
    let _ = c
        .configmaps("default")
        .delete(&theirs, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_missing_target_namespace_is_created_and_is_not_pruned() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("ns");
    let ns = c.n("elsewhere");
    let yaml = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {ns}}}\n");
    t.apply(&desired(&bundle, "d-1", &yaml, DeployOptions::default()))
        .await
        .expect("applies into a namespace the bundle does not declare");
    assert!(c.exists(&c.configmaps(&ns), "c").await);
    t.remove(&bundle, false).await.expect("removed");
    let namespaces = c.api("v1", "Namespace", "namespaces", None);
    assert!(
        c.exists(&namespaces, &ns).await,
        "the namespace was not the bundle's to delete"
    );
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}

#[tokio::test]
async fn a_failed_bundle_is_applied_again_once_the_cause_is_gone() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("retry");
    let name = c.n("contested");
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata: {{k: mine}}\n"
    );
    c.someone_else_applies("default", &name, json!({"k": "theirs"}))
        .await;
    let d = desired(&bundle, "d-1", &cm, DeployOptions::default());
    let first = format!("{:#}", t.apply(&d).await.expect_err("conflict"));

    let again = enforce(&t, &d, State::ErrApplied, &|| {})
        .await
        .expect("retried");
    assert_eq!(again.state, State::ErrApplied);
    assert_eq!(again.message, first, "an unchanged failure reads the same");

    c.configmaps("default")
        .delete(&name, &DeleteParams::default())
        .await
        .expect("the other owner goes away");
    let fixed = enforce(&t, &d, State::ErrApplied, &|| {})
        .await
        .expect("retried");
    assert_eq!(fixed.state, State::Ready, "{fixed:?}");
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn a_new_revision_with_correct_drift_takes_back_fields_edited_by_hand() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("hand");
    let name = c.n("edited");
    let cm = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata: {{k: {v}, n: \"1\"}}\n"
        )
    };
    t.apply(&desired(
        &bundle,
        "d-1",
        &cm("one"),
        DeployOptions::default(),
    ))
    .await
    .expect("applies");
    c.edit_by_hand("default", &name, json!({"k": "by hand"}))
        .await;

    let plain = desired(&bundle, "d-2", &cm("two"), DeployOptions::default());
    let err = format!("{:#}", t.apply(&plain).await.expect_err("conflict"));
    assert!(err.contains("kubectl-edit"), "{err}");

    let correcting = desired(
        &bundle,
        "d-2",
        &cm("two"),
        DeployOptions {
            correct_drift: true,
            ..Default::default()
        },
    );
    t.apply(&correcting)
        .await
        .expect("correctDrift applies over the hand edit");
    assert_eq!(
        c.configmaps("default").get(&name).await.expect("cm").data["data"]["k"],
        "two"
    );
    cleanup(&c, &t, &[&bundle]).await;
}

/// A bundle of one ConfigMap, `c-<bundle>` in `default`, with `data.k`.
fn one_configmap(bundle: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c-{bundle}, namespace: default}}\ndata: {{k: {value}}}\n"
    )
}

#[tokio::test]
async fn an_applied_bundle_records_applied_and_pruned_events_on_its_inventory() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("shop");
    let ns = c.n("shop");
    t.apply(&desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", true),
        DeployOptions::default(),
    ))
    .await
    .expect("applies");

    let applied = c.wait_for_event(&bundle, "Applied", "d-1").await;
    assert_eq!(
        applied.note.as_deref(),
        Some(format!("Applied deployment d-1 of bundle {bundle}: 6 objects").as_str())
    );
    assert_eq!(applied.type_.as_deref(), Some("Normal"));
    assert_eq!(applied.action.as_deref(), Some("Apply"));
    assert_eq!(
        applied.reporting_controller.as_deref(),
        Some(REPORTING_CONTROLLER)
    );
    let instance = applied.reporting_instance.clone().unwrap_or_default();
    assert!(instance.starts_with(TEST_CLUSTER), "{instance}");
    let inventory = c
        .configmaps(INVENTORY_NAMESPACE)
        .get(&format!("bundle-{bundle}"))
        .await
        .expect("inventory exists");
    let regarding = applied.regarding.clone().expect("regarding");
    assert_eq!(
        (
            regarding.kind.as_deref(),
            regarding.namespace.as_deref(),
            regarding.name.as_deref()
        ),
        (
            Some("ConfigMap"),
            Some(INVENTORY_NAMESPACE),
            Some(format!("bundle-{bundle}").as_str())
        )
    );
    assert_eq!(
        regarding.uid, inventory.metadata.uid,
        "the uid lets kubectl describe find it"
    );

    // The next revision drops an object: applied and pruned, each said once.
    t.apply(&desired(
        &bundle,
        "d-2",
        &full_bundle(&c, "fast", false),
        DeployOptions::default(),
    ))
    .await
    .expect("applies");
    let pruned = c.wait_for_event(&bundle, "Pruned", "d-2").await;
    assert!(
        pruned
            .note
            .as_deref()
            .is_some_and(|n| n.ends_with(&format!("no longer holds: v1 ConfigMap {ns}/extra"))),
        "{:?}",
        pruned.note
    );
    assert_eq!(pruned.action.as_deref(), Some("Prune"));
    let reasons: Vec<String> = c
        .events_of(&bundle)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons, vec!["Applied", "Applied", "Pruned"]);

    // kubectl get events and kubectl describe read the core v1 view of the same Events.
    let core = c
        .api("v1", "Event", "events", Some(INVENTORY_NAMESPACE))
        .list(&kube::api::ListParams::default().fields(&format!(
            "involvedObject.uid={}",
            inventory.metadata.uid.clone().unwrap_or_default()
        )))
        .await
        .expect("core v1 events list");
    assert_eq!(core.items.len(), 3);
    assert!(
        core.items
            .iter()
            .any(|e| e.data["message"] == applied.note.clone().unwrap_or_default().as_str())
    );

    // Unassigning prunes everything, and says so.
    t.remove(&bundle, false).await.expect("removed");
    c.wait_for_event(&bundle, "Pruned", "no longer assigned")
        .await;
}

#[tokio::test]
async fn a_failing_apply_records_one_warning_with_the_error_however_often_it_is_retried() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("fails");
    let name = format!("c-{bundle}");
    c.someone_else_applies("default", &name, json!({"k": "theirs"}))
        .await;
    let d = desired(
        &bundle,
        "d-1",
        &one_configmap(&bundle, "mine"),
        DeployOptions::default(),
    );
    let error = format!("{:#}", t.apply(&d).await.expect_err("conflict"));

    let failed = c.wait_for_event(&bundle, "ApplyFailed", "d-1").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(
        failed.note.as_deref(),
        Some(format!("Applying deployment d-1 failed: {error}").as_str())
    );
    // The agent retries a failed bundle (after a growing backoff); the same failure is no news.
    for _ in 0..3 {
        let again = enforce(&t, &d, State::ErrApplied, &|| {})
            .await
            .expect("retried");
        assert_eq!(again.state, State::ErrApplied);
    }
    c.configmaps("default")
        .delete(&name, &DeleteParams::default())
        .await
        .expect("the other owner goes away");
    let fixed = enforce(&t, &d, State::ErrApplied, &|| {})
        .await
        .expect("retried");
    assert_eq!(fixed.state, State::Ready, "{fixed:?}");
    // Events are published in order, so once the recovery is there the retries would be.
    c.wait_for_event(&bundle, "Applied", "d-1").await;
    let failures: Vec<_> = c
        .events_of(&bundle)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ApplyFailed"))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].series.is_none(), "{:?}", failures[0].series);
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn corrected_drift_records_a_drift_corrected_event_naming_the_fields() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("drift");
    let name = format!("c-{bundle}");
    let d = desired(
        &bundle,
        "d-1",
        &one_configmap(&bundle, "one"),
        DeployOptions {
            correct_drift: true,
            ..Default::default()
        },
    );
    t.apply(&d).await.expect("applies");
    c.edit_by_hand("default", &name, json!({"k": "by-hand"}))
        .await;
    check_until(&t, &d, "the edit is seen", |out| {
        out.state == State::Modified
    })
    .await;

    let fixed = enforce(&t, &d, State::Ready, &|| {})
        .await
        .expect("corrected");
    assert_eq!(fixed.state, State::Ready, "{fixed:?}");

    let corrected = c.wait_for_event(&bundle, "DriftCorrected", "d-1").await;
    assert_eq!(corrected.type_.as_deref(), Some("Warning"));
    assert_eq!(
        corrected.note.as_deref(),
        Some(
            format!(
                "Re-applied deployment d-1 of bundle {bundle} over drift: \
                 v1 ConfigMap default/{name}: /data/k: \"one\" -> \"by-hand\""
            )
            .as_str()
        )
    );
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn drift_left_alone_records_one_drift_detected_warning_until_it_clears() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("drift-kept");
    let name = format!("c-{bundle}");
    let d = desired(
        &bundle,
        "d-1",
        &one_configmap(&bundle, "one"),
        DeployOptions::default(),
    );
    t.apply(&d).await.expect("applies");
    let edit = |value: &'static str| c.edit_by_hand("default", &name, json!({ "k": value }));
    let detected = |events: Vec<k8s_openapi::api::events::v1::Event>| {
        events
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("DriftDetected"))
            .count()
    };

    edit("by-hand").await;
    check_until(&t, &d, "the edit is seen", |out| {
        out.state == State::Modified
    })
    .await;
    for _ in 0..3 {
        let drifted = enforce(&t, &d, State::Ready, &|| {})
            .await
            .expect("checked");
        assert_eq!(drifted.state, State::Modified, "{drifted:?}");
    }
    let warning = c.wait_for_event(&bundle, "DriftDetected", "d-1").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning
            .note
            .as_deref()
            .is_some_and(|n| n.contains("/data/k: \"one\" -> \"by-hand\"")),
        "{warning:?}"
    );
    assert_eq!(
        c.configmaps("default").get(&name).await.expect("cm").data["data"]["k"],
        "by-hand",
        "without correctDrift the change is left as is"
    );

    // Put back by hand, then the same drift again: that is a new occurrence.
    edit("one").await;
    wait_until("the edit back is seen", || async {
        let clean = enforce(&t, &d, State::Modified, &|| {})
            .await
            .expect("checked");
        (clean.state == State::Ready).then_some(())
    })
    .await;
    edit("by-hand").await;
    wait_until("the same edit again is seen", || async {
        let drifted = enforce(&t, &d, State::Ready, &|| {})
            .await
            .expect("checked");
        (drifted.state == State::Modified).then_some(())
    })
    .await;
    wait_until("a second DriftDetected Event", || async {
        (detected(c.events_of(&bundle).await) == 2).then_some(())
    })
    .await;
    // Events are published in order: a d-2 Event proves no third one was queued before.
    // (d-2 forces: kubectl-edit owns data.k now.)
    t.apply(&desired(
        &bundle,
        "d-2",
        &one_configmap(&bundle, "two"),
        DeployOptions {
            force: true,
            ..Default::default()
        },
    ))
    .await
    .expect("applies");
    c.wait_for_event(&bundle, "Applied", "d-2").await;
    assert_eq!(detected(c.events_of(&bundle).await), 2);
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn a_reconcile_that_changes_nothing_records_no_event() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("quiet");
    let d = desired(
        &bundle,
        "d-1",
        &one_configmap(&bundle, "one"),
        DeployOptions::default(),
    );
    t.apply(&d).await.expect("applies");
    c.wait_for_event(&bundle, "Applied", "d-1").await;

    for _ in 0..3 {
        let same = enforce(&t, &d, State::Ready, &|| {})
            .await
            .expect("checked");
        assert_eq!(same.state, State::Ready, "{same:?}");
    }
    // Events are published in order: once d-2's is there, any from the rounds above
    // would be too.
    t.apply(&desired(
        &bundle,
        "d-2",
        &one_configmap(&bundle, "two"),
        DeployOptions::default(),
    ))
    .await
    .expect("applies");
    c.wait_for_event(&bundle, "Applied", "d-2").await;
    let events = c.events_of(&bundle).await;
    let notes: Vec<&str> = events.iter().filter_map(|e| e.note.as_deref()).collect();
    assert_eq!(
        notes,
        vec![
            format!("Applied deployment d-1 of bundle {bundle}: 1 object"),
            format!("Applied deployment d-2 of bundle {bundle}: 1 object"),
        ],
        "a new deployment is a new Event, not a repeat of the first"
    );
    assert!(events.iter().all(|e| e.series.is_none()));
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn a_bundle_refused_by_the_spoke_policy_records_policy_refused() {
    let c = cluster().await;
    let t = c
        .target_with(&PolicySpec::from_flags("", "Secret").expect("policy parses"))
        .await
        .expect("policy resolves");
    let bundle = c.n("refused");
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: s-{bundle}, namespace: default}}\n"
    );
    let error = format!(
        "{:#}",
        t.apply(&desired(&bundle, "d-1", &yaml, DeployOptions::default()))
            .await
            .expect_err("refused")
    );
    // On a fresh cluster this is the first Event, before any inventory namespace exists.
    let refused = c.wait_for_event(&bundle, "PolicyRefused", "d-1").await;
    assert_eq!(refused.type_.as_deref(), Some("Warning"));
    assert_eq!(
        refused.note.as_deref(),
        Some(format!("Deployment d-1 refused: {error}").as_str())
    );
    assert!(error.contains("refused by spoke policy"), "{error}");
}

#[tokio::test]
async fn an_events_api_that_refuses_events_does_not_fail_the_apply() {
    let c = cluster().await;
    // A spoke whose role lacks the Events Role of examples/spoke-rbac.yaml: the API
    // server refuses its Events with 403, and the apply must not care.
    let (sa, client) = c.spoke_without_events().await;
    let t = KubeApplier::new(client, Policy::default(), TEST_CLUSTER);
    let bundle = c.n("no-events");
    let name = format!("c-{bundle}");
    let refused_before = c.refused_requests().await;
    let out = t
        .apply(&desired(
            &bundle,
            "d-1",
            &one_configmap(&bundle, "one"),
            DeployOptions::default(),
        ))
        .await
        .expect("the apply succeeds without Events");
    assert_eq!(out.state, State::Ready, "{out:?}");
    assert!(c.exists(&c.configmaps("default"), &name).await);
    wait_until("the API server refused the Event", || async {
        (c.refused_requests().await > refused_before).then_some(())
    })
    .await;

    // The publisher carries on: once allowed, the next Event is recorded, and the
    // refused one is gone for good rather than queued.
    c.bind_role(&sa, "flotilla-spoke-events").await;
    wait_until("the authorizer allows the Events", || async {
        c.may_record_events(&sa).await.then_some(())
    })
    .await;
    t.apply(&desired(
        &bundle,
        "d-2",
        &one_configmap(&bundle, "two"),
        DeployOptions::default(),
    ))
    .await
    .expect("applies");
    c.wait_for_event(&bundle, "Applied", "d-2").await;
    let notes: Vec<String> = c
        .events_of(&bundle)
        .await
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    assert!(notes.iter().all(|n| !n.contains("d-1")), "{notes:?}");
    cleanup(&c, &t, &[&bundle]).await;
}

/// Applies `yaml` as bundle `bundle` and returns the refusal, or None if it applied.
async fn refusal(t: &dyn Applier, bundle: &str, yaml: &str) -> Option<String> {
    t.apply(&desired(bundle, "d-1", yaml, DeployOptions::default()))
        .await
        .err()
        .map(|e| format!("{e:#}"))
}

#[tokio::test]
async fn deny_kinds_without_a_group_in_any_case_refuse_cluster_role_bindings_and_secrets() {
    let c = cluster().await;
    let spec = PolicySpec::from_flags("", "ClusterRoleBinding,secret").expect("parses");
    let t = c.target_with(&spec).await.expect("policy resolves");
    let (crb, secret, fine) = (c.n("crb"), c.n("secret"), c.n("fine"));
    let why = refusal(
        &t,
        &crb,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
             metadata: {{name: {crb}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}\n"
        ),
    )
    .await
    .expect("a ClusterRoleBinding is refused");
    assert!(
        why.contains("kind ClusterRoleBinding.rbac.authorization.k8s.io is denied"),
        "{why}"
    );
    let why = refusal(
        &t,
        &secret,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}, namespace: default}}\n"
        ),
    )
    .await
    .expect("a Secret is refused");
    assert!(why.contains("kind Secret is denied"), "{why}");
    assert_eq!(
        refusal(
            &t,
            &fine,
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {fine}, namespace: default}}\n"
            ),
        )
        .await,
        None,
        "a ConfigMap is not denied"
    );
    assert!(c.exists(&c.configmaps("default"), &fine).await);
    assert!(
        !c.exists(
            &c.admin_api("v1", "Secret", "secrets", Some("default")),
            &secret
        )
        .await
    );
    cleanup(&c, &t, &[&fine]).await;
}

#[tokio::test]
async fn a_policy_denying_a_kind_the_cluster_does_not_serve_is_a_startup_error() {
    let c = cluster().await;
    for (flag, named, nearest) in [
        ("ConfigMap,Secrets", "Secrets", "Secret"),
        ("Deployment.app", "Deployment.app", "Deployment.apps"),
    ] {
        let spec = PolicySpec::from_flags("", flag).expect("parses");
        let err = match c.target_with(&spec).await {
            Ok(_) => panic!("{flag}: accepted a kind the cluster does not serve"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(&format!(
                "denies kind {named}, which this cluster does not serve"
            )) && err.contains("nearest served kinds:")
                && err.contains(nearest),
            "{err}"
        );
    }
}

#[tokio::test]
async fn the_default_deny_example_refuses_cluster_admin_bindings_webhooks_and_system_namespaces() {
    let c = cluster().await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/spoke-policy/default-deny.yaml");
    let text = std::fs::read_to_string(&path).expect("the example policy");
    let spec = PolicySpec::from_yaml(&path, &text).expect("the example parses");
    let t = c.target_with(&spec).await.expect("the example resolves");
    let name = c.n("x");
    let refused = [
        (
            "a ClusterRoleBinding to cluster-admin",
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
                 metadata: {{name: {name}}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}\n\
                 subjects: [{{kind: ServiceAccount, name: default, namespace: default}}]\n"
            ),
            "binds ClusterRole \"cluster-admin\"",
        ),
        (
            "a RoleBinding to cluster-admin",
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
                 metadata: {{name: {name}, namespace: default}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}\n"
            ),
            "binds ClusterRole \"cluster-admin\"",
        ),
        (
            "a validating webhook",
            format!(
                "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n\
                 metadata: {{name: {name}}}\nwebhooks: []\n"
            ),
            "kind ValidatingWebhookConfiguration.admissionregistration.k8s.io is denied",
        ),
        (
            "a mutating webhook",
            format!(
                "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\n\
                 metadata: {{name: {name}}}\nwebhooks: []\n"
            ),
            "kind MutatingWebhookConfiguration.admissionregistration.k8s.io is denied",
        ),
        (
            "a ConfigMap in kube-system",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: kube-system}}\n"
            ),
            "namespace \"kube-system\" is denied",
        ),
    ];
    for (what, yaml, expected) in refused {
        let why = refusal(&t, &c.n("bad"), &yaml)
            .await
            .unwrap_or_else(|| panic!("{what} was applied"));
        assert!(why.contains(expected), "{what}: {why}");
    }
    let app = c.n("app");
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}, namespace: default}}\n\
         spec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}}}}}\n    spec:\n      containers: [{{name: web, image: nginx}}]\n"
    );
    assert_eq!(
        refusal(&t, &app, &deployment).await,
        None,
        "a normal Deployment applies"
    );
    assert!(c.exists(&deployments(&c, "default"), &app).await);
    cleanup(&c, &t, &[&app]).await;
}

#[tokio::test]
async fn an_empty_bundle_is_ready_and_prunes_what_the_bundle_held_before() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("emptied");
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {bundle}, namespace: default}}\n"
    );
    t.apply(&desired(&bundle, "d-1", &cm, DeployOptions::default()))
        .await
        .expect("applies");
    assert!(c.exists(&c.configmaps("default"), &bundle).await);
    let out = t
        .apply(&desired(&bundle, "d-2", "", DeployOptions::default()))
        .await
        .expect("nothing to apply is not an error");
    assert_eq!(out.state, State::Ready, "{}", out.message);
    assert!(!c.exists(&c.configmaps("default"), &bundle).await, "pruned");
    let checked = t
        .check(&desired(&bundle, "d-2", "", DeployOptions::default()))
        .await
        .expect("check runs");
    assert_eq!(checked.state, State::Ready, "{}", checked.message);
    cleanup(&c, &t, &[&bundle]).await;
}

/// A bundle of a CRD of the fixed test group with a plural unique to this test, and
/// `count` of its objects, so that the API server's request counters for that plural
/// count this test's requests alone.
fn idlers(c: &Cluster, count: usize) -> (String, String) {
    let (group, plural, kind) = (
        "test.flotilla.dev",
        format!("idlers{}", c.id),
        format!("Idler{}", c.id),
    );
    let mut yaml = format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: {plural}, singular: idler{id}, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#,
        id = c.id,
    );
    for i in 0..count {
        yaml.push_str(&format!(
            "---\napiVersion: {group}/v1\nkind: {kind}\nmetadata: {{name: i{i}, namespace: default}}\nspec: {{n: {i}}}\n"
        ));
    }
    (plural, yaml)
}

#[tokio::test]
async fn an_idle_applier_checks_from_its_watch_caches_and_sends_no_requests() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("idle");
    let (plural, yaml) = idlers(&c, 20);
    let d = desired(&bundle, "d-1", &yaml, DeployOptions::default());
    let applied = t.apply(&d).await.expect("applies");
    assert_eq!(applied.state, State::Ready, "{applied:?}");
    let requests = || c.requests_to("test.flotilla.dev", &plural);
    let one_round = || async {
        let out = enforce(&t, &d, State::Ready, &|| {})
            .await
            .expect("checked");
        assert_eq!(out.state, State::Ready, "{out:?}");
    };

    // The caches fill with one LIST and catch up with the apply through their watch.
    wait_until("a round is answered from the caches alone", || async {
        let before = requests().await;
        one_round().await;
        (requests().await == before).then_some(())
    })
    .await;
    let idle = requests().await;
    for _ in 0..10 {
        one_round().await;
    }
    assert_eq!(
        requests().await,
        idle,
        "ten idle rounds of checks sent no GET, LIST or write for {plural}"
    );

    // A change by someone else is confirmed with one GET, then read from the cache again.
    c.admin_api(
        "test.flotilla.dev/v1",
        &format!("Idler{}", c.id),
        &plural,
        Some("default"),
    )
    .patch(
        "i3",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"n": 33}})),
    )
    .await
    .expect("edited by hand");
    check_until(&t, &d, "the edit is seen", |out| {
        out.message.contains("/spec/n: 3 -> 33")
    })
    .await;
    for _ in 0..5 {
        t.check(&d).await.expect("check works");
    }
    // The hand edit's PATCH, and the spoke's one GET.
    let mut expected = idle.clone();
    for verb in ["PATCH", "GET"] {
        *expected.entry(verb.to_string()).or_default() += 1;
    }
    assert_eq!(requests().await, expected);
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn the_target_reports_the_servers_version_and_the_api_versions_it_serves() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let caps = t
        .capabilities()
        .await
        .expect("a cluster reports its capabilities");
    let version = c.admin.apiserver_version().await.expect("/version");
    assert_eq!(caps.kube_version, version.git_version);
    for served in ["v1", "apps/v1", "apps/v1/Deployment", "v1/ConfigMap"] {
        assert!(
            caps.api_versions.iter().any(|v| v == served),
            "{served} missing from {:?}",
            caps.api_versions
        );
    }
    let mut sorted = caps.api_versions.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, caps.api_versions, "sorted, without duplicates");
}
