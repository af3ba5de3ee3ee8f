//! A fake hub for the agent's in-process tests: the generated `Spoke` gRPC service on a
//! loopback port, with mutual TLS from a CA made for the test. It is not the hub: it
//! decides nothing, sends what a test tells it to, answers a `Renew` by signing the CSR,
//! and records every message a spoke sends, with the number of the stream it came on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_identity::{Ca, Identity};
use flotilla_model::ClusterName;
use flotilla_proto::v1::spoke_server::{Spoke, SpokeServer};
use flotilla_proto::v1::{Certificate, HubMsg, SpokeMsg, hub_msg, spoke_msg};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate as TlsCert, Identity as TlsIdentity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::state_dir::{IdentityFile, StateDir};

/// A message from a spoke, and which stream (1, 2, …) carried it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub stream: usize,
    pub msg: spoke_msg::Msg,
}

pub struct FakeHub {
    pub addr: String,
    ca: Arc<Ca>,
    shared: Arc<Shared>,
    seen: watch::Receiver<Vec<Seen>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The hub's half of one stream.
type ToSpoke = mpsc::Sender<Result<HubMsg, Status>>;

struct Shared {
    /// The open stream's number and sender.
    to_spoke: Mutex<Option<(usize, ToSpoke)>>,
    streams: Mutex<usize>,
    seen: watch::Sender<Vec<Seen>>,
}

struct Service {
    shared: Arc<Shared>,
    ca: Arc<Ca>,
}

impl FakeHub {
    /// Serves on a free loopback port with a CA of its own.
    pub async fn start() -> FakeHub {
        let (ca, _) = Ca::generate("fake hub CA").expect("a test CA");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address").to_string();
        let server = ca
            .issue_server(&["127.0.0.1".to_string()])
            .expect("a serving certificate");
        let tls = ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&server.cert_pem, &server.key_pem))
            .client_ca_root(TlsCert::from_pem(ca.cert_pem()));
        let ca = Arc::new(ca);
        let (seen_tx, seen) = watch::channel(Vec::new());
        let shared = Arc::new(Shared {
            to_spoke: Mutex::new(None),
            streams: Mutex::new(0),
            seen: seen_tx,
        });
        let service = Service {
            shared: shared.clone(),
            ca: ca.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Server::builder()
            .tls_config(tls)
            .expect("TLS config")
            .add_service(SpokeServer::new(service));
        tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeHub {
            addr,
            ca,
            shared,
            seen,
            stop: Some(stop),
        }
    }

    /// A state dir enrolled as `cluster` with this hub's CA, dialling `hubs` in order.
    pub fn enrolled_state(&self, dir: &std::path::Path, cluster: &str, hubs: &[&str]) -> StateDir {
        let (key_pem, csr_pem) =
            flotilla_identity::csr::generate_csr(cluster).expect("a key and CSR");
        let name = ClusterName::new(cluster).expect("a cluster name");
        let cert_pem = self
            .ca
            .sign_csr(
                &csr_pem,
                &Identity::Cluster(name),
                Duration::from_secs(3600),
            )
            .expect("a client certificate");
        let state = StateDir::new(dir);
        flotilla_identity::files::private_dir(dir).expect("the state dir");
        state
            .save_enrollment(
                &IdentityFile::new(
                    cluster.to_string(),
                    hubs.iter().map(ToString::to_string).collect(),
                    "a fake join string",
                ),
                &key_pem,
                &cert_pem,
                self.ca.cert_pem(),
            )
            .expect("saved");
        state
    }

    /// Sends `msg` on the open stream; false when no stream is open.
    pub async fn send(&self, msg: hub_msg::Msg) -> bool {
        let tx = self
            .shared
            .to_spoke
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|(_, tx)| tx.clone());
        match tx {
            Some(tx) => tx.send(Ok(HubMsg { msg: Some(msg) })).await.is_ok(),
            None => false,
        }
    }

    /// Ends the open stream, as a hub does when it stops.
    pub fn close_stream(&self) {
        self.shared.to_spoke.lock().expect("not poisoned").take();
    }

    /// Waits until what spokes sent satisfies `done`, and returns what it picked.
    pub async fn wait_for<T>(&self, what: &str, mut done: impl FnMut(&[Seen]) -> Option<T>) -> T {
        let mut seen = self.seen.clone();
        let wait = async {
            loop {
                if let Some(t) = done(&seen.borrow_and_update()) {
                    return t;
                }
                seen.changed().await.expect("the fake hub is running");
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("the fake hub never saw {what}: {:#?}", self.seen.borrow()))
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tonic::async_trait]
impl Spoke for Service {
    type SyncStream = ReceiverStream<Result<HubMsg, Status>>;

    async fn sync(
        &self,
        request: Request<Streaming<SpokeMsg>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let stream = {
            let mut n = self.shared.streams.lock().expect("not poisoned");
            *n += 1;
            *n
        };
        *self.shared.to_spoke.lock().expect("not poisoned") = Some((stream, tx));
        let (shared, ca) = (self.shared.clone(), self.ca.clone());
        tokio::spawn(async move {
            while let Ok(Some(SpokeMsg { msg: Some(msg) })) = inbound.message().await {
                if let spoke_msg::Msg::Renew(r) = &msg {
                    let answer = HubMsg {
                        msg: Some(hub_msg::Msg::Certificate(Certificate {
                            cert_chain_pem: renew_cert(&ca, &r.csr_pem),
                            ca_bundle_pem: ca.cert_pem().to_string(),
                        })),
                    };
                    // Only on the stream it came on, if that is still open: holding a
                    // sender here would keep a closed stream open.
                    let tx = shared.to_spoke.lock().expect("not poisoned").clone();
                    if let Some((open, tx)) = tx
                        && open == stream
                    {
                        let _ = tx.send(Ok(answer)).await;
                    }
                }
                shared.seen.send_modify(|s| s.push(Seen { stream, msg }));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The cluster every test enrolls: the fake renews certificates for it alone.
pub const CLUSTER: &str = "edge";

/// A certificate for [`CLUSTER`], for the CSR's key.
fn renew_cert(ca: &Ca, csr_pem: &str) -> String {
    let name = ClusterName::new(CLUSTER).expect("a cluster name");
    ca.sign_csr(csr_pem, &Identity::Cluster(name), Duration::from_secs(3600))
        .expect("signed")
}
