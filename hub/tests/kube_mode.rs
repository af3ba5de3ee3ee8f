//! Kubernetes mode against a real kube-apiserver (`tests/k8s/up`, see
//! `flotilla_e2e::k8s`): the CRDs from `crds/` and the objects go in with `kubectl
//! apply`, the controllers run in-process against a fake hub that records what it is
//! told ([`FakeHub`]), and readiness is checked with `kubectl wait`, as a user would.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use flotilla_e2e::k8s::{ControlPlane, control_plane};
use flotilla_e2e::wait_until;
use flotilla_hub::kube_mode::{
    self, ClusterLabels, ClusterView, ConfigSink, CredentialKind, FleetEvent, GroupSpec,
    KubeModeConfig, SinkError, SourceBundles, SourceConfig, SourceState,
};
use serde_json::Value;

/// A fake hub: records every call, and reports a source Ready as soon as it is applied.
#[derive(Default)]
struct FakeHub {
    calls: Mutex<Vec<Call>>,
    sources: Mutex<BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Call {
    ApplySource(Box<SourceConfig>),
    RemoveSource(String),
    ApplyGroup(GroupSpec),
    RemoveGroup(String),
    SetClusterLabels(String, ClusterLabels),
}

impl FakeHub {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("not poisoned").clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().expect("not poisoned").push(call);
    }

    /// The last source of that name the controllers applied.
    fn source(&self, name: &str) -> Option<SourceConfig> {
        self.calls().into_iter().rev().find_map(|c| match c {
            Call::ApplySource(s) if s.spec.name == name => Some(*s),
            _ => None,
        })
    }
}

impl ConfigSink for FakeHub {
    async fn apply_source(&self, source: SourceConfig) -> Result<(), SinkError> {
        self.sources
            .lock()
            .expect("not poisoned")
            .insert(source.spec.name.clone());
        self.record(Call::ApplySource(Box::new(source)));
        Ok(())
    }
    async fn remove_source(&self, name: &str) -> Result<(), SinkError> {
        self.sources.lock().expect("not poisoned").remove(name);
        self.record(Call::RemoveSource(name.to_string()));
        Ok(())
    }
    async fn apply_group(&self, group: GroupSpec) -> Result<(), SinkError> {
        self.record(Call::ApplyGroup(group));
        Ok(())
    }
    async fn remove_group(&self, name: &str) -> Result<(), SinkError> {
        self.record(Call::RemoveGroup(name.to_string()));
        Ok(())
    }
    async fn set_cluster_labels(
        &self,
        cluster: &str,
        labels: ClusterLabels,
    ) -> Result<(), SinkError> {
        self.record(Call::SetClusterLabels(cluster.to_string(), labels));
        Ok(())
    }
    fn source_state(&self, name: &str) -> Option<SourceState> {
        self.sources
            .lock()
            .expect("not poisoned")
            .contains(name)
            .then(|| SourceState::Ready {
                commit: "fake-commit".into(),
                message: "published by the fake hub".into(),
            })
    }
    fn cluster_view(&self, _: &str) -> Option<ClusterView> {
        None
    }
    /// The fake publishes no bundles, so its `BundleStatus` writer has nothing to write
    /// (the writer is tested with a real hub in `tests/tests/kube_mode_hub.rs`).
    fn bundles(&self) -> Vec<SourceBundles> {
        Vec::new()
    }
    /// Nothing ever changes: a closed channel, which stops the writer at once.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<FleetEvent> {
        tokio::sync::broadcast::channel(1).1
    }
}

