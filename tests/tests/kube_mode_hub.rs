//! A real `flotilla-hub run --kubeconfig K --namespace NS` against a real kube-apiserver:
//! a Fleet `GitRepo` applied with `kubectl apply` becomes a source whose bundles reach a
//! real spoke; `kubectl wait --for=condition=Ready` sees the GitRepo and the hub's
//! `BundleStatus` views (Ready counts, owner, `observedGeneration`), which turn not Ready
//! when the spoke goes and go with the GitRepo; the Admin API refuses to change the
//! configuration (kubectl is the way); a `Cluster` object labels the registered spoke. A
//! hub whose kubeconfig cannot be read stops and names it.
//!
//! Without a control plane the first test skips with a message, except under `CI=true` (see
//! `flotilla_e2e::k8s`).

use flotilla_e2e::k8s::control_plane;
use flotilla_e2e::{GitServer, Hub, Spoke, example_repo, wait_until};

#[test]
fn a_gitrepo_applied_with_kubectl_is_deployed_by_a_hub_in_kubernetes_mode() {
    let Some(plane) = control_plane() else { return };
    plane.install_crds();
    let ns = format!("kube-hub-{}", std::process::id());
    plane.kubectl(&["create", "namespace", &ns]);

    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let kubeconfig = plane.admin_kubeconfig().display().to_string();
    let hub = Hub::start_with(
        tmp.path(),
        &["--kubeconfig", &kubeconfig, "--namespace", &ns],
    );
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");

    let git_repo = format!(
        "apiVersion: fleet.cattle.io/v1alpha1\n\
         kind: GitRepo\n\
         metadata: {{name: examples}}\n\
         spec:\n  repo: {}\n  branch: main\n  paths: [.]\n  pollingInterval: 1s\n",
        repo.url
    );
    plane.kubectl_with_input(&["apply", "-n", &ns, "-f", "-"], Some(&git_repo));
    plane.kubectl(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "--timeout=120s",
        "gitrepo/examples",
    ]);
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);

    // One read-only BundleStatus per bundle, owned by the GitRepo, Ready once the spoke
    // applied it; the GitRepo counts its ready clusters. (`kubectl wait` fails at once on
    // an object that does not exist yet, and the writer coalesces for a few seconds.)
    wait_until("the BundleStatuses to be written", || {
        plane
            .try_kubectl(
                &[
                    "get",
                    "-n",
                    &ns,
                    "bundlestatus/examples-hello",
                    "bundlestatus/examples-web",
                ],
                None,
            )
            .map(drop)
    });
    plane.kubectl(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "--timeout=120s",
        "bundlestatus/examples-hello",
        "bundlestatus/examples-web",
    ]);
    let list: serde_json::Value =
        serde_json::from_str(&plane.kubectl(&["get", "bundlestatuses", "-n", &ns, "-o", "json"]))
            .expect("kubectl get -o json");
    let commit = plane.kubectl(&[
        "get",
        "-n",
        &ns,
        "gitrepo/examples",
        "-o",
        "jsonpath={.status.commit}",
    ]);
    for name in ["examples-hello", "examples-web"] {
        let item = list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["metadata"]["name"] == name))
            .unwrap_or_else(|| panic!("no BundleStatus {name} in {list}"));
        let status = &item["status"];
        assert_eq!(status["readyClusters"], 1, "{item}");
        assert_eq!(status["desiredReadyClusters"], 1, "{item}");
        assert_eq!(status["summary"]["ready"], 1, "{item}");
        assert_eq!(status["commit"], commit.as_str(), "{item}");
        assert_eq!(status["state"], "Ready", "{item}");
        assert_eq!(
            status["conditions"][0]["observedGeneration"], item["metadata"]["generation"],
            "{item}"
        );
        let owner = &item["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["name"]),
            (&"GitRepo".into(), &"examples".into()),
            "{item}"
        );
    }
    wait_until("the GitRepo's readyClusters", || {
        let counts = plane.kubectl(&[
            "get",
            "-n",
            &ns,
            "gitrepo/examples",
            "-o",
            "jsonpath={.status.readyClusters}/{.status.desiredReadyClusters} {.status.display.readyBundleDeployments}",
        ]);
        (counts == "1/1 2/2").then_some(()).ok_or(counts)
    });

    // A `Cluster` object sets the registered cluster's hub-side labels.
    let cluster = "apiVersion: flotilla.dev/v1alpha1\n\
                   kind: Cluster\n\
                   metadata: {name: dev}\n\
                   spec:\n  labels: {tier: web}\n";
    plane.kubectl_with_input(&["apply", "-n", &ns, "-f", "-"], Some(cluster));
    wait_until("the Cluster object's labels on dev", || {
        let c = hub.json(&["clusters", "dev"]);
        (c["labels"]["tier"] == "web")
            .then_some(())
            .ok_or_else(|| c.to_string())
    });

    let out = hub.cli(&["source", "add", "other", "--repo", &repo.url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "source add was accepted: {stderr}");
    assert!(
        stderr.contains(&format!(
            "this hub takes its configuration from Kubernetes (namespace {ns}); use kubectl"
        )),
        "{stderr}"
    );

    let out = hub.cli(&["cluster", "label", "dev", "tier=db"]);
    assert!(!out.status.success(), "cluster label was accepted");

    // A spoke that goes away turns its bundles' views not Ready, naming it.
    dev.proc.kill();
    plane.kubectl(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready=false",
        "--timeout=120s",
        "bundlestatus/examples-hello",
    ]);
    let hello: serde_json::Value = serde_json::from_str(&plane.kubectl(&[
        "get",
        "-n",
        &ns,
        "bundlestatus/examples-hello",
        "-o",
        "json",
    ]))
    .expect("kubectl get -o json");
    let status = &hello["status"];
    assert_eq!(
        (
            &status["state"],
            &status["readyClusters"],
            &status["conditions"][0]["reason"]
        ),
        (&"Offline".into(), &0.into(), &"Offline".into()),
        "{hello}"
    );
    assert_eq!(status["nonReady"][0]["cluster"], "dev", "{hello}");

    // Deleting the source removes its views (the hub does it; a real cluster's garbage
    // collector would too, through the owner references).
    plane.kubectl(&["delete", "-n", &ns, "gitrepo/examples", "--timeout=120s"]);
    wait_until("the BundleStatuses to go with their GitRepo", || {
        let left = plane.kubectl(&["get", "bundlestatuses", "-n", &ns, "-o", "name"]);
        left.trim().is_empty().then_some(()).ok_or(left)
    });

    let _ = plane.try_kubectl(&["delete", "namespace", &ns, "--wait=false"], None);
}

/// A Kubernetes-mode hub whose kubeconfig cannot be read stops at once with a non-zero exit
/// that names the file, so that its supervisor restarts it instead of serving a hub that
/// never receives its configuration.
#[test]
fn a_hub_whose_kubeconfig_cannot_be_read_stops_and_names_it() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("hub");
    let addr = format!("127.0.0.1:{}", flotilla_e2e::free_port());
    let init = Command::new(flotilla_e2e::bin("flotilla-hub"))
        .args(["init", "--advertise", &addr, "--data-dir"])
        .arg(&data)
        .output()
        .expect("run flotilla-hub init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let missing = tmp.path().join("missing.kubeconfig");
    let log = tmp.path().join("hub.log");
    let mut hub = Command::new(flotilla_e2e::bin("flotilla-hub"))
        .args([
            "run",
            "--listen",
            &addr,
            "--namespace",
            "fleet-config",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--kubeconfig")
        .arg(&missing)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("run flotilla-hub");
    let status = wait_until("the hub to stop", || {
        hub.try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_string())
    });
    let text = std::fs::read_to_string(&log).expect("hub log");
    assert!(!status.success(), "{text}");
    assert!(text.contains("missing.kubeconfig"), "{text}");
}
