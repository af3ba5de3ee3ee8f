//! The test server driven by kube-rs the way flotilla's spoke drives a cluster:
//! discovery, the dynamic API, server-side apply with a field manager and force,
//! the status subresource, CRDs waited on until Established, and kube-runtime
//! watchers. Each test cites the Kubernetes documentation it relies on.

mod common;

use std::time::Duration;

use common::{client, start};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::Discovery;
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

// https://kubernetes.io/docs/concepts/overview/kubernetes-api/#discovery-api
// https://kubernetes.io/docs/reference/using-api/server-side-apply/
#[tokio::test]
async fn discovery_and_the_dynamic_api_apply_a_deployment_server_side() {
    let s = start().await;
    let c = client(&s).await;
    let discovery = Discovery::new(c.clone())
        .run()
        .await
        .expect("discovery runs");
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .expect("Deployment is discoverable");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "deployments/status" || sub.plural == "status"),
        "{:?}",
        caps.subresources
    );
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let manifest: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}))
    .expect("valid object");
    let pp = PatchParams::apply("flotilla").force();
    let applied = api
        .patch("web", &pp, &Patch::Apply(&manifest))
        .await
        .expect("apply");
    assert_eq!(applied.metadata.generation, Some(1));
    let mf = applied.metadata.managed_fields.expect("managedFields");
    assert_eq!(mf[0].manager.as_deref(), Some("flotilla"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Re-applying the same manifest is a no-op: same resourceVersion.
    let again = api
        .patch("web", &pp, &Patch::Apply(&manifest))
        .await
        .expect("apply");
    assert_eq!(
        again.metadata.resource_version,
        applied.metadata.resource_version
    );

    // Someone scales it by hand; a non-forced apply conflicts, a forced one wins.
    api.patch(
        "web",
        &PatchParams {
            field_manager: Some("kubectl-scale".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .expect("merge patch");
    let err = api
        .patch(
            "web",
            &PatchParams::apply("flotilla"),
            &Patch::Apply(&manifest),
        )
        .await
        .expect_err("conflict");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409);
            assert!(
                status.message.contains(".spec.replicas"),
                "{}",
                status.message
            );
            assert!(
                status.message.contains("kubectl-scale"),
                "{}",
                status.message
            );
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    let back = api
        .patch("web", &pp, &Patch::Apply(&manifest))
        .await
        .expect("forced apply");
    assert_eq!(back.data["spec"]["replicas"], 2);
    assert_eq!(back.metadata.generation, Some(3));
}

// https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/#update-replace-status-of-the-specified-deployment
#[tokio::test]
async fn status_patches_mark_a_deployment_available_and_a_job_complete() {
    let s = start().await;
    let c = client(&s).await;
    let discovery = Discovery::new(c.clone())
        .run()
        .await
        .expect("discovery runs");
    let (deploy_ar, _) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .expect("known");
    let (job_ar, _) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("batch", "v1", "Job"))
        .expect("known");
    let deployments: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &deploy_ar);
    let jobs: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &job_ar);
    let pp = PatchParams::apply("flotilla");
    let d: DynamicObject = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .expect("object");
    deployments
        .patch("d", &pp, &Patch::Apply(&d))
        .await
        .expect("apply");
    let status = json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}});
    let after = deployments
        .patch_status("d", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    assert_eq!(after.data["status"]["availableReplicas"], 1);
    assert_eq!(after.metadata.generation, Some(1));

    let j: DynamicObject = serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "i"}]}}}}))
    .expect("object");
    jobs.patch("j", &pp, &Patch::Apply(&j))
        .await
        .expect("apply");
    let done =
        json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
    let after = jobs
        .patch_status("j", &PatchParams::default(), &Patch::Merge(&done))
        .await
        .expect("status patch");
    assert_eq!(after.data["status"]["conditions"][0]["type"], "Complete");
    let spec_apply = jobs
        .patch("j", &pp, &Patch::Apply(&j))
        .await
        .expect("re-apply");
    assert_eq!(
        spec_apply.data["status"]["succeeded"], 1,
        "applying the main resource keeps status"
    );
}

// https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/
#[tokio::test]
async fn a_crd_is_established_and_its_kind_is_discoverable_and_appliable() {
    let s = start().await;
    let c = client(&s).await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                    "properties": {"ports": {"type": "array", "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}}}}}}}]}}))
        .expect("crd");
    crds.patch(
        "gadgets.example.com",
        &PatchParams::apply("flotilla"),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply crd");
    tokio::time::timeout(
        WAIT,
        await_condition(
            crds.clone(),
            "gadgets.example.com",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("established in time")
    .expect("wait works");

    let discovery = Discovery::new(c.clone())
        .run()
        .await
        .expect("discovery runs");
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Gadget"))
        .expect("the new kind is discoverable");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    let gadgets: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
    let g = |ports: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Gadget",
            "metadata": {"name": "g"}, "spec": {"ports": ports}}))
        .expect("object")
    };
    let pp = PatchParams::apply("flotilla");
    gadgets
        .patch(
            "g",
            &pp,
            &Patch::Apply(&g(
                json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}]),
            )),
        )
        .await
        .expect("apply");
    // Another manager adds an item to the map-list; flotilla dropping "b" keeps "c".
    gadgets
        .patch(
            "g",
            &PatchParams::apply("other"),
            &Patch::Apply(&g(json!([{"name": "c", "port": 3}]))),
        )
        .await
        .expect("apply");
    let after = gadgets
        .patch(
            "g",
            &pp,
            &Patch::Apply(&g(json!([{"name": "a", "port": 1}]))),
        )
        .await
        .expect("apply");
    let names: Vec<&str> = after.data["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, vec!["a", "c"]);
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes
// (kube-runtime's watcher: list, then watch from the list's resourceVersion)
#[tokio::test]
async fn a_kube_runtime_watcher_sees_the_initial_state_then_changes_and_deletions() {
    for streaming in [false, true] {
        let s = start().await;
        let c = client(&s).await;
        let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
        let mk = |name: &str| -> ConfigMap {
            serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"app": "w"}}, "data": {"k": "v"}}),
            )
            .expect("cm")
        };
        cms.create(&PostParams::default(), &mk("before"))
            .await
            .expect("create");
        let cfg = watcher::Config::default().labels("app=w");
        let cfg = if streaming {
            cfg.streaming_lists()
        } else {
            cfg
        };
        let mut stream = watcher(cms.clone(), cfg).boxed();
        let mut seen_init = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, stream.try_next())
                .await
                .expect("event in time")
                .expect("ok")
            {
                Some(watcher::Event::InitApply(cm)) => {
                    seen_init.push(cm.metadata.name.unwrap_or_default())
                }
                Some(watcher::Event::InitDone) => break,
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
        assert_eq!(seen_init, vec!["before"], "streaming={streaming}");
        cms.create(&PostParams::default(), &mk("after"))
            .await
            .expect("create");
        cms.delete("before", &DeleteParams::default())
            .await
            .expect("delete");
        let mut applied = None;
        let mut deleted = None;
        while applied.is_none() || deleted.is_none() {
            match tokio::time::timeout(WAIT, stream.try_next())
                .await
                .expect("event in time")
                .expect("ok")
            {
                Some(watcher::Event::Apply(cm)) => applied = cm.metadata.name,
                Some(watcher::Event::Delete(cm)) => deleted = cm.metadata.name,
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
        assert_eq!(
            (applied.as_deref(), deleted.as_deref()),
            (Some("after"), Some("before"))
        );
        let listed = cms
            .list(&ListParams::default().labels("app=w"))
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 1);
    }
}
