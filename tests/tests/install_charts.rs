//! The Helm charts that install flotilla (`charts/flotilla-hub`, `charts/flotilla-spoke`),
//! checked with the real tools: the pinned `helm` lints them (also `--strict`); `helm
//! template` and flotilla's own renderer (`flotilla render`) give the same objects for the
//! default values and for a non-default set (`tests/fixtures/install_charts/`); a real
//! kube-apiserver accepts every object in a server-side dry run; the hub chart's init and
//! run commands start the real hub, twice on one volume; with replicas on etcd, the
//! init container's script copies one PKI into each pod's volume and two hubs run from
//! the chart's arguments on one etcd (the schema and the template refuse replicas
//! without etcd or a shared PKI, in both renderers); and a real spoke runs with the
//! spoke chart's command line, ServiceAccount, ClusterRoles and Roles, applies a bundle and
//! is refused a kind outside them.
//!
//! Without `helm` or `kubectl` the tests skip with a message, except under `CI=true`. The
//! control plane is the one the environment names, else `tests/k8s/up` (see
//! `flotilla_e2e::k8s`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flotilla_e2e::k8s::{ControlPlane, control_plane, kubectl};
use flotilla_e2e::{GitServer, Hub, Proc, bin, charts, wait_until, write_file};
use serde_json::Value;

const CHARTS: [&str; 2] = ["flotilla-hub", "flotilla-spoke"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart(name: &str) -> PathBuf {
    repo_root().join("charts").join(name)
}

/// The non-default values of a chart.
fn fixture_values(name: &str) -> PathBuf {
    let short = name.trim_start_matches("flotilla-");
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("fixtures/install_charts/{short}-values.yaml"))
}

/// The value sets each chart is checked with: its defaults, its non-default set, and for
/// the hub, replicas on etcd with the PKI from a Secret.
fn value_sets(name: &str) -> Vec<Option<PathBuf>> {
    let mut sets = vec![None, Some(fixture_values(name))];
    if name == "flotilla-hub" {
        sets.push(Some(replicas_values()));
    }
    sets
}

/// The hub's values for three replicas on etcd with the PKI from a Secret.
fn replicas_values() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/install_charts/hub-replicas-values.yaml")
}

/// A suffix of this process and moment, so that runs sharing a cluster never share a name.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// The control plane shared by this file's tests, started once.
fn cluster() -> &'static ControlPlane {
    control_plane().expect("a Kubernetes control plane (tests/k8s/up)")
}

/// Runs a tool, returning (success, stdout, stderr).
fn run(cmd: &mut Command, input: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.unwrap_or_default().as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a tool that must succeed; returns its stdout.
fn ok(cmd: &mut Command, input: Option<&str>) -> String {
    let (success, out, err) = run(cmd, input);
    assert!(success, "{cmd:?} failed:\n{err}\n{out}");
    out
}

fn kubectl_as(kubectl: &Path, kubeconfig: &str) -> Command {
    let mut c = Command::new(kubectl);
    c.args(["--kubeconfig", kubeconfig]);
    c
}

/// `helm template` of a chart as release `rel` in `namespace`.
fn helm_template(
    helm: &Path,
    name: &str,
    namespace: &str,
    values: &[&Path],
    set: &[String],
) -> String {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "rel"])
        .arg(chart(name))
        .args(["--namespace", namespace]);
    for v in values {
        cmd.arg("-f").arg(v);
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    ok(&mut cmd, None)
}

/// Each object as JSON, in order. serde_json's maps are sorted by key (the workspace does
/// not enable `preserve_order`), so equal objects print equal.
fn canonical(objects: impl IntoIterator<Item = Value>) -> Vec<String> {
    objects
        .into_iter()
        .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
        .collect()
}

/// The objects of a multi-document YAML stream, as Kubernetes reads them (`0440` is octal).
fn yaml_objects(text: &str) -> Vec<Value> {
    let mut opts = serde_saphyr::Options::default();
    opts.legacy_octal_numbers = true;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, opts).expect("helm's output parses");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The chart rendered by `flotilla render`, from a bundle that names it in its fleet.yaml
