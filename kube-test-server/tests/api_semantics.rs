//! Wire-level behaviour of the test server, each test tied to the Kubernetes API
//! documentation page it follows. Requests go over HTTPS with the kubeconfig's
//! token, through kube-rs's transport, and assert on status codes and bodies.

mod common;

use std::time::Duration;

use common::{Raw, client, open_watch, raw, start, start_with};
use flotilla_kube_test_server::Options;
use serde_json::{Value, json};

const CM: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments";

fn cm(name: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
        .to_string()
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}})
}

// https://kubernetes.io/docs/concepts/overview/kubernetes-api/#discovery-api
// ("unaggregated discovery": /api, /apis, and one resource list per group/version)
#[tokio::test]
async fn discovery_lists_the_built_in_groups_and_resources() {
    let s = start().await;
    let c = client(&s).await;
    let api = raw(&c, "GET", "/api", "", "").await;
    assert_eq!(api.body["versions"], json!(["v1"]));
    let core = raw(&c, "GET", "/api/v1", "", "").await;
    let names: Vec<&str> = core.body["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for n in [
        "namespaces",
        "configmaps",
        "secrets",
        "services",
        "serviceaccounts",
        "pods",
        "persistentvolumeclaims",
        "events",
        "services/status",
    ] {
        assert!(names.contains(&n), "{n} missing from /api/v1: {names:?}");
    }
    let groups = raw(&c, "GET", "/apis", "", "").await;
    let group_names: Vec<&str> = groups.body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for g in [
        "apps",
        "batch",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "apiextensions.k8s.io",
    ] {
        assert!(group_names.contains(&g), "{g} missing from /apis");
    }
    let apps = raw(&c, "GET", "/apis/apps/v1", "", "").await;
    let deploy = apps.body["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "deployments")
        .expect("deployments")
        .clone();
    assert_eq!(deploy["namespaced"], true);
    assert_eq!(deploy["kind"], "Deployment");
    assert!(
        deploy["verbs"]
            .as_array()
            .expect("verbs")
            .contains(&json!("watch"))
    );
    assert_eq!(
        raw(&c, "GET", "/apis/nope.example.com/v1", "", "")
            .await
            .code,
        404
    );
    assert_eq!(raw(&c, "GET", "/version", "", "").await.body["major"], "1");
}

// https://kubernetes.io/docs/reference/access-authn-authz/authentication/#putting-a-bearer-token-in-a-request
#[tokio::test]
async fn https_requests_without_the_bearer_token_are_unauthorized() {
    let s = start().await;
    let kc = kube::config::Kubeconfig::from_yaml(&s.kubeconfig_yaml()).expect("kubeconfig");
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    cfg.auth_info = Default::default();
    let anon = kube::Client::try_from(cfg).expect("client");
    let r = raw(&anon, "GET", "/api/v1/namespaces", "", "").await;
    assert_eq!(r.code, 401);
    assert_eq!(r.body["reason"], "Unauthorized");
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions
// https://kubernetes.io/docs/concepts/overview/working-with-objects/#object-spec-and-status (uid, creationTimestamp)
#[tokio::test]
async fn create_sets_server_fields_and_a_second_create_already_exists() {
    let s = start().await;
    let c = client(&s).await;
    let r = raw(&c, "POST", CM, "application/json", &cm("a", json!({}))).await;
    assert_eq!(r.code, 201, "{}", r.body);
    let meta = &r.body["metadata"];
    assert_eq!(meta["uid"].as_str().map(str::len), Some(36));
    assert!(
        meta["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let rv1: u64 = meta["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("numeric");
    assert!(
        meta.get("generation").is_none(),
        "ConfigMaps carry no generation"
    );
    assert_eq!(meta["managedFields"][0]["operation"], "Update");

    let again = raw(&c, "POST", CM, "application/json", &cm("a", json!({}))).await;
    assert_eq!(again.code, 409);
    assert_eq!(again.body["kind"], "Status");
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(again.body["message"], "configmaps \"a\" already exists");

    let r2 = raw(&c, "POST", CM, "application/json", &cm("b", json!({}))).await;
    let rv2: u64 = r2.body["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("numeric");
    assert!(rv2 > rv1, "resourceVersion is global and increasing");

    let gen_name = raw(
        &c,
        "POST",
        CM,
        "application/json",
        &json!({"metadata": {"generateName": "x-"}}).to_string(),
    )
    .await;
    assert!(
        gen_name.body["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("x-") && n.len() == 7)
    );

    let bad = raw(
        &c,
        "POST",
        CM,
        "application/json",
        &cm("Not_Valid", json!({})),
    )
    .await;
    assert_eq!(
        (bad.code, bad.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#status-codes (404 NotFound)
// https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/
#[tokio::test]
async fn writes_into_a_missing_namespace_and_reads_of_missing_objects_are_not_found() {
    let s = start().await;
    let c = client(&s).await;
    let r = raw(
        &c,
        "POST",
        "/api/v1/namespaces/ghost/configmaps",
        "application/json",
        &cm("a", json!({})),
    )
    .await;
    assert_eq!(r.code, 404);
    assert_eq!(r.body["reason"], "NotFound");
    assert_eq!(r.body["details"]["kind"], "namespaces");
    assert_eq!(r.body["details"]["name"], "ghost");
    let g = raw(&c, "GET", &format!("{DEPLOY}/nope"), "", "").await;
    assert_eq!(g.code, 404);
    assert_eq!(g.body["message"], "deployments.apps \"nope\" not found");
    assert_eq!(g.body["details"]["group"], "apps");
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#concurrency-control-and-consistency
#[tokio::test]
async fn an_update_with_a_stale_resource_version_conflicts() {
    let s = start().await;
    let c = client(&s).await;
    let created = raw(&c, "POST", CM, "application/json", &cm("a", json!({})))
        .await
        .body;
    let mut first = created.clone();
    first["data"]["k"] = json!("1");
    let ok = raw(
        &c,
        "PUT",
        &format!("{CM}/a"),
        "application/json",
        &first.to_string(),
    )
    .await;
    assert_eq!(ok.code, 200);
    assert_ne!(
        ok.body["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    let mut stale = created.clone();
    stale["data"]["k"] = json!("2");
    let conflict = raw(
        &c,
        "PUT",
        &format!("{CM}/a"),
        "application/json",
        &stale.to_string(),
    )
    .await;
    assert_eq!(conflict.code, 409);
    assert_eq!(conflict.body["reason"], "Conflict");
    assert!(
        conflict.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("the object has been modified"))
    );
    let missing = raw(
        &c,
        "PUT",
        &format!("{CM}/zzz"),
        "application/json",
        &cm("zzz", json!({})),
    )
    .await;
    assert_eq!(missing.code, 404);
}

// https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/
#[tokio::test]
async fn merge_json_and_strategic_merge_patches_apply() {
    let s = start().await;
    let c = client(&s).await;
    raw(
        &c,
        "POST",
        DEPLOY,
        "application/json",
        &deployment("web").to_string(),
    )
    .await;
    let path = format!("{DEPLOY}/web");
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox"}]}}}});
    let r = raw(
        &c,
        "PATCH",
        &path,
        "application/strategic-merge-patch+json",
        &smp.to_string(),
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    let names: Vec<&str> = r.body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["web", "sidecar"],
        "strategic merge merges containers by name"
    );

    let merge =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}});
    let r = raw(
        &c,
        "PATCH",
        &path,
        "application/merge-patch+json",
        &merge.to_string(),
    )
    .await;
    assert_eq!(
        r.body["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "a merge patch replaces lists"
    );

    let ops = json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]);
    let r = raw(
        &c,
        "PATCH",
        &path,
        "application/json-patch+json",
        &ops.to_string(),
    )
    .await;
    assert_eq!(r.body["spec"]["replicas"], 3);
    assert_eq!(
        r.body["metadata"]["generation"], 4,
        "three spec changes after creation"
    );

    let bad = raw(&c, "PATCH", &path, "text/plain", "x").await;
    assert_eq!(bad.code, 415);
}

// https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors
// https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/
// https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks
#[tokio::test]
async fn lists_filter_by_label_and_field_selectors_and_paginate() {
    let s = start().await;
    let c = client(&s).await;
    raw(
        &c,
        "POST",
        CM,
        "application/json",
        &cm("a", json!({"app": "web", "tier": "front"})),
    )
    .await;
    raw(
        &c,
        "POST",
        CM,
        "application/json",
        &cm("b", json!({"app": "db"})),
    )
    .await;
    raw(
        &c,
        "POST",
        CM,
        "application/json",
        &cm("c", json!({"app": "web", "tier": "back"})),
    )
    .await;
    raw(
        &c,
        "POST",
        "/api/v1/namespaces/kube-system/configmaps",
        "application/json",
        &cm("d", json!({"app": "web"})),
    )
    .await;
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                i["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let q = |sel: &str| {
        format!(
            "{CM}?labelSelector={}",
            sel.replace(' ', "%20").replace(',', "%2C")
        )
    };
    assert_eq!(
        names(&raw(&c, "GET", &q("app=web"), "", "").await.body),
        ["a", "c"]
    );
    assert_eq!(
        names(&raw(&c, "GET", &q("app!=web"), "", "").await.body),
        ["b"]
    );
    assert_eq!(
        names(
            &raw(&c, "GET", &q("tier in (front,middle)"), "", "")
                .await
                .body
        ),
        ["a"]
    );
    assert_eq!(
        names(
            &raw(&c, "GET", &q("app=web,tier notin (front)"), "", "")
                .await
                .body
        ),
        ["c"]
    );
    assert_eq!(
        names(&raw(&c, "GET", &q("!tier"), "", "").await.body),
        ["b"]
    );
    let all = raw(
        &c,
        "GET",
        "/api/v1/configmaps?fieldSelector=metadata.namespace%3Dkube-system",
        "",
        "",
    )
    .await;
    assert_eq!(names(&all.body), ["d"]);
    let by_name = raw(
        &c,
        "GET",
        &format!("{CM}?fieldSelector=metadata.name%3Db"),
        "",
        "",
    )
    .await;
    assert_eq!(names(&by_name.body), ["b"]);
    let bad = raw(
        &c,
        "GET",
        &format!("{CM}?fieldSelector=spec.nope%3Dx"),
        "",
        "",
    )
    .await;
    assert_eq!(bad.code, 400);

    let page1 = raw(&c, "GET", &format!("{CM}?limit=2"), "", "").await.body;
    assert_eq!(names(&page1), ["a", "b"]);
    let token = page1["metadata"]["continue"]
        .as_str()
        .expect("continue token")
        .to_string();
    let page2 = raw(&c, "GET", &format!("{CM}?limit=2&continue={token}"), "", "")
        .await
        .body;
    assert_eq!(names(&page2), ["c"]);
    assert!(page2["metadata"].get("continue").is_none());
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes
#[tokio::test]
async fn a_watch_from_a_resource_version_sees_the_later_changes_in_order() {
    let s = start().await;
    let c = client(&s).await;
    let before = raw(&c, "POST", CM, "application/json", &cm("old", json!({})))
        .await
        .body;
    let rv = before["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let mut w = open_watch(&c, &format!("{CM}?watch=1&resourceVersion={rv}")).await;
    raw(&c, "POST", CM, "application/json", &cm("new", json!({}))).await;
    raw(
        &c,
        "PATCH",
        &format!("{CM}/new"),
        "application/merge-patch+json",
        r#"{"data":{"k":"2"}}"#,
    )
    .await;
    raw(&c, "DELETE", &format!("{CM}/new"), "", "").await;
    let (t1, o1) = w.next().await.expect("event");
    let (t2, o2) = w.next().await.expect("event");
    let (t3, o3) = w.next().await.expect("event");
    assert_eq!(
        (t1.as_str(), t2.as_str(), t3.as_str()),
        ("ADDED", "MODIFIED", "DELETED")
    );
    assert_eq!(
        o1["metadata"]["name"], "new",
        "the object created before the watch's RV is not replayed"
    );
    assert_eq!(o2["data"]["k"], "2");
    let rvs: Vec<u64> = [&o1, &o2, &o3]
        .iter()
        .map(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .expect("rv")
                .parse()
                .expect("numeric")
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#semantics-for-watch
// (no resourceVersion: synthetic ADDED for the current state, then changes;
// a label selector turns objects leaving the selection into DELETED)
#[tokio::test]
async fn a_watch_without_resource_version_starts_with_the_current_state_and_honours_selectors() {
    let s = start().await;
    let c = client(&s).await;
    raw(
        &c,
        "POST",
        CM,
        "application/json",
        &cm("a", json!({"app": "web"})),
    )
    .await;
    raw(
        &c,
        "POST",
        CM,
        "application/json",
        &cm("b", json!({"app": "db"})),
    )
    .await;
    let mut w = open_watch(&c, &format!("{CM}?watch=true&labelSelector=app%3Dweb")).await;
    let (t, o) = w.next().await.expect("initial");
    assert_eq!(
        (t.as_str(), o["metadata"]["name"].as_str()),
        ("ADDED", Some("a"))
    );
    raw(
        &c,
        "PATCH",
        &format!("{CM}/a"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"app":"other"}}}"#,
    )
    .await;
    let (t, o) = w.next().await.expect("leaves selection");
    assert_eq!(
        (t.as_str(), o["metadata"]["name"].as_str()),
        ("DELETED", Some("a"))
    );
    raw(
        &c,
        "PATCH",
        &format!("{CM}/b"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"app":"web"}}}"#,
    )
    .await;
    let (t, o) = w.next().await.expect("enters selection");
    assert_eq!(
        (t.as_str(), o["metadata"]["name"].as_str()),
        ("ADDED", Some("b"))
    );
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#410-gone-responses
#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410_expired() {
    let s = start_with(Options {
        watch_history: 3,
        ..Options::default()
    })
    .await;
    let c = client(&s).await;
    let first = raw(&c, "POST", CM, "application/json", &cm("a0", json!({})))
        .await
        .body;
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    for i in 1..6 {
        raw(
            &c,
            "POST",
            CM,
            "application/json",
            &cm(&format!("a{i}"), json!({})),
        )
        .await;
    }
    let mut w = open_watch(&c, &format!("{CM}?watch=1&resourceVersion={rv}")).await;
    let (t, o) = w.next().await.expect("error event");
    assert_eq!(t, "ERROR");
    assert_eq!(o["kind"], "Status");
    assert_eq!(o["code"], 410);
    assert_eq!(o["reason"], "Expired");
    assert!(w.next().await.is_none(), "the watch ends after the error");
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks
// https://kubernetes.io/docs/reference/using-api/api-concepts/#streaming-lists
#[tokio::test]
async fn bookmarks_and_streaming_lists_mark_progress() {
    let s = start_with(Options {
        bookmark_interval: Duration::from_millis(50),
        ..Options::default()
    })
    .await;
    let c = client(&s).await;
    raw(&c, "POST", CM, "application/json", &cm("a", json!({}))).await;
    let mut w = open_watch(&c, &format!(
        "{CM}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")).await;
    let (t, o) = w.next().await.expect("initial");
    assert_eq!(
        (t.as_str(), o["metadata"]["name"].as_str()),
        ("ADDED", Some("a"))
    );
    let (t, o) = w.next().await.expect("end of initial events");
    assert_eq!(t, "BOOKMARK");
    assert_eq!(
        o["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(o["kind"], "ConfigMap");
    let (t, o) = w.next().await.expect("periodic bookmark");
    assert_eq!(t, "BOOKMARK");
    assert!(o["metadata"]["resourceVersion"].as_str().is_some());
}

// https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management
// https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts
#[tokio::test]
async fn server_side_apply_tracks_owners_prunes_dropped_fields_and_reports_conflicts() {
    let s = start().await;
    let c = client(&s).await;
    let path = format!("{DEPLOY}/web");
    let apply = |body: Value, q: &str| {
        let c = c.clone();
        let path = format!("{path}?{q}");
        async move {
            raw(
                &c,
                "PATCH",
                &path,
                "application/apply-patch+yaml",
                &body.to_string(),
            )
            .await
        }
    };
    let mut cfg = deployment("web");
    cfg["metadata"]["labels"] = json!({"team": "a"});
    let r = apply(cfg.clone(), "fieldManager=flotilla").await;
    assert_eq!(r.code, 201, "apply creates: {}", r.body);
    let mf = &r.body["metadata"]["managedFields"][0];
    assert_eq!(
        (mf["manager"].as_str(), mf["operation"].as_str()),
        (Some("flotilla"), Some("Apply"))
    );
    assert_eq!(mf["fieldsType"], "FieldsV1");
    assert!(mf["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:image"].is_object(),
        "{}", mf["fieldsV1"]);

    // Dropping a field from the next apply removes it.
    cfg["metadata"]
        .as_object_mut()
        .expect("meta")
        .remove("labels");
    let r = apply(cfg.clone(), "fieldManager=flotilla").await;
    assert!(
        r.body["metadata"].get("labels").is_none(),
        "{}",
        r.body["metadata"]
    );

    // Another manager changes the image with a merge patch: an Update entry owns it now.
    raw(
        &c,
        "PATCH",
        &format!("{path}?fieldManager=editor"),
        "application/merge-patch+json",
        &json!({"spec": {"replicas": 5}}).to_string(),
    )
    .await;
    let r = apply(cfg.clone(), "fieldManager=flotilla").await;
    assert_eq!(r.code, 409, "{}", r.body);
    assert_eq!(r.body["reason"], "Conflict");
    assert_eq!(
        r.body["message"],
        "Apply failed with 1 conflict: conflict with \"editor\" using apps/v1: .spec.replicas"
    );
    assert_eq!(r.body["details"]["causes"][0]["field"], ".spec.replicas");
    assert_eq!(
        r.body["details"]["causes"][0]["type"],
        "FieldManagerConflict"
    );

    // force takes the field back.
    let r = apply(cfg.clone(), "fieldManager=flotilla&force=true").await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["spec"]["replicas"], 1);
    let managers: Vec<&str> = r.body["metadata"]["managedFields"]
        .as_array()
        .expect("mf")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, vec!["flotilla"], "the editor lost its only field");

    // Applying without a field manager is a bad request.
    assert_eq!(apply(cfg, "").await.code, 400);
}

// https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy
// (a field dropped by one manager survives when another manager still applies it)
#[tokio::test]
async fn a_field_shared_by_two_appliers_survives_when_one_drops_it() {
    let s = start().await;
    let c = client(&s).await;
    let path = format!("{CM}/shared");
    let body = |data: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": data}).to_string()
    };
    raw(
        &c,
        "PATCH",
        &format!("{path}?fieldManager=one"),
        "application/apply-patch+yaml",
        &body(json!({"a": "1", "b": "1"})),
    )
    .await;
    let r = raw(
        &c,
        "PATCH",
        &format!("{path}?fieldManager=two"),
        "application/apply-patch+yaml",
        &body(json!({"a": "1"})),
    )
    .await;
    assert_eq!(
        r.code, 200,
        "same value is co-owned, not a conflict: {}",
        r.body
    );
    let r = raw(
        &c,
        "PATCH",
        &format!("{path}?fieldManager=one"),
        "application/apply-patch+yaml",
        &body(json!({})),
    )
    .await;
    assert_eq!(r.body["data"], json!({"a": "1"}));
}

// https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#status-subresource
// https://kubernetes.io/docs/reference/using-api/api-concepts/#patch-and-apply (generation on spec changes)
#[tokio::test]
async fn the_status_subresource_is_separate_from_the_main_resource() {
    let s = start().await;
    let c = client(&s).await;
    let created = raw(
        &c,
        "POST",
        DEPLOY,
        "application/json",
        &deployment("web").to_string(),
    )
    .await
    .body;
    assert_eq!(created["metadata"]["generation"], 1);
    let status = json!({"status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
        "availableReplicas": 1, "updatedReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}]}});
    let r = raw(
        &c,
        "PATCH",
        &format!("{DEPLOY}/web/status"),
        "application/merge-patch+json",
        &status.to_string(),
    )
    .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["status"]["availableReplicas"], 1);
    assert_eq!(
        r.body["metadata"]["generation"], 1,
        "status writes do not bump generation"
    );

    let spec_in_status = json!({"spec": {"replicas": 9}, "status": {"replicas": 2}});
    let r = raw(
        &c,
        "PATCH",
        &format!("{DEPLOY}/web/status"),
        "application/merge-patch+json",
        &spec_in_status.to_string(),
    )
    .await;
    assert_eq!(r.body["spec"]["replicas"], 1, "status writes ignore spec");

    let r = raw(
        &c,
        "PATCH",
        &format!("{DEPLOY}/web"),
        "application/merge-patch+json",
        &json!({"spec": {"replicas": 2}, "status": {"replicas": 7}}).to_string(),
    )
    .await;
    assert_eq!(r.body["status"]["replicas"], 2, "main writes ignore status");
    assert_eq!(r.body["metadata"]["generation"], 2);

    let r = raw(
        &c,
        "PATCH",
        &format!("{DEPLOY}/web"),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"x": "y"}}}).to_string(),
    )
    .await;
    assert_eq!(
        r.body["metadata"]["generation"], 2,
        "metadata-only changes keep the generation"
    );

    let job_status = raw(
        &c,
        "GET",
        "/apis/batch/v1/namespaces/default/jobs/none/status",
        "",
        "",
    )
    .await;
    assert_eq!(job_status.code, 404);
    let cm_status = raw(&c, "GET", &format!("{CM}/x/status"), "", "").await;
    assert_eq!(cm_status.code, 404, "ConfigMaps have no status subresource");
}

// https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/#deleting-a-namespace
// ("deleting a namespace deletes everything in it")
#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let s = start().await;
    let c = client(&s).await;
    raw(
        &c,
        "POST",
        "/api/v1/namespaces",
        "application/json",
        r#"{"metadata":{"name":"team"}}"#,
    )
    .await;
    let ns_cm = "/api/v1/namespaces/team/configmaps";
    assert_eq!(
        raw(&c, "POST", ns_cm, "application/json", &cm("a", json!({})))
            .await
            .code,
        201
    );
    let r = raw(&c, "DELETE", "/api/v1/namespaces/team", "", "").await;
    assert_eq!(r.code, 200);
    assert_eq!(
        raw(&c, "GET", &format!("{ns_cm}/a"), "", "").await.code,
        404
    );
    assert_eq!(
        raw(&c, "GET", "/api/v1/namespaces/team", "", "").await.code,
        404
    );
    assert_eq!(
        raw(&c, "POST", ns_cm, "application/json", &cm("b", json!({})))
            .await
            .code,
        404
    );
}

// https://kubernetes.io/docs/concepts/overview/working-with-objects/finalizers/
#[tokio::test]
async fn finalizers_hold_deletion_until_they_are_removed() {
    let s = start().await;
    let c = client(&s).await;
    let body =
        json!({"metadata": {"name": "held", "finalizers": ["example.com/keep"]}}).to_string();
    raw(&c, "POST", CM, "application/json", &body).await;
    let r = raw(&c, "DELETE", &format!("{CM}/held"), "", "").await;
    assert_eq!(r.code, 202);
    assert!(r.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        raw(&c, "GET", &format!("{CM}/held"), "", "").await.code,
        200
    );
    let r = raw(
        &c,
        "PATCH",
        &format!("{CM}/held"),
        "application/merge-patch+json",
        r#"{"metadata":{"finalizers":null}}"#,
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(
        raw(&c, "GET", &format!("{CM}/held"), "", "").await.code,
        404
    );
}

// https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#create-a-customresourcedefinition
#[tokio::test]
async fn a_crd_becomes_established_serves_its_kind_and_takes_its_objects_when_deleted() {
    let s = start().await;
    let c = client(&s).await;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let r = raw(
        &c,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        &crd.to_string(),
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let established = r.body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established);
    let groups = raw(&c, "GET", "/apis", "", "").await.body;
    assert!(
        groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .any(|g| g["name"] == "example.com")
    );
    let list = raw(&c, "GET", "/apis/example.com/v1", "", "").await.body;
    assert_eq!(list["resources"][0]["name"], "widgets");

    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}});
    let r = raw(&c, "POST", widgets, "application/json", &w.to_string()).await;
    assert_eq!(
        (r.code, r.body["metadata"]["generation"].as_i64()),
        (201, Some(1))
    );
    let smp = raw(
        &c,
        "PATCH",
        &format!("{widgets}/w"),
        "application/strategic-merge-patch+json",
        "{}",
    )
    .await;
    assert_eq!(
        smp.code, 415,
        "custom resources do not support strategic merge patch"
    );

    let bad = raw(&c, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json",
        &json!({"metadata": {"name": "wrong"}, "spec": {"group": "g.io", "scope": "Cluster",
            "names": {"plural": "xs", "kind": "X"}, "versions": [{"name": "v1", "served": true, "storage": true}]}}).to_string()).await;
    assert_eq!(bad.code, 422);

    raw(
        &c,
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        "",
        "",
    )
    .await;
    assert_eq!(
        raw(&c, "GET", "/apis/example.com/v1", "", "").await.code,
        404
    );
    raw(
        &c,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        &crd.to_string(),
    )
    .await;
    let after = raw(&c, "GET", widgets, "", "").await.body;
    assert_eq!(
        after["items"],
        json!([]),
        "deleting the CRD deleted its objects"
    );
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables
#[tokio::test]
async fn tables_are_served_when_asked_for() {
    let s = start().await;
    let c = client(&s).await;
    raw(&c, "POST", CM, "application/json", &cm("a", json!({}))).await;
    let req = hyper::Request::builder()
        .uri(CM)
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .expect("request");
    let t: Value = c.request(req).await.expect("table");
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["columnDefinitions"][0]["name"], "Name");
    assert_eq!(t["rows"][0]["cells"][0], "a");
}

// Robustness: malformed input is answered with Status errors, never a crash.
// https://kubernetes.io/docs/reference/using-api/api-concepts/#status-codes
#[tokio::test]
async fn malformed_requests_get_status_errors_and_the_server_keeps_serving() {
    let s = start().await;
    let c = client(&s).await;
    let cases: &[(&str, &str, &str, &str, u16)] = &[
        ("POST", CM, "application/json", "{not json", 400),
        ("POST", CM, "application/vnd.kubernetes.protobuf", "x", 415),
        (
            "PATCH",
            &format!("{CM}/x"),
            "application/json-patch+json",
            "[]",
            404,
        ),
        (
            "GET",
            &format!("{CM}?labelSelector=a%20in%20b"),
            "",
            "",
            400,
        ),
        ("GET", &format!("{CM}?limit=-1"), "", "", 400),
        ("GET", &format!("{CM}?continue=%%%"), "", "", 400),
        (
            "GET",
            &format!("{CM}?watch=1&resourceVersion=abc"),
            "",
            "",
            400,
        ),
        ("GET", "/api/v1/namespaces/default/nothings", "", "", 404),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps/a/b/c",
            "",
            "",
            404,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps/a",
            "application/json",
            "{}",
            405,
        ),
    ];
    for (method, path, ct, body, code) in cases {
        let r = raw(&c, method, path, ct, body).await;
        assert_eq!(r.code, *code, "{method} {path}: {}", r.body);
        assert_eq!(r.body["kind"], "Status", "{method} {path}");
    }
    raw(&c, "POST", CM, "application/json", &cm("a", json!({}))).await;
    let bad_patch = raw(
        &c,
        "PATCH",
        &format!("{CM}/a"),
        "application/json-patch+json",
        r#"[{"op": "remove", "path": "/nope/deeper"}]"#,
    )
    .await;
    assert_eq!(bad_patch.code, 400);
    let huge_timeout = open_watch(
        &c,
        &format!("{CM}?watch=1&timeoutSeconds=18446744073709551615"),
    )
    .await;
    drop(huge_timeout);
    assert_eq!(raw(&c, "GET", &format!("{CM}/a"), "", "").await.code, 200);
}

