//! What goes over the wire, read by a raw gRPC client holding a real spoke's credentials.

use std::time::Duration;

use flotilla_e2e::{GitServer, Hub, Spoke, write_file};
use flotilla_identity::{Credentials, files};
use flotilla_proto::v1::{Hello, SpokeMsg, hub_msg, spoke_client::SpokeClient, spoke_msg};

#[test]
fn assign_carries_the_options_the_spoke_needs_including_compare_patches() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write_file(
        &src,
        "app/fleet.yaml",
        "correctDrift:\n  enabled: true\nkeepResources: true\ndiff:\n  comparePatches:\n    - apiVersion: apps/v1\n      kind: Deployment\n      name: app\n      jsonPointers:\n        - /spec/replicas\n",
    );
    write_file(
        &src,
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  v: \"1\"\n",
    );
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &src);
    let hub = Hub::start(tmp.path());
    hub.add_source("s", &repo.url, "");
    let join = hub.token("1h", 1);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    hub.wait_ready_bundles("dev", &["s-app"]);
    dev.proc.kill();
    let creds = Credentials {
        ca_pem: files::read_public(&dev.state.join("ca.pem")).expect("ca"),
        cert_pem: Some(files::read_public(&dev.state.join("cert.pem")).expect("cert")),
        key_pem: Some(files::read_secret(&dev.state.join("key.pem")).expect("key")),
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let assign = rt.block_on(async {
        let channel = flotilla_identity::connect(&hub.addr, &creds)
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(SpokeMsg {
            msg: Some(spoke_msg::Msg::Hello(Hello::default())),
        })
        .await
        .expect("hello");
        let mut stream = SpokeClient::new(channel)
            .sync(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("an Assign within 30 s")
                .expect("stream ok")
                .expect("not closed");
            if let Some(hub_msg::Msg::Assign(a)) = msg.msg {
                break a;
            }
        }
    });
    assert_eq!(assign.bundle, "s-app");
    assert!(
        !assign.content.is_empty(),
        "a Hello without digests gets the content"
    );
    let opts = assign.options.expect("options");
    assert!(opts.correct_drift && opts.keep_resources);
    let patch = opts.compare_patches.first().expect("one comparePatch");
    assert_eq!(patch.json_pointers, ["/spec/replicas"], "{patch:?}");
    assert_eq!(patch.kind.as_deref(), Some("Deployment"));
    assert_eq!(patch.api_version.as_deref(), Some("apps/v1"));
    assert_eq!(
        patch.namespace, None,
        "a selector that is not set is absent"
    );
}