/// as a user's repo would.
fn flotilla_render(name: &str, namespace: &str, values: Option<&Path>) -> Vec<Value> {
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = tmp.path().join("bundle");
    flotilla_e2e::copy_dir(&chart(name), &bundle.join("chart"));
    let mut fleet =
        format!("defaultNamespace: {namespace}\nhelm:\n  chart: chart\n  releaseName: rel\n");
    if let Some(v) = values {
        std::fs::copy(v, bundle.join("values.yaml")).expect("copy values");
        fleet.push_str("  valuesFiles: [values.yaml]\n");
    }
    write_file(&bundle, "fleet.yaml", &fleet);
    let out = ok(
        Command::new(bin("flotilla"))
            .arg("render")
            .arg(&bundle)
            .args(["-o", "json"]),
        None,
    );
    let list: Value = serde_json::from_str(&out).expect("flotilla render -o json");
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn both_charts_pass_helm_lint_with_their_defaults_and_a_non_default_set_also_strict() {
    let Some(helm) = charts::helm() else { return };
    for name in CHARTS {
        for strict in [false, true] {
            for values in value_sets(name) {
                let mut cmd = Command::new(&helm);
                cmd.arg("lint").arg(chart(name));
                if strict {
                    cmd.arg("--strict");
                }
                if let Some(values) = &values {
                    cmd.arg("-f").arg(values);
                }
                let out = ok(&mut cmd, None);
                assert!(out.contains("0 chart(s) failed"), "{out}");
            }
        }
        // The schema refuses what the chart does not know, so a typo fails the install.
        let (success, out, err) = run(
            Command::new(&helm)
                .arg("lint")
                .arg(chart(name))
                .args(["--set", "persistence.sise=1Gi"]),
            None,
        );
        assert!(
            !success && out.contains("additional properties 'sise' not allowed"),
            "{name}: {out}{err}"
        );
    }
}

#[test]
fn helm_and_flotillas_renderer_give_the_same_objects_for_both_charts() {
    let Some(helm) = charts::helm() else { return };
    let namespace = "flotilla-system";
    for name in CHARTS {
        for values in value_sets(name) {
            let with_values = values.as_deref();
            let given: Vec<&Path> = with_values.into_iter().collect();
            let theirs = canonical(yaml_objects(&helm_template(
                &helm,
                name,
                namespace,
                &given,
                &[],
            )));
            let ours = canonical(flotilla_render(name, namespace, with_values));
            assert!(
                theirs.len() >= 3,
                "{name}: helm rendered {} objects",
                theirs.len()
            );
            assert_eq!(
                ours.len(),
                theirs.len(),
                "{name} {with_values:?}: flotilla render gave {} objects, helm {}:\nours: {ours:#?}\ntheirs: {theirs:#?}",
                ours.len(),
                theirs.len()
            );
            for (a, b) in ours.iter().zip(&theirs) {
                assert_eq!(
                    a, b,
                    "{name} {with_values:?}: flotilla render (left) and helm template (right) differ"
                );
            }
        }
    }
}

#[test]
fn hub_replicas_without_etcd_or_a_shared_pki_fail_to_render_in_helm_and_flotilla() {
    let Some(helm) = charts::helm() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let cases = [
        (
            "replicas: 3\n",
            "/store/etcd/endpoints",
            "replicas: 3 needs store.etcd.endpoints",
        ),
        (
            "replicas: 2\nstore:\n  etcd:\n    endpoints: [etcd:2379]\n",
            "/pki/existingSecret",
            "replicas: 2 needs pki.existingSecret",
        ),
    ];
    for (i, (values, schema_says, template_says)) in cases.into_iter().enumerate() {
        let file = tmp.path().join(format!("values-{i}.yaml"));
        std::fs::write(&file, values).expect("write values");
        // The schema refuses it first, in both renderers.
        let (success, out, err) = run(
            Command::new(&helm)
                .args(["template", "rel"])
                .arg(chart("flotilla-hub"))
                .arg("-f")
                .arg(&file),
            None,
        );
        assert!(
            !success && err.contains(schema_says),
            "helm, {values}: {out}{err}"
        );
        let bundle = tmp.path().join(format!("bundle-{i}"));
        flotilla_e2e::copy_dir(&chart("flotilla-hub"), &bundle.join("chart"));
        std::fs::copy(&file, bundle.join("values.yaml")).expect("copy values");
        write_file(
            &bundle,
            "fleet.yaml",
            "defaultNamespace: ns\nhelm:\n  chart: chart\n  releaseName: rel\n  valuesFiles: [values.yaml]\n",
        );
        let (success, out, err) = run(
            Command::new(bin("flotilla")).arg("render").arg(&bundle),
            None,
        );
        assert!(
            !success && err.contains(schema_says),
            "flotilla render, {values}: {out}{err}"
        );
        // The template refuses it too, where the schema is skipped.
        let (success, out, err) = run(
            Command::new(&helm)
                .args(["template", "rel", "--skip-schema-validation"])
                .arg(chart("flotilla-hub"))
                .arg("-f")
                .arg(&file),
            None,
        );
        assert!(
            !success && err.contains(template_says),
            "helm without the schema, {values}: {out}{err}"
        );
        std::fs::remove_file(bundle.join("chart/values.schema.json")).expect("rm schema");
        let (success, out, err) = run(
            Command::new(bin("flotilla")).arg("render").arg(&bundle),
            None,
        );
        assert!(
            !success && err.contains(template_says),
            "flotilla render without the schema, {values}: {out}{err}"
        );
    }
}

#[test]
fn the_api_server_accepts_both_charts_in_a_server_side_dry_run() {
    let (Some(helm), Some(kubectl)) = (charts::helm(), kubectl()) else {
        return;
    };
    let admin = cluster().admin.clone();
    let namespace = format!("charts-dry-{}", unique());
    // The spoke's inventory Roles live in flotilla-system, whatever the release's namespace.
    for ns in [namespace.as_str(), "flotilla-system"] {
        ok(
            kubectl_as(&kubectl, &admin).args(["apply", "--server-side", "-f", "-"]),
            Some(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
            )),
        );
    }
    // The non-default hub values turn the ServiceMonitor on: the server must know the kind.
    let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/install_charts/servicemonitor-crd.yaml");
    let had_crd = run(
        kubectl_as(&kubectl, &admin).args(["get", "crd", "servicemonitors.monitoring.coreos.com"]),
        None,
    )
    .0;
    if !had_crd {
        ok(
            kubectl_as(&kubectl, &admin)
                .args(["apply", "--server-side", "-f"])
                .arg(&crd),
            None,
        );
        ok(
            kubectl_as(&kubectl, &admin).args([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/servicemonitors.monitoring.coreos.com",
            ]),
            None,
        );
    }
    for name in CHARTS {
        for values in value_sets(name) {
            let with_values = values.as_deref();
            let given: Vec<&Path> = with_values.into_iter().collect();
            let rendered = helm_template(&helm, name, &namespace, &given, &[]);
            let out = ok(
                kubectl_as(&kubectl, &admin).args([
                    "apply",
                    "--dry-run=server",
                    "--server-side",
                    "-f",
                    "-",
                ]),
                Some(&rendered),
            );
            assert_eq!(
                out.lines()
                    .filter(|l| l.ends_with("(server dry run)"))
                    .count(),
                yaml_objects(&rendered).len(),
                "{name} {with_values:?}: every object accepted:\n{out}"
            );
        }
    }
    ok(
        kubectl_as(&kubectl, &admin).args(["delete", "namespace", &namespace, "--wait=false"]),
        None,
    );
    if !had_crd {
        ok(
            kubectl_as(&kubectl, &admin)
                .args(["delete", "-f"])
                .arg(&crd),
            None,
        );
    }
}