// https://kubernetes.io/docs/reference/using-api/api-concepts/#dry-run
#[tokio::test]
async fn dry_run_writes_are_not_stored() {
    let s = start().await;
    let c = client(&s).await;
    let r = raw(
        &c,
        "POST",
        &format!("{CM}?dryRun=All"),
        "application/json",
        &cm("dry", json!({})),
    )
    .await;
    assert_eq!(r.code, 201);
    assert_eq!(r.body["metadata"]["name"], "dry");
    assert_eq!(raw(&c, "GET", &format!("{CM}/dry"), "", "").await.code, 404);
}

#[test]
fn a_blocking_server_runs_on_its_own_runtime() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s =
        flotilla_kube_test_server::TestServer::start_blocking(Options::default()).expect("starts");
    assert!(s.https_url().starts_with("https://127.0.0.1:"));
    assert!(s.kubeconfig_yaml().contains(s.token()));
}

// https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/#replace-scale-of-the-specified-deployment
#[tokio::test]
async fn the_scale_subresource_reads_and_writes_replicas() {
    let s = start().await;
    let c = client(&s).await;
    raw(
        &c,
        "POST",
        DEPLOY,
        "application/json",
        &deployment("web").to_string(),
    )
    .await;
    let scale = raw(&c, "GET", &format!("{DEPLOY}/web/scale"), "", "").await;
    assert_eq!(
        (
            scale.body["kind"].as_str(),
            scale.body["spec"]["replicas"].as_i64()
        ),
        (Some("Scale"), Some(1))
    );
    assert_eq!(scale.body["status"]["selector"], "app=web");
    let r = raw(
        &c,
        "PATCH",
        &format!("{DEPLOY}/web/scale"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":4}}"#,
    )
    .await;
    assert_eq!(r.body["spec"]["replicas"], 4, "{}", r.body);
    let d = raw(&c, "GET", &format!("{DEPLOY}/web"), "", "").await.body;
    assert_eq!(
        (
            d["spec"]["replicas"].as_i64(),
            d["metadata"]["generation"].as_i64()
        ),
        (Some(4), Some(2))
    );
}

// https://kubernetes.io/docs/concepts/configuration/secret/#restriction-names-data
// ("stringData ... is merged into the data field ... write-only")
#[tokio::test]
async fn secret_string_data_is_folded_into_data() {
    let s = start().await;
    let c = client(&s).await;
    let r = raw(
        &c,
        "POST",
        "/api/v1/namespaces/default/secrets",
        "application/json",
        r#"{"metadata":{"name":"s"},"stringData":{"password":"hunter2"}}"#,
    )
    .await;
    assert_eq!(r.code, 201);
    assert_eq!(r.body["data"]["password"], "aHVudGVyMg==");
    assert!(r.body.get("stringData").is_none());
    assert_eq!(r.body["type"], "Opaque");
}

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const CORE_EVENTS: &str = "/api/v1/namespaces/default/events";

/// POSTs `body` as JSON to `path`.
async fn post_json(c: &kube::Client, path: &str, body: &Value) -> Raw {
    raw(c, "POST", path, "application/json", &body.to_string()).await
}

fn event(name: &str, note: &str) -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "type": "Normal", "reason": "Applied", "action": "Apply", "note": note,
        "reportingController": "flotilla.dev/spoke", "reportingInstance": "c1",
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "default",
            "name": "cm", "uid": "u-1"}})
}

