//! The Kubernetes applier against a Kubernetes API test server (or a real cluster with
//! `FLOTILLA_E2E_KUBECONFIG`): apply order, inventory and pruning, drift and its
//! correction, health through status updates, spoke policy, and pruning after a restart.

mod common;

use std::time::Duration;

use common::{Cluster, cluster, desired, wait_until};
use flotilla_model::State;
use flotilla_spoke::target::kubernetes::INVENTORY_NAMESPACE;
use flotilla_spoke::target::{ApplyOptions, DriftIgnore, Policy, Target, enforce};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

/// A bundle with a Namespace, a CRD and one of its objects, a Deployment and ConfigMaps.
fn full_bundle(c: &Cluster, config_value: &str, with_extra: bool) -> String {
    let ns = c.n("shop");
    let group = format!("{}.example.com", c.id);
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
kind: Gadget
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
metadata: {{name: gadgets.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: gadgets, singular: gadget, kind: Gadget}}
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
"#
    );
    if with_extra {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: extra, namespace: {ns}}}\ndata: {{a: b}}\n"
        ));
    }
    yaml
}

fn gadgets(c: &Cluster) -> kube::Api<kube::api::DynamicObject> {
    c.api(
        &format!("{}.example.com/v1", c.id),
        "Gadget",
        "gadgets",
        Some(&c.n("shop")),
    )
}

fn deployments(c: &Cluster, ns: &str) -> kube::Api<kube::api::DynamicObject> {
    c.api("apps/v1", "Deployment", "deployments", Some(ns))
}

async fn cleanup(c: &Cluster, t: &dyn Target, bundles: &[&str]) {
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
        ApplyOptions::default(),
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
            "Gadget",
            "ConfigMap",
            "ConfigMap"
        ]
    );

    if c.is_test_server() {
        // No controller runs here, so the Deployment has not rolled out.
        assert_eq!(out.state, State::NotReady, "{out:?}");
        assert!(
            out.message.contains(&format!(
                "apps/v1 Deployment {ns}/web: waiting for the controller"
            )),
            "{}",
            out.message
        );
        assert_eq!(out.resources.len(), 1);
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
        ApplyOptions::default(),
    ))
    .await
    .expect("v1 applies");
    assert!(c.exists(&c.configmaps(&ns), "extra").await);

    t.apply(&desired(
        &bundle,
        "d-2",
        &full_bundle(&c, "slow", false),
        ApplyOptions::default(),
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
    let keep = ApplyOptions {
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
        ApplyOptions::default(),
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
        (!c.exists(&namespaces, &ns).await
            && !c
                .exists(&crds, &format!("gadgets.{}.example.com", c.id))
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
    t.apply(&desired(&b2, "d-1", &yaml, ApplyOptions::default()))
        .await
        .expect("applies");
    t.remove(&b2, true).await.expect("forgotten");
    assert!(c.exists(&c.configmaps(&ns2), "c").await);
    assert!(
        !c.exists(&c.configmaps(INVENTORY_NAMESPACE), &format!("bundle-{b2}"))
            .await
    );
    if !c.is_test_server() {
        let _ = namespaces.delete(&ns2, &DeleteParams::default()).await;
    }
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
        ApplyOptions::default(),
    );
    t.apply(&plain).await.expect("applies");

    // Someone edits a field flotilla owns and deletes an object.
    c.configmaps(&ns)
        .patch(
            "settings",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"mode": "hacked"}})),
        )
        .await
        .expect("out-of-band edit");
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

    let out = t.check(&plain).await.expect("check works");
    assert_eq!(out.state, State::Modified, "{out:?}");
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
        ApplyOptions {
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
    let ignore: Vec<DriftIgnore> = serde_json::from_value(json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": ns,
        "operations": [{"op": "remove", "path": "/spec/replicas"}]
    }]))
    .expect("comparePatches parse");
    let d = desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", false),
        ApplyOptions {
            ignore,
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
    assert_ne!(t.check(&d).await.expect("check").state, State::Modified);
    let strict = desired(
        &bundle,
        "d-1",
        &full_bundle(&c, "fast", false),
        ApplyOptions::default(),
    );
    let out = t.check(&strict).await.expect("check");
    assert!(
        out.message.contains("/spec/replicas: 2 -> 7"),
        "{}",
        out.message
    );
    cleanup(&c, &t, &[&bundle]).await;
}