/// A kubeconfig for the same API server as `admin`, authenticated by `token`.
fn kubeconfig_with_token(kubectl: &Path, admin: &str, token: &str) -> String {
    let view: Value = serde_json::from_str(&ok(
        kubectl_as(kubectl, admin).args(["config", "view", "--raw", "--minify", "-o", "json"]),
        None,
    ))
    .expect("kubectl config view");
    let cluster = &view["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "spoke", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "spoke"}}],
        "current-context": "c",
    });
    serde_json::to_string_pretty(&config).expect("json")
}

/// The hub's status row of `bundle` on `cluster`.
fn row(hub: &Hub, cluster: &str, bundle: &str) -> Option<Value> {
    hub.json(&["status"])
        .as_array()?
        .iter()
        .find(|r| r["cluster"] == cluster && r["bundle"] == bundle)
        .cloned()
}

#[test]
fn a_spoke_with_the_charts_service_account_applies_a_bundle_and_is_refused_a_kind_outside_its_role()
{
    let (Some(helm), Some(kubectl)) = (charts::helm(), kubectl()) else {
        return;
    };
    let admin = cluster().admin.clone();
    let tmp = tempfile::tempdir().expect("tmp");
    let id = unique();
    let release_ns = format!("charts-spoke-{id}");
    let app_ns = format!("charts-app-{id}");
    let fullname = format!("e2e-{id}");
    let source = format!("c{id}");

    // A hub, and a repo with two bundles: a ConfigMap (the chart's role grants it) and a
    // Secret (it does not).
    let src = tmp.path().join("src");
    write_file(
        &src,
        "app/fleet.yaml",
        &format!("defaultNamespace: {app_ns}\n"),
    );
    write_file(&src, "app/cm.yaml", &flotilla_e2e::configmap("web", "v1"));
    write_file(
        &src,
        "secret/fleet.yaml",
        &format!("defaultNamespace: {app_ns}\n"),
    );
    write_file(
        &src,
        "secret/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n",
    );
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start(tmp.path());
    hub.add_source(&source, &repo.url, "");
    let join = hub.token_with("1h", 1, &[]);

    // The chart, applied for real: the ServiceAccount, its ClusterRoles and Roles, and the
    // Secret made from join.value. No kubelet runs its Deployment; the spoke runs here.
    ok(
        kubectl_as(&kubectl, &admin).args(["apply", "--server-side", "-f", "-"]),
        Some(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {release_ns}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: flotilla-system\n"
        )),
    );
    let rendered = helm_template(
        &helm,
        "flotilla-spoke",
        &release_ns,
        &[],
        &[
            format!("fullnameOverride={fullname}"),
            "clusterName=charted".to_string(),
            format!("join.value={join}"),
        ],
    );
    ok(
        kubectl_as(&kubectl, &admin).args(["apply", "--server-side", "-f", "-"]),
        Some(&rendered),
    );
    let secret = ok(
        kubectl_as(&kubectl, &admin).args([
            "get",
            "secret",
            &format!("{fullname}-join"),
            "-n",
            &release_ns,
            "-o",
            "jsonpath={.data.join}",
        ]),
        None,
    );
    // The Deployment's volumes, as folders here: the Secret's key as a file, the state
    // volume empty.
    let volumes = tmp.path().join("volumes");
    let join_file = volumes.join("join/join");
    std::fs::create_dir_all(volumes.join("join")).expect("mkdir");
    std::fs::write(&join_file, base64_decode(&secret)).expect("write join");
    let token = ok(
        kubectl_as(&kubectl, &admin).args([
            "create",
            "token",
            &fullname,
            "-n",
            &release_ns,
            "--duration",
            "1h",
        ]),
        None,
    );
    let kubeconfig = tmp.path().join("chart-sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        kubeconfig_with_token(&kubectl, &admin, token.trim()),
    )
    .expect("write kubeconfig");
    let who = ok(
        kubectl_as(&kubectl, &kubeconfig.to_string_lossy()).args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ]),
        None,
    );
    assert_eq!(
        who,
        format!("system:serviceaccount:{release_ns}:{fullname}")
    );

    // The spoke runs with the Deployment's own command line (the volumes' paths moved
    // here), and the in-cluster credentials of its ServiceAccount as a kubeconfig.
    let args = relocate(
        &container_args(
            &yaml_objects(&rendered),
            "Deployment",
            "containers",
            "spoke",
        ),
        &[
            ("/var/lib/flotilla-spoke", &volumes.join("state")),
            ("/etc/flotilla/join", &volumes.join("join")),
        ],
    );
    assert!(
        args.contains(&"--target=kubernetes".to_string()),
        "{args:?}"
    );
    let _spoke = Proc::spawn(
        Command::new(bin("flotilla-spoke"))
            .args(&args)
            .arg("--kubeconfig")
            .arg(&kubeconfig),
        tmp.path().join("spoke.log"),
    );
    let app = format!("{source}-app");
    let refused = format!("{source}-secret");
    let (app_row, refused_row) =
        wait_until("the ConfigMap Ready and the Secret refused", || {
            match (row(&hub, "charted", &app), row(&hub, "charted", &refused)) {
                (Some(a), Some(s)) if a["state"] == "Ready" && s["state"] == "ErrApplied" => {
                    Ok((a, s))
                }
                other => Err(format!("{other:?}")),
            }
        });
    assert_eq!(app_row["state"], "Ready");
    let message = refused_row["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("forbidden")
            && message.contains(&format!("system:serviceaccount:{release_ns}:{fullname}"))
            && message.contains("secrets"),
        "the API server refused the kind outside the role, as the chart's ServiceAccount: {message}"
    );

    // What the spoke applied is in the cluster, under its field manager.
    let managers = ok(
        kubectl_as(&kubectl, &admin).args([
            "get",
            "configmap",
            "web",
            "-n",
            &app_ns,
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ]),
        None,
    );
    assert!(managers.split(' ').any(|m| m == "flotilla"), "{managers}");
    let (secret_exists, _, _) = run(
        kubectl_as(&kubectl, &admin).args(["get", "secret", "db", "-n", &app_ns]),
        None,
    );
    assert!(!secret_exists, "nothing of the refused bundle was written");

    // Leave a shared cluster as it was.
    let _ = run(
        kubectl_as(&kubectl, &admin).args(["delete", "-f", "-", "--wait=false"]),
        Some(&rendered),
    );
    for ns in [&release_ns, &app_ns] {
        let _ = run(
            kubectl_as(&kubectl, &admin).args(["delete", "namespace", ns, "--wait=false"]),
            None,
        );
    }
    for bundle in [&app, &refused] {
        let _ = run(
            kubectl_as(&kubectl, &admin).args([
                "delete",
                "configmap",
                &format!("bundle-{bundle}"),
                "-n",
                "flotilla-system",
            ]),
            None,
        );
    }
}