// https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/
// (events.k8s.io/v1 and core v1 Events are two views of one storage: "regarding" is
// "involvedObject", "note" is "message", "reportingController" is "reportingComponent")
#[tokio::test]
async fn events_written_through_events_k8s_io_are_the_core_v1_events_too() {
    let s = start().await;
    let c = client(&s).await;
    let discovery = raw(&c, "GET", "/apis/events.k8s.io/v1", "", "").await;
    assert_eq!(
        discovery.body["resources"][0]["name"], "events",
        "{}",
        discovery.body
    );
    let r = post_json(&c, EVENTS, &event("cm.1", "applied it")).await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["regarding"]["name"], "cm");
    assert_eq!(r.body["note"], "applied it");

    let core = raw(&c, "GET", &format!("{CORE_EVENTS}/cm.1"), "", "").await;
    assert_eq!(core.body["apiVersion"], "v1");
    assert_eq!(core.body["involvedObject"]["uid"], "u-1");
    assert_eq!(core.body["message"], "applied it");
    assert_eq!(core.body["reportingComponent"], "flotilla.dev/spoke");
    assert!(core.body.get("note").is_none() && core.body.get("regarding").is_none());

    let by_regarding = raw(
        &c,
        "GET",
        &format!("{EVENTS}?fieldSelector=regarding.name%3Dcm"),
        "",
        "",
    )
    .await;
    assert_eq!(
        by_regarding.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        by_regarding.body
    );
    let by_involved = raw(
        &c,
        "GET",
        &format!("{CORE_EVENTS}?fieldSelector=involvedObject.uid%3Du-1"),
        "",
        "",
    )
    .await;
    assert_eq!(by_involved.body["items"].as_array().map(Vec::len), Some(1));
    let wrong_label = raw(
        &c,
        "GET",
        &format!("{EVENTS}?fieldSelector=involvedObject.name%3Dcm"),
        "",
        "",
    )
    .await;
    assert_eq!(wrong_label.code, 400, "{}", wrong_label.body);

    // And the other way: an Event written through core v1 is served by events.k8s.io.
    let legacy = json!({"metadata": {"name": "old.1"}, "message": "legacy",
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p"},
        "reason": "Pulled", "type": "Normal", "count": 3});
    let r = post_json(&c, CORE_EVENTS, &legacy).await;
    assert_eq!(r.code, 201, "{}", r.body);
    let viewed = raw(&c, "GET", &format!("{EVENTS}/old.1"), "", "").await;
    assert_eq!(viewed.body["note"], "legacy");
    assert_eq!(viewed.body["deprecatedCount"], 3);
    assert_eq!(viewed.body["regarding"]["name"], "p");
}

