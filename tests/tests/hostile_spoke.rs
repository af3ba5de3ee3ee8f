//! Property test against a live hub: whatever a spoke with a valid certificate sends,
//! malformed, out of order, oversized or garbage, only that stream suffers. After every
//! case the hub still answers, and a well-behaved spoke stays connected and Ready.

use std::time::Duration;

use flotilla_e2e::{GitServer, Hub, Spoke, example_repo};
use flotilla_identity::{Credentials, files};
use flotilla_proto::v1::{
    Applied, Heartbeat, Hello, Renew, ResourceStatus, SpokeMsg, Status, spoke_msg,
};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("dev".to_string()),
        Just("examples-hello".to_string()),
        Just("Ready".to_string()),
        "[a-zA-Z0-9/._:-]{0,40}",
        ".{0,200}",
    ]
}

fn message() -> impl Strategy<Value = SpokeMsg> {
    let hello = (
        text(),
        text(),
        proptest::collection::vec((text(), text(), text()), 0..4),
        proptest::collection::vec(text(), 0..4),
    )
        .prop_map(|(v, name, applied, digests)| {
            spoke_msg::Msg::Hello(Hello {
                agent_version: v,
                cluster_name: name,
                applied: applied
                    .into_iter()
                    .map(|(b, d, c)| Applied {
                        bundle: b,
                        deployment_id: d,
                        content_digest: c,
                    })
                    .collect(),
                digests,
                ..Default::default()
            })
        });
    let status =
        (text(), text(), text(), text(), text(), 0usize..50).prop_map(|(b, d, s, m, n, r)| {
            spoke_msg::Msg::Status(Status {
                bundle: b,
                deployment_id: d,
                state: s,
                message: m,
                cluster_name: n,
                resources: (0..r)
                    .map(|i| ResourceStatus {
                        name: format!("r{i}"),
                        ..Default::default()
                    })
                    .collect(),
            })
        });
    let renew = text().prop_map(|c| spoke_msg::Msg::Renew(Renew { csr_pem: c }));
    prop_oneof![
        hello,
        status,
        renew,
        Just(spoke_msg::Msg::Heartbeat(Heartbeat {})),
    ]
    .prop_map(|m| SpokeMsg { msg: Some(m) })
}

#[test]
fn no_sequence_of_spoke_messages_harms_the_hub_or_other_spokes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let git = GitServer::start(&tmp.path().join("git"));
    let repo = git.repo_from("fleet", &example_repo());
    let hub = Hub::start(tmp.path());
    hub.add_source("examples", &repo.url, "");
    let join = hub.token("1h", 2);
    let mut dev = Spoke::start(tmp.path(), &join, "dev", "env=dev");
    let prod = Spoke::start(tmp.path(), &join, "prod", "env=prod");
    hub.wait_ready_bundles("dev", &["examples-hello", "examples-web"]);
    hub.wait_ready_bundles("prod", &["examples-hello", "examples-web"]);
    dev.proc.kill();
    let creds = Credentials {
        ca_pem: files::read_public(&dev.state.join("ca.pem")).expect("ca"),
        cert_pem: Some(files::read_public(&dev.state.join("cert.pem")).expect("cert")),
        key_pem: Some(files::read_secret(&dev.state.join("key.pem")).expect("key")),
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let channel = rt
        .block_on(flotilla_identity::connect(&hub.addr, &creds))
        .expect("connect");

    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(message(), 0..12), |msgs| {
            rt.block_on(async {
                let mut client =
                    flotilla_proto::v1::spoke_client::SpokeClient::new(channel.clone());
                if let Ok(resp) = client.sync(tokio_stream::iter(msgs)).await {
                    let mut stream = resp.into_inner();
                    // Read until the hub closes or goes quiet; the outcome does not matter.
                    while let Ok(Ok(Some(_))) =
                        tokio::time::timeout(Duration::from_millis(300), stream.message()).await
                    {
                    }
                }
            });
            let out = hub.cli(&["clusters", "-o", "json"]);
            prop_assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        })
        .expect("the hub survives every case");

    // The well-behaved spoke never noticed.
    let clusters = hub.json(&["clusters"]);
    let prod_row = clusters
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["name"] == "prod")
        .cloned()
        .expect("prod");
    assert_eq!(prod_row["connected"], true, "{clusters}");
    hub.wait_ready_bundles("prod", &["examples-hello", "examples-web"]);
    assert!(prod.file("examples-hello").is_some());
}
