//! Shared setup for the Kubernetes applier's component tests.
//!
//! The tests run against a real kube-apiserver. `.ci/run` starts one with `tests/k8s/up`
//! and passes its settings in the environment (`FLOTILLA_E2E_KUBECONFIG` and the rest,
//! from `DIR/env`). Without them, the first test starts one itself with `tests/k8s/up`
//! under the system temp dir, owned by this test process: it stops when the process
//! exits. `FLOTILLA_E2E_KUBECONFIG` may also name any other cluster (kind, k3d; see
//! `docs/e2e-real-cluster.md`). Names carry a per-test suffix so tests can share a
//! cluster, and each test removes its bundles at the end.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flotilla_spoke::applier::kubernetes::{self, INVENTORY_NAMESPACE, KubeApplier};
use flotilla_spoke::applier::{DeployOptions, Desired, Policy, PolicySpec};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::config::Config;
use kube::core::ApiResource;
use serde_json::json;

pub const REAL_CLUSTER_ENV: &str = "FLOTILLA_E2E_KUBECONFIG";
/// An admin kubeconfig for what the tests do as someone other than the spoke (setting
/// status as a kubelet or controller would). Unset: the spoke's own credentials.
pub const ADMIN_ENV: &str = "FLOTILLA_E2E_ADMIN_KUBECONFIG";
/// Set by `tests/k8s/up`: the control plane runs no controllers, so status is the tests'
/// to set.
pub const NO_CONTROLLERS_ENV: &str = "FLOTILLA_E2E_NO_CONTROLLERS";
/// The cluster name the tests' appliers run as.
pub const TEST_CLUSTER: &str = "test-cluster";
const DEADLINE: Duration = Duration::from_secs(30);

pub struct Cluster {
    /// Applies as the spoke would: the restricted ServiceAccount of
    /// `examples/spoke-rbac.yaml` on the control plane of `tests/k8s/up`.
    pub client: Client,
    /// Acts as the cluster's other parties (kubelet, controllers, an admin).
    pub admin: Client,
    /// The admin's kubeconfig, for clients with other credentials to the same server.
    admin_config: Config,
    /// Whether controllers run and own status (false on `tests/k8s/up`'s control plane).
    controllers: bool,
    /// A suffix that makes this test's names unique on a shared cluster.
    pub id: String,
}

/// The settings `tests/k8s/up` writes to `DIR/env`, from the environment when set there.
struct Settings(HashMap<String, String>);

impl Settings {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let from_env: HashMap<String, String> = [REAL_CLUSTER_ENV, ADMIN_ENV, NO_CONTROLLERS_ENV]
            .into_iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        if from_env.contains_key(REAL_CLUSTER_ENV) {
            return Settings(from_env);
        }
        Settings(start_control_plane())
    })
}

