//! Shared setup for the Kubernetes applier's component tests.
//!
//! By default every test starts its own in-process Kubernetes API **test server**
//! (`flotilla-kube-test-server`). With `FLOTILLA_E2E_KUBECONFIG=/path/to/kubeconfig` the
//! same tests run against that real cluster instead (kind, k3d; see
//! `docs/e2e-real-cluster.md`). Names carry a per-test suffix so tests can share a cluster,
//! and each test removes its bundles at the end.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use flotilla_kube_test_server::{Options, RunningServer, TestServer};
use flotilla_spoke::target::kubernetes::{INVENTORY_NAMESPACE, KubeTarget};
use flotilla_spoke::target::{ApplyOptions, Desired, Policy, PolicySpec};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;

pub const REAL_CLUSTER_ENV: &str = "FLOTILLA_E2E_KUBECONFIG";
/// The cluster name the tests' appliers run as.
pub const TEST_CLUSTER: &str = "test-cluster";
const DEADLINE: Duration = Duration::from_secs(30);

pub struct Cluster {
    /// None when the tests run against a real cluster.
    pub server: Option<RunningServer>,
    pub client: Client,
    /// A suffix that makes this test's names unique on a shared cluster.
    pub id: String,
}

pub async fn cluster() -> Cluster {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let id = format!("{:08x}", rand::random::<u32>());
    let (server, yaml) = match std::env::var(REAL_CLUSTER_ENV) {
        Ok(path) if !path.is_empty() => {
            let yaml = std::fs::read_to_string(&path).expect("FLOTILLA_E2E_KUBECONFIG is readable");
            (None, yaml)
        }
        _ => {
            let s = TestServer::start(Options::default())
                .await
                .expect("test server starts");
            let yaml = s.kubeconfig_yaml();
            (Some(s), yaml)
        }
    };
    let kc = Kubeconfig::from_yaml(&yaml).expect("kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    let client = Client::try_from(cfg).expect("client builds");
    Cluster { server, client, id }
}

impl Cluster {
    pub fn is_test_server(&self) -> bool {
        self.server.is_some()
    }

    /// A new applier, as a freshly started spoke would build it. Its Events carry the
    /// cluster name [`TEST_CLUSTER`].
    pub fn target(&self, policy: Policy) -> KubeTarget {
        KubeTarget::new(self.client.clone(), policy, TEST_CLUSTER)
    }

    /// A new applier enforcing `spec`, resolved against this cluster's discovery as a
    /// starting spoke resolves it.
    pub async fn target_with(&self, spec: &PolicySpec) -> anyhow::Result<KubeTarget> {
        KubeTarget::with_policy(self.client.clone(), spec, TEST_CLUSTER).await
    }

    /// `name` made unique for this test.
    pub fn n(&self, name: &str) -> String {
        format!("{name}-{}", self.id)
    }

    pub fn api(
        &self,
        api_version: &str,
        kind: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    pub fn configmaps(&self, namespace: &str) -> Api<DynamicObject> {
        self.api("v1", "ConfigMap", "configmaps", Some(namespace))
    }

    /// Another field manager (`someone-else`) server-side applies ConfigMap `name` with
    /// `data`, so it owns those fields before flotilla comes.
    pub async fn someone_else_applies(&self, namespace: &str, name: &str, data: serde_json::Value) {
        let theirs = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": data});
        self.configmaps(namespace)
            .patch(
                name,
                &PatchParams::apply("someone-else"),
                &Patch::Apply(&theirs),
            )
            .await
            .expect("someone else applies first");
    }

    /// `kubectl edit` of ConfigMap `name`: a merge patch of `data` by `kubectl-edit`.
    pub async fn edit_by_hand(&self, namespace: &str, name: &str, data: serde_json::Value) {
        self.configmaps(namespace)
            .patch(
                name,
                &PatchParams {
                    field_manager: Some("kubectl-edit".into()),
                    ..Default::default()
                },
                &Patch::Merge(serde_json::json!({ "data": data })),
            )
            .await
            .expect("edited by hand");
    }

    pub async fn exists(&self, api: &Api<DynamicObject>, name: &str) -> bool {
        api.get_opt(name).await.expect("GET works").is_some()
    }

    /// The `events.k8s.io/v1` Events that regard `bundle`'s inventory, oldest first.
    pub async fn events_of(&self, bundle: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), INVENTORY_NAMESPACE);
        let selector = format!("regarding.name=bundle-{bundle}");
        let mut events = match api.list(&ListParams::default().fields(&selector)).await {
            Ok(list) => list.items,
            // Nothing has created the inventory namespace yet.
            Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
            Err(e) => panic!("listing the Events of {bundle}: {e}"),
        };
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
    }

    /// Waits until an Event with `reason` whose note contains `text` regards `bundle`'s
    /// inventory, and returns it.
    pub async fn wait_for_event(&self, bundle: &str, reason: &str, text: &str) -> Event {
        wait_until(
            &format!("a {reason} Event about {bundle} says {text:?}"),
            || async {
                self.events_of(bundle).await.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().is_some_and(|n| n.contains(text))
                })
            },
        )
        .await
    }
}

pub fn desired(bundle: &str, deployment: &str, yaml: &str, options: ApplyOptions) -> Desired {
    Desired {
        bundle: bundle.to_string(),
        deployment_id: deployment.to_string(),
        content: yaml.as_bytes().to_vec(),
        options,
    }
}

/// Polls `check` until it returns Some, failing the test after a deadline.
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