// https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/
// (required fields and limits for new events; an update may only change the series)
#[tokio::test]
async fn events_k8s_io_validates_new_events_and_lets_updates_change_only_the_series() {
    let s = start().await;
    let c = client(&s).await;
    let mut incomplete = event("bad.1", &"x".repeat(1025));
    incomplete["reportingController"] = json!("");
    let r = post_json(&c, EVENTS, &incomplete).await;
    assert_eq!((r.code, r.body["reason"].as_str()), (422, Some("Invalid")));
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("reportingController: Required value")
            && message.contains("note: Invalid value")
            && message.contains("can have at most 1024 characters"),
        "{message}"
    );

    let r = post_json(&c, EVENTS, &event("cm.2", "once")).await;
    assert_eq!(r.code, 201, "{}", r.body);
    let series = raw(
        &c,
        "PATCH",
        &format!("{EVENTS}/cm.2"),
        "application/merge-patch+json",
        r#"{"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}}"#,
    )
    .await;
    assert_eq!(series.code, 200, "{}", series.body);
    assert_eq!(series.body["series"]["count"], 2);
    let renote = raw(
        &c,
        "PATCH",
        &format!("{EVENTS}/cm.2"),
        "application/merge-patch+json",
        r#"{"note": "changed"}"#,
    )
    .await;
    assert_eq!(renote.code, 422, "{}", renote.body);
    assert!(
        renote.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("message: Invalid value: \"\": field is immutable")),
        "{}",
        renote.body
    );
}