/// A namespace of its own with the CRDs installed, and the controllers running on it.
struct Setup {
    plane: &'static ControlPlane,
    ns: String,
    hub: Arc<FakeHub>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Setup {
    fn start() -> Option<Setup> {
        let plane = control_plane()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        plane.install_crds();
        let ns = format!("kube-mode-{:08x}", rand::random::<u32>());
        plane.kubectl(&["create", "namespace", &ns]);
        let hub = Arc::new(FakeHub::default());
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let config = KubeModeConfig {
            kubeconfig: Some(plane.admin_kubeconfig()),
            namespace: ns.clone(),
        };
        let sink = hub.clone();
        runtime.spawn(async move {
            if let Err(e) = kube_mode::run(config, sink).await {
                panic!("kubernetes mode stopped: {e}");
            }
        });
        Some(Setup {
            plane,
            ns,
            hub,
            runtime: Some(runtime),
        })
    }

    fn apply(&self, yaml: &str) {
        self.plane
            .kubectl_with_input(&["apply", "-n", &self.ns, "-f", "-"], Some(yaml));
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        self.plane.kubectl(&all)
    }

    fn get(&self, what: &str) -> Value {
        serde_json::from_str(&self.kubectl(&["get", what, "-o", "json"]))
            .expect("kubectl prints JSON")
    }

    fn wait_for_call(&self, what: &str, want: impl Fn(&Call) -> bool) {
        wait_until(what, || {
            let calls = self.hub.calls();
            calls
                .iter()
                .any(&want)
                .then_some(())
                .ok_or_else(|| format!("{calls:?}"))
        });
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        // Finalizers stay on what the test did not delete; drop them so the namespace
        // goes away without a hub.
        for kind in [
            "gitrepos.fleet.cattle.io",
            "clustergroups.fleet.cattle.io",
            "sources.flotilla.dev",
            "clustergroups.flotilla.dev",
            "clusters.flotilla.dev",
        ] {
            if let Ok(names) = self
                .plane
                .try_kubectl(&["get", kind, "-n", &self.ns, "-o", "name"], None)
            {
                for name in names.lines() {
                    let _ = self.plane.try_kubectl(
                        &[
                            "patch",
                            name,
                            "-n",
                            &self.ns,
                            "--type=merge",
                            "-p",
                            r#"{"metadata":{"finalizers":null}}"#,
                        ],
                        None,
                    );
                }
            }
        }
        let _ = self
            .plane
            .try_kubectl(&["delete", "namespace", &self.ns, "--wait=false"], None);
    }
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

const GIT_REPO: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: git-auth}
type: kubernetes.io/basic-auth
stringData: {username: deploy-bot, password: s3cret}
---
apiVersion: fleet.cattle.io/v1alpha1
kind: GitRepo
metadata: {name: apps}
spec:
  repo: https://git.example.com/fleet.git
  branch: prod
  paths: [apps/web, apps/db]
  pollingInterval: 1m
  clientSecretName: git-auth
  serviceAccount: deployer
  targets:
    - name: production
      clusterSelector:
        matchLabels: {env: prod}
    - clusterGroup: edge
---
apiVersion: fleet.cattle.io/v1alpha1
kind: ClusterGroup
metadata:
  name: edge
  labels: {tier: edge}
spec:
  selector:
    matchExpressions:
      - {key: region, operator: In, values: [eu, us]}
"#;

#[test]
fn a_fleet_gitrepo_applied_with_kubectl_becomes_a_ready_source_and_goes_with_its_object() {
    let Some(setup) = Setup::start() else { return };
    setup.apply(GIT_REPO);

    setup.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "gitrepo/apps",
    ]);
    let source = setup
        .hub
        .source("apps")
        .expect("the GitRepo was applied as a source");
    let spec = &source.spec;
    assert_eq!(spec.repo, "https://git.example.com/fleet.git");
    assert_eq!(spec.branch, "prod");
    assert_eq!(spec.paths, ["apps/web", "apps/db"]);
    assert_eq!(spec.interval_secs, 60);
    assert_eq!(spec.username.as_deref(), Some("deploy-bot"));
    assert_eq!(
        source.credentials,
        vec![(CredentialKind::Password, b"s3cret".to_vec())]
    );
    assert_eq!(spec.targets.len(), 2);
    assert_eq!(spec.targets[0].name, "production");
    assert_eq!(
        spec.targets[0]
            .cluster_selector
            .as_ref()
            .map(|s| s.to_string()),
        Some("env=prod".to_string())
    );
    assert_eq!(spec.targets[1].cluster_group.as_deref(), Some("edge"));

    // The status says what was deployed, for which generation, and what was ignored.
    let repo = setup.get("gitrepo/apps");
    assert_eq!(
        repo["status"]["observedGeneration"],
        repo["metadata"]["generation"]
    );
    assert_eq!(repo["status"]["commit"], "fake-commit");
    let ready = condition(&repo, "Ready").expect("a Ready condition");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Deployed"))
    );
    let unsupported = condition(&repo, "Unsupported").expect("an Unsupported condition");
    assert_eq!(unsupported["status"], "True");
    let message = unsupported["message"].as_str().unwrap_or_default();
    assert!(message.contains("spec.serviceAccount"), "{message}");

    // The ClusterGroup became a group with its selector and its own labels.
    setup.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "clustergroups.fleet.cattle.io/edge",
    ]);
    setup.wait_for_call("the group edge", |c| {
        matches!(c, Call::ApplyGroup(g) if g.name == "edge"
            && g.selector.to_string() == "region in (eu,us)"
            && g.labels.get("tier").map(String::as_str) == Some("edge"))
    });

    // An edit is applied again; deleting the objects removes the source and the group.
    setup.kubectl(&[
        "patch",
        "gitrepo/apps",
        "--type=merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ]);
    wait_until("the paused source", || {
        setup
            .hub
            .source("apps")
            .filter(|s| s.spec.paused)
            .map(|_| ())
            .ok_or_else(|| format!("{:?}", setup.hub.calls().last()))
    });
    setup.kubectl(&["delete", "gitrepo/apps", "--timeout=60s"]);
    setup.wait_for_call("removal of the source", |c| {
        *c == Call::RemoveSource("apps".into())
    });
    setup.kubectl(&[
        "delete",
        "clustergroups.fleet.cattle.io/edge",
        "--timeout=60s",
    ]);
    setup.wait_for_call("removal of the group", |c| {
        *c == Call::RemoveGroup("edge".into())
    });
}

#[test]
fn an_object_that_cannot_be_applied_is_stalled_with_the_reason_until_it_is_fixed() {
    let Some(setup) = Setup::start() else { return };
    setup.apply(
        r#"
apiVersion: flotilla.dev/v1alpha1
kind: Source
metadata: {name: web}
spec:
  repo: https://git.example.com/web.git
  pollingInterval: soon
  auth:
    passwordSecretRef: {name: web-git, key: token}
"#,
    );
    let stalled = wait_until("the Source to be Stalled", || {
        let source = setup.get("sources.flotilla.dev/web");
        match condition(&source, "Ready") {
            Some(c) if c["reason"] == "Stalled" => {
                Ok(c["message"].as_str().unwrap_or_default().to_string())
            }
            other => Err(format!("{other:?}")),
        }
    });
    assert!(stalled.contains("spec.pollingInterval"), "{stalled}");
    assert!(setup.hub.source("web").is_none(), "nothing reached the hub");

    // Fixed, but the Secret it names is missing: still Stalled, now saying so.
    setup.kubectl(&[
        "patch",
        "sources.flotilla.dev/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"pollingInterval":"30s"}}"#,
    ]);
    wait_until("the missing Secret in the status", || {
        let source = setup.get("sources.flotilla.dev/web");
        let c = condition(&source, "Ready").cloned().unwrap_or_default();
        (c["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Secret web-git not found")
            && source["status"]["observedGeneration"] == source["metadata"]["generation"])
            .then_some(())
            .ok_or_else(|| format!("{c}"))
    });
    setup.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: web-git}\nstringData: {token: t0ken}\n",
    );
    setup.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "sources.flotilla.dev/web",
    ]);
    let source = setup.hub.source("web").expect("applied once fixed");
    assert_eq!(source.spec.interval_secs, 30);
    assert_eq!(
        source.credentials,
        vec![(CredentialKind::Password, b"t0ken".to_vec())]
    );
}

#[test]
fn a_cluster_object_sets_hub_side_labels_and_reports_an_unregistered_cluster() {
    let Some(setup) = Setup::start() else { return };
    setup.apply(
        r#"
apiVersion: flotilla.dev/v1alpha1
kind: Cluster
metadata: {name: edge-1}
spec:
  labels: {env: prod}
  acceptLabels: [region]
"#,
    );
    setup.wait_for_call("the hub-side labels", |c| {
        matches!(c, Call::SetClusterLabels(n, l) if n == "edge-1"
            && l.labels.get("env").map(String::as_str) == Some("prod")
            && l.accept == ["region"])
    });
    wait_until("the NotRegistered condition", || {
        let cluster = setup.get("clusters.flotilla.dev/edge-1");
        let c = condition(&cluster, "Ready").cloned().unwrap_or_default();
        (c["reason"] == "NotRegistered")
            .then_some(())
            .ok_or_else(|| format!("{c}"))
    });
    setup.kubectl(&["delete", "clusters.flotilla.dev/edge-1", "--timeout=60s"]);
    setup.wait_for_call("the labels cleared", |c| {
        *c == Call::SetClusterLabels("edge-1".into(), ClusterLabels::default())
    });
}