/// The `args` of container `name` in the pod template of the rendered object of `kind`;
/// `list` is `containers` or `initContainers`.
fn container_args(objects: &[Value], kind: &str, list: &str, name: &str) -> Vec<String> {
    let object = objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"));
    let container = object["spec"]["template"]["spec"][list]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name} in the {kind}"));
    container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `args` with each in-container path prefix replaced by a folder here.
fn relocate(args: &[String], mounts: &[(&str, &Path)]) -> Vec<String> {
    args.iter()
        .map(|a| {
            mounts.iter().fold(a.clone(), |a, (from, to)| {
                a.replace(from, &to.to_string_lossy())
            })
        })
        .collect()
}

#[test]
fn the_hub_charts_init_and_run_commands_start_a_hub_on_a_new_volume_and_again_on_a_used_one() {
    let Some(helm) = charts::helm() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let grpc = flotilla_e2e::free_port();
    let http = flotilla_e2e::free_port();
    // The non-default values, on loopback ports: every flag they set reaches the real hub.
    let rendered = yaml_objects(&helm_template(
        &helm,
        "flotilla-hub",
        "flotilla-system",
        &[&fixture_values("flotilla-hub")],
        &[
            "listenAddress=127.0.0.1".to_string(),
            format!("grpc.port={grpc}"),
            format!("http.port={http}"),
            format!("advertise=127.0.0.1:{grpc}"),
            // Kubernetes mode needs an API server; this hub runs outside any cluster, and
            // the mode has its own end-to-end test (kube_mode_hub.rs).
            "kubernetesMode.enabled=false".to_string(),
        ],
    ));
    let volume = tmp.path().join("volume");
    let mounts = [("/var/lib/flotilla", volume.as_path())];
    let init = relocate(
        &container_args(&rendered, "StatefulSet", "initContainers", "init"),
        &mounts,
    );
    let run_args = relocate(
        &container_args(&rendered, "StatefulSet", "containers", "hub"),
        &mounts,
    );
    assert!(
        run_args.contains(&"--strict-fleet-yaml".to_string()),
        "{run_args:?}"
    );
    let config = volume.join("hub/admin.conf");
    let ca = volume.join("hub/ca.pem");
    let mut first_ca = None;
    for (i, start) in ["a new volume", "a used volume"].into_iter().enumerate() {
        let out = ok(Command::new(bin("flotilla-hub")).args(&init), None);
        let ca_now = std::fs::read(&ca).expect("init made the CA");
        let first = first_ca.get_or_insert_with(|| ca_now.clone());
        assert_eq!(first, &ca_now, "{start}: the CA is made once and kept");
        if i == 1 {
            assert!(out.contains("nothing to do"), "{out}");
        }
        let mut hub = Proc::spawn(
            Command::new(bin("flotilla-hub"))
                .args(&run_args)
                .env("FLOTILLA_WEBHOOK_SECRET", "from-a-secret"),
            tmp.path().join(format!("hub-{i}.log")),
        );
        wait_until(&format!("the hub on {start} to answer"), || {
            let out = flotilla_e2e::cli_as(&config, &["clusters"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        let (status, _) =
            flotilla_e2e::http(&format!("127.0.0.1:{http}"), "GET", "/healthz", &[], b"");
        assert_eq!(status, 200, "{start}: the liveness probe's path answers");
        // Webhooks authenticate with the secret the chart gives through the environment.
        let push = br#"{"ref": "refs/heads/main", "project": {"git_http_url": "https://git.example.com/a.git"}}"#;
        for (token, expected) in [("wrong", 401), ("from-a-secret", 202)] {
            let (status, text) = flotilla_e2e::http(
                &format!("127.0.0.1:{http}"),
                "POST",
                "/webhooks/gitlab",
                &[("X-Gitlab-Token", token.to_string())],
                push,
            );
            assert_eq!(status, expected, "{start}: token {token}: {text}");
        }
        assert!(hub.terminate(), "{start}: the hub stops on SIGTERM");
    }
}

/// Standard base64 (a Secret's `data`), decoded.
fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .expect("a Secret's data is base64")
}

#[test]
fn the_hub_charts_replicas_copy_one_pki_from_the_secret_and_serve_on_etcd_each_on_its_pod_ip() {
    let Some(helm) = charts::helm() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(etcd) = flotilla_e2e::etcd::EtcdServer::start(&tmp.path().join("etcd")) else {
        return;
    };
    // Two "pods" on two loopback addresses, one port, as pods have one port each.
    let grpc = flotilla_e2e::free_port();
    let pods = ["127.0.0.1", "127.0.0.2"];
    // The PKI, made once as docs/operations.md says; its folder stands for the Secret.
    let secret = tmp.path().join("secret");
    let advertise = pods.map(|ip| format!("{ip}:{grpc}")).join(",");
    ok(
        Command::new(bin("flotilla-hub"))
            .arg("init")
            .arg("--data-dir")
            .arg(&secret)
            .args(["--advertise", &advertise])
            .arg(format!("--store=etcd://{}", etcd.endpoint)),
        None,
    );
    let rendered = yaml_objects(&helm_template(
        &helm,
        "flotilla-hub",
        "flotilla-system",
        &[&replicas_values()],
        &[
            format!("store.etcd.endpoints={{{}}}", etcd.endpoint),
            format!("grpc.port={grpc}"),
            "http.enabled=false".to_string(),
            "leaderLease=3s".to_string(),
        ],
    ));
    let copy = container_args(&rendered, "StatefulSet", "initContainers", "pki");
    let run_args = container_args(&rendered, "StatefulSet", "containers", "hub");
    assert!(
        run_args.contains(&format!("--listen=$(POD_IP):{grpc}")),
        "{run_args:?}"
    );
    let mut hubs = Vec::new();
    for (i, ip) in pods.into_iter().enumerate() {
        let volume = tmp.path().join(format!("volume-{i}"));
        let mounts = [
            ("/var/lib/flotilla", volume.as_path()),
            ("/etc/flotilla/pki", secret.as_path()),
        ];
        // The init container's script, twice: a restart copies over the first copy.
        for _ in 0..2 {
            ok(
                Command::new("sh").arg("-c").args(relocate(&copy, &mounts)),
                None,
            );
        }
        let data = volume.join("hub");
        for name in [
            "ca.pem",
            "ca-key.pem",
            "hub-key.pem",
            "admin-key.pem",
            "hub.conf",
        ] {
            let copied = std::fs::read(data.join(name)).expect("copied");
            assert_eq!(
                copied,
                std::fs::read(secret.join(name)).expect("secret"),
                "{name}"
            );
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join(name))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: owner-only");
        }
        let args: Vec<String> = relocate(&run_args, &mounts)
            .into_iter()
            .map(|a| a.replace("$(POD_IP)", ip))
            .collect();
        hubs.push(Proc::spawn(
            Command::new(bin("flotilla-hub")).args(&args),
            tmp.path().join(format!("hub-{i}.log")),
        ));
        // This pod alone, through its own copy of admin.conf.
        let conf = std::fs::read_to_string(data.join("admin.conf")).expect("admin.conf");
        let only = data.join("only.conf");
        std::fs::write(
            &only,
            conf.lines()
                .map(|l| {
                    if l.starts_with("server:") {
                        format!("server: {ip}:{grpc}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .expect("write conf");
        wait_until(&format!("the replica on {ip} to answer"), || {
            let out = flotilla_e2e::cli_as(&only, &["clusters"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
    }
    // One leader among them, named by its pod address.
    wait_until("one replica elected", || {
        let elected = hubs
            .iter()
            .filter(|h| h.log_text().contains("elected leader"))
            .count();
        if elected == 1 {
            Ok(())
        } else {
            Err(format!("{elected} elected"))
        }
    });
    for mut hub in hubs {
        assert!(hub.terminate(), "the replica stops on SIGTERM");
    }
}