// https://kubernetes.io/docs/reference/access-authn-authz/rbac/ (a role without a verb:
// 403 Forbidden from the authorizer; the test server has no RBAC, forbid_writes stands in)
#[tokio::test]
async fn forbidden_writes_get_403_in_the_words_of_the_rbac_authorizer() {
    let s = start().await;
    let c = client(&s).await;
    s.forbid_writes("events.k8s.io", "events");
    let r = post_json(&c, EVENTS, &event("cm.3", "n")).await;
    assert_eq!(
        (r.code, r.body["reason"].as_str()),
        (403, Some("Forbidden"))
    );
    assert_eq!(
        r.body["message"],
        "events.events.k8s.io is forbidden: User \"flotilla-kube-test-server\" cannot create \
         resource \"events\" in API group \"events.k8s.io\" in the namespace \"default\""
    );
    assert_eq!(r.body["details"]["group"], "events.k8s.io");
    assert_eq!(s.refused_writes(), 1);
    assert_eq!(
        raw(&c, "GET", EVENTS, "", "").await.code,
        200,
        "reads stay allowed"
    );
    assert_eq!(
        raw(&c, "POST", CM, "application/json", &cm("other", json!({})))
            .await
            .code,
        201,
        "other resources stay writable"
    );

    s.allow_writes("events.k8s.io", "events");
    let r = post_json(&c, EVENTS, &event("cm.3", "n")).await;
    assert_eq!(r.code, 201, "{}", r.body);
}