/// Runs `tests/k8s/up` for this test process and reads the `env` file it writes.
fn start_control_plane() -> HashMap<String, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir: PathBuf = std::env::temp_dir().join(format!("flotilla-k8s-{}", std::process::id()));
    let status = std::process::Command::new(repo.join("tests/k8s/up"))
        .arg(&dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .status()
        .expect("tests/k8s/up runs (it needs Go to build the control plane once)");
    assert!(
        status.success(),
        "tests/k8s/up {} failed; see its output above",
        dir.display()
    );
    let text = std::fs::read_to_string(dir.join("env")).expect("tests/k8s/up wrote DIR/env");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub async fn cluster() -> Cluster {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let id = format!("{:08x}", rand::random::<u32>());
    let settings = tokio::task::spawn_blocking(settings)
        .await
        .expect("the control plane starts");
    let kubeconfig = settings
        .get(REAL_CLUSTER_ENV)
        .expect("a kubeconfig for the tests");
    let client = Client::try_from(config_from_file(kubeconfig).await).expect("client builds");
    let admin_config = config_from_file(settings.get(ADMIN_ENV).unwrap_or(kubeconfig)).await;
    let admin = Client::try_from(admin_config.clone()).expect("client builds");
    Cluster {
        client,
        admin,
        admin_config,
        controllers: settings.get(NO_CONTROLLERS_ENV).is_none(),
        id,
    }
}

async fn config_from_file(path: &str) -> Config {
    kubernetes::client_config(Some(Path::new(path)))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

impl Cluster {
    /// Whether controllers own status here: not on the control plane of `tests/k8s/up`
    /// (etcd and kube-apiserver only), where the tests set status themselves.
    pub fn controllers_run(&self) -> bool {
        self.controllers
    }

    /// A new applier, as a freshly started spoke would build it. Its Events carry the
    /// cluster name [`TEST_CLUSTER`].
    pub fn target(&self, policy: Policy) -> KubeApplier {
        KubeApplier::new(self.client.clone(), policy, TEST_CLUSTER)
    }

    /// A new applier enforcing `spec`, resolved against this cluster's discovery as a
    /// starting spoke resolves it.
    pub async fn target_with(&self, spec: &PolicySpec) -> anyhow::Result<KubeApplier> {
        KubeApplier::with_policy(self.client.clone(), spec, TEST_CLUSTER).await
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
        dynamic_api(&self.client, api_version, kind, plural, namespace)
    }

    /// Like [`Cluster::api`], as the cluster's admin: for what a kubelet or a controller
    /// would write, which the spoke's role does not allow.
    pub fn admin_api(
        &self,
        api_version: &str,
        kind: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        dynamic_api(&self.admin, api_version, kind, plural, namespace)
    }

    /// A ServiceAccount with the spoke's ClusterRoles and its inventory Role, but not the
    /// Events Role (`examples/spoke-rbac.yaml`), and a client that uses its token.
    pub async fn spoke_without_events(&self) -> (String, Client) {
        let name = self.n("no-events");
        self.admin_applies(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": INVENTORY_NAMESPACE}
        }))
        .await;
        for role in ["flotilla-spoke", "flotilla-spoke-apply"] {
            self.admin_applies(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": format!("{name}-{role}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": INVENTORY_NAMESPACE}]
            }))
            .await;
        }
        self.bind_role(&name, "flotilla-spoke-inventory").await;
        let token = Api::<ServiceAccount>::namespaced(self.admin.clone(), INVENTORY_NAMESPACE)
            .create_token_request(&name, &Default::default(), &TokenRequest::default())
            .await
            .expect("a token for the ServiceAccount")
            .status
            .expect("the token request has a status")
            .token
            .expect("the token request returned a token");
        let mut cfg = self.admin_config.clone();
        cfg.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        (name, Client::try_from(cfg).expect("client builds"))
    }

    /// Binds `role` in the inventory namespace to ServiceAccount `sa`, and waits until
    /// the API server's authorizer lets `sa` do what the role allows.
    pub async fn bind_role(&self, sa: &str, role: &str) {
        self.admin_applies(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{sa}-{role}"), "namespace": INVENTORY_NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": INVENTORY_NAMESPACE}]
        }))
        .await;
    }

    /// Whether `sa` may create `events.k8s.io` Events in the inventory namespace, as the
    /// API server's authorizer answers now.
    pub async fn may_record_events(&self, sa: &str) -> bool {
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {
                "user": format!("system:serviceaccount:{INVENTORY_NAMESPACE}:{sa}"),
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "resourceAttributes": {
                    "group": "events.k8s.io", "resource": "events", "verb": "create",
                    "namespace": INVENTORY_NAMESPACE
                }
            }
        }))
        .expect("a SubjectAccessReview");
        Api::<SubjectAccessReview>::all(self.admin.clone())
            .create(&Default::default(), &review)
            .await
            .expect("the API server reviews access")
            .status
            .is_some_and(|s| s.allowed)
    }

    /// Requests the API server's authorizer has refused so far, from its own
    /// `authorization_attempts_total` (RBAC alone answers "no opinion" to what it does
    /// not allow, and the request is then forbidden). Refusals are not counted in
    /// `apiserver_request_total`, which starts after authorization.
    pub async fn refused_requests(&self) -> u64 {
        self.metric("authorization_attempts_total")
            .await
            .into_iter()
            .filter(|(labels, _)| {
                matches!(
                    labels.get("result").map(String::as_str),
                    Some("no-opinion" | "denied")
                )
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests the API server has served for `resource` (a plural; the tests make it
    /// unique to one test) in `group`, by verb, from its own `apiserver_request_total`.
    /// WATCH is left out: it is how the spoke is meant to learn of changes.
    pub async fn requests_to(&self, group: &str, resource: &str) -> BTreeMap<String, u64> {
        let mut by_verb = BTreeMap::new();
        for (labels, n) in self.metric("apiserver_request_total").await {
            let label = |name: &str| labels.get(name).map(String::as_str);
            let verb = label("verb").unwrap_or_default();
            if label("group") == Some(group)
                && label("resource") == Some(resource)
                && verb != "WATCH"
            {
                *by_verb.entry(verb.to_string()).or_default() += n;
            }
        }
        by_verb
    }

    /// The samples of counter `name` in the API server's own `/metrics`, as
    /// (labels, value).
    async fn metric(&self, name: &str) -> Vec<(BTreeMap<String, String>, u64)> {
        let req = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("a request");
        let text = self
            .admin
            .request_text(req)
            .await
            .expect("the API server's metrics");
        let prefix = format!("{name}{{");
        text.lines()
            .filter_map(|line| {
                let (labels, value) = line.strip_prefix(&prefix)?.rsplit_once("} ")?;
                let labels = labels
                    .split("\",")
                    .filter_map(|kv| kv.split_once("=\""))
                    .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
                    .collect();
                Some((labels, value.trim().parse::<f64>().ok()? as u64))
            })
            .collect()
    }

    async fn admin_applies(&self, object: serde_json::Value) {
        let obj: DynamicObject = serde_json::from_value(object).expect("an object");
        let (api_version, kind) = (
            obj.types
                .as_ref()
                .map(|t| t.api_version.clone())
                .unwrap_or_default(),
            obj.types
                .as_ref()
                .map(|t| t.kind.clone())
                .unwrap_or_default(),
        );
        let plural = format!("{}s", kind.to_lowercase());
        let name = obj.metadata.name.clone().unwrap_or_default();
        let api = self.admin_api(
            &api_version,
            &kind,
            &plural,
            obj.metadata.namespace.as_deref(),
        );
        api.patch(
            &name,
            &PatchParams::apply("flotilla-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name} as admin: {e}"));
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

    /// Gone, or its deletion accepted (`deletionTimestamp` set). A Namespace on a control
    /// plane without kube-controller-manager (`tests/k8s/up`) stays Terminating for good,
    /// because the namespace controller that empties and finalizes it does not run.
    pub async fn deleted(&self, api: &Api<DynamicObject>, name: &str) -> bool {
        api.get_opt(name)
            .await
            .expect("GET works")
            .is_none_or(|o| o.metadata.deletion_timestamp.is_some())
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

pub fn desired(bundle: &str, deployment: &str, yaml: &str, options: DeployOptions) -> Desired {
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

fn dynamic_api(
    client: &Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}
