//! Cluster capabilities end to end: a spoke on a real kube-apiserver (`tests/k8s/up`, or
//! the cluster `FLOTILLA_E2E_KUBECONFIG` names) reports its version in its Hello; `flotilla
//! clusters -o json` shows it; a chart that prints `.Capabilities.KubeVersion.Version`
//! renders that version into the cluster; two directory-target spokes (which report no
//! capabilities) share one render (`flotilla_hub_renders_total`).

use std::process::Command;

use flotilla_e2e::k8s::control_plane;
use flotilla_e2e::{GitServer, Hub, Proc, Spoke, bin, free_port, metric, wait_until, write_file};

fn kubectl(admin: &str, args: &[&str]) -> String {
    let kubectl = flotilla_e2e::k8s::kubectl().expect("kubectl: tests/k8s/tools/build kubectl");
    let out = Command::new(kubectl)
        .args(["--kubeconfig", admin])
        .args(args)
        .output()
        .expect("kubectl runs");
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::new()
    }
}

#[test]
fn a_chart_reading_capabilities_renders_the_version_each_spoke_reports() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(cluster) = control_plane() else {
        return;
    };
    let (spoke_kubeconfig, admin) = (cluster.spoke.clone(), cluster.admin.clone());
    let server_version: serde_json::Value =
        serde_json::from_str(&kubectl(&admin, &["version", "-o", "json"])).expect("version");
    let git_version = server_version["serverVersion"]["gitVersion"]
        .as_str()
        .expect("gitVersion")
        .to_string();

    // A local chart: its ConfigMap carries the Kubernetes version the render saw.
    let cm = format!("caps-{}", std::process::id());
    let src = tmp.path().join("src");
    write_file(
        &src,
        "caps/fleet.yaml",
        "defaultNamespace: default\nhelm:\n  chart: ./chart\n  releaseName: caps\n",
    );
    write_file(
        &src,
        "caps/chart/Chart.yaml",
        "apiVersion: v2\nname: caps\nversion: 0.1.0\n",
    );
    write_file(
        &src,
        "caps/chart/templates/cm.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {cm}\ndata:\n  kube: {{{{ .Capabilities.KubeVersion.Version | quote }}}}\n"
        ),
    );
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("caps", &src);
    let http = format!("127.0.0.1:{}", free_port());
    let hub = Hub::start_with(tmp.path(), &["--http-listen", &http]);
    hub.add_source("caps", &repo.url, "");
    let join = hub.token("1h", 3);

    let _kube = Proc::spawn(
        Command::new(bin("flotilla-spoke"))
            .args(["--join", &join, "--name", "kube", "--labels", "env=kube"])
            .args(["--target", "kubernetes", "--kubeconfig", &spoke_kubeconfig])
            .arg("--state-dir")
            .arg(tmp.path().join("spokes/kube")),
        tmp.path().join("spoke-kube.log"),
    );
    let a = Spoke::start(tmp.path(), &join, "dir-a", "env=dev");
    let b = Spoke::start(tmp.path(), &join, "dir-b", "env=dev");
    for c in ["kube", "dir-a", "dir-b"] {
        hub.wait_ready_bundles(c, &["caps-caps"]);
    }

    let clusters = hub.json(&["clusters"]);
    let kube_version = |name: &str| {
        clusters
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name))
            .map(|c| c["kube_version"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(kube_version("kube"), git_version);
    assert_eq!(kube_version("dir-a"), "", "a directory target reports none");

    let live = wait_until("the ConfigMap in the cluster", || {
        let v = kubectl(
            &admin,
            &[
                "get",
                "configmap",
                &cm,
                "-n",
                "default",
                "-o",
                "jsonpath={.data.kube}",
            ],
        );
        if v.is_empty() {
            Err("not yet".into())
        } else {
            Ok(v)
        }
    });
    assert_eq!(
        live, git_version,
        "the chart saw the version the spoke reported"
    );
    let dir_text = a.file("caps-caps").expect("dir-a manifest");
    assert!(!dir_text.contains(&git_version), "{dir_text}");
    assert_eq!(a.file("caps-caps"), b.file("caps-caps"));

    // Three clusters, two distinct capabilities (the cluster's, and none): two renders.
    assert_eq!(metric(&http, "flotilla_hub_renders_total"), 2.0);
    let _ = kubectl(&admin, &["delete", "configmap", &cm, "-n", "default"]);
}