#[tokio::test]
async fn health_moves_from_not_ready_to_ready_through_status_updates() {
    let c = cluster().await;
    if !c.is_test_server() {
        eprintln!("SKIP: status is patched by hand here; on a real cluster controllers own it");
        return;
    }
    let t = c.target(Policy::default());
    let yaml = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: api:1}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: default}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: migrate:1}]
"#;
    let d = desired("app", "d-1", yaml, ApplyOptions::default());
    let out = t.apply(&d).await.expect("applies");
    assert_eq!(out.state, State::NotReady);
    assert!(
        out.message.contains("apps/v1 Deployment default/api"),
        "{}",
        out.message
    );
    assert!(
        out.message
            .contains("batch/v1 Job default/migrate: job has not completed"),
        "{}",
        out.message
    );

    let deploy = deployments(&c, "default");
    deploy
        .patch_status(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}})),
        )
        .await
        .expect("status");
    let out = t.check(&d).await.expect("check");
    assert!(
        out.message
            .contains("apps/v1 Deployment default/api: 1 of 2 updated replicas available"),
        "{}",
        out.message
    );
    deploy
        .patch_status(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"availableReplicas": 2}})),
        )
        .await
        .expect("status");
    let out = t.check(&d).await.expect("check");
    assert_eq!(out.resources.len(), 1, "only the Job is left: {out:?}");

    c.api("batch/v1", "Job", "jobs", Some("default"))
        .patch_status(
            "migrate",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}})),
        )
        .await
        .expect("status");
    let out = t.check(&d).await.expect("check");
    assert_eq!(out.state, State::Ready, "{out:?}");
    assert!(out.resources.is_empty());
}

#[tokio::test]
async fn a_bundle_that_breaks_the_spoke_policy_is_refused_whole_and_nothing_is_applied() {
    let c = cluster().await;
    let allowed = c.n("team-a");
    let policy = Policy::parse(&allowed, "ClusterRoleBinding.rbac.authorization.k8s.io")
        .expect("policy parses");
    let t = c.target(policy);
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
        .apply(&desired(&bundle, "d-1", &yaml, ApplyOptions::default()))
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
    let d = desired(&bundle, "d-1", &earlier, ApplyOptions::default());
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
    if !c.is_test_server() {
        let _ = namespaces.delete(&outside, &DeleteParams::default()).await;
    }
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
                ApplyOptions::default(),
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
            ApplyOptions::default(),
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
        t.apply(&desired(&bundle, "d-1", unknown, ApplyOptions::default()))
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
        t.apply(&desired(&bundle, "d-1", broken, ApplyOptions::default()))
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
    let other = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": owned, "namespace": "default"}, "data": {"k": "theirs"}});
    c.configmaps("default")
        .patch(
            &owned,
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await
        .expect("someone else applies first");
    let err = format!(
        "{:#}",
        t.apply(&desired(&bundle, "d-1", &cm, ApplyOptions::default()))
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
        ApplyOptions {
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
    t.apply(&desired(&a, "d-1", &cm, ApplyOptions::default()))
        .await
        .expect("a applies");
    t.apply(&desired(&b, "d-1", &cm, ApplyOptions::default()))
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
async fn a_missing_target_namespace_is_created_and_is_not_pruned() {
    let c = cluster().await;
    let t = c.target(Policy::default());
    let bundle = c.n("ns");
    let ns = c.n("elsewhere");
    let yaml = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {ns}}}\n");
    t.apply(&desired(&bundle, "d-1", &yaml, ApplyOptions::default()))
        .await
        .expect("applies into a namespace the bundle does not declare");
    assert!(c.exists(&c.configmaps(&ns), "c").await);
    t.remove(&bundle, false).await.expect("removed");
    let namespaces = c.api("v1", "Namespace", "namespaces", None);
    assert!(
        c.exists(&namespaces, &ns).await,
        "the namespace was not the bundle's to delete"
    );
    if !c.is_test_server() {
        let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    }
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
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"k": "theirs"}});
    c.configmaps("default")
        .patch(
            &name,
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await
        .expect("someone else applies first");
    let d = desired(&bundle, "d-1", &cm, ApplyOptions::default());
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
        ApplyOptions::default(),
    ))
    .await
    .expect("applies");
    c.configmaps("default")
        .patch(
            &name,
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"k": "by hand"}})),
        )
        .await
        .expect("edited by hand");

    let plain = desired(&bundle, "d-2", &cm("two"), ApplyOptions::default());
    let err = format!("{:#}", t.apply(&plain).await.expect_err("conflict"));
    assert!(err.contains("kubectl-edit"), "{err}");

    let correcting = desired(
        &bundle,
        "d-2",
        &cm("two"),
        ApplyOptions {
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
