//! # flotilla-kube-test-server: a Kubernetes API **test server**
//!
//! An in-memory stand-in for the Kubernetes API server, for flotilla's own tests
//! on machines where no real cluster can run. It is **not** a Kubernetes API
//! server for production: no persistence, no admission, no controllers, one
//! bearer token, loopback only. Its README lists every known difference from a
//! real API server.
//!
//! It serves discovery, CRUD with selectors, watch with resourceVersion
//! semantics, server-side apply with managedFields, the status subresource and
//! CRDs, over HTTPS (self-signed CA, bearer token) and plain HTTP, so kubectl and
//! kube-rs can both talk to it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flotilla_kube_test_server::Error> {
//! use flotilla_kube_test_server::{Options, TestServer};
//! let server = TestServer::start(Options::default()).await?;
//! server.write_kubeconfig("/tmp/kubeconfig")?;
//! println!("{}", server.https_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Code map: `store` (objects, resourceVersion, event history), `api` (request
//! semantics), `managed_fields` + `fieldpath` + `schema` (server-side apply),
//! `patch` (merge/JSON/strategic patches), `selectors`, `events` (the
//! `events.k8s.io/v1` view of Events), `watch`, `discovery`, `table`, `http`
//! (routing, authentication, the `forbid_writes` stand-in for RBAC), `tls`
//! (certificates and kubeconfig).

#![forbid(unsafe_code)]

mod api;
mod discovery;
mod events;
mod fieldpath;
mod http;
mod managed_fields;
mod meta;
mod patch;
mod resources;
mod schema;
mod selectors;
mod status;
mod store;
mod table;
mod tls;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub use status::ApiError;

/// Everything that can go wrong starting or stopping the test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube test server: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("kube test server: TLS setup failed: {0}")]
    Tls(String),
    #[error("kube test server: writing kubeconfig {path}: {source}")]
    WriteKubeconfig {
        path: String,
        source: std::io::Error,
    },
    #[error("kube test server: starting a runtime: {0}")]
    Runtime(std::io::Error),
}

/// How to start the test server.
#[derive(Debug, Clone)]
pub struct Options {
    /// HTTPS listen address (loopback; port 0 picks a free one).
    pub https_addr: SocketAddr,
    /// Plain HTTP listen address, unauthenticated; None disables it.
    pub http_addr: Option<SocketAddr>,
    /// The bearer token HTTPS clients must send; random when None.
    pub token: Option<String>,
    /// How many watch events are kept; a watch from an older resourceVersion gets 410 Gone.
    pub watch_history: usize,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Create `default`, `kube-system`, `kube-public` and `kube-node-lease` at start.
    pub seed_namespaces: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            https_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            token: None,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(10),
            seed_namespaces: true,
        }
    }
}

/// Entry point: `TestServer::start(options)`.
pub struct TestServer;

impl TestServer {
    /// Binds the listeners and serves on the current tokio runtime until
    /// [`RunningServer::shutdown`] or drop.
    pub async fn start(opts: Options) -> Result<RunningServer, Error> {
        let certs = tls::generate()?;
        let tls_config = tls::server_config(&certs)?;
        let token = opts.token.clone().unwrap_or_else(|| {
            let bytes: [u8; 24] = rand::random();
            hex::encode(bytes)
        });
        let cluster = api::Cluster::new(opts.watch_history);
        if opts.seed_namespaces {
            cluster.seed_namespaces();
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        let https = bind(opts.https_addr).await?;
        let https_addr = https.local_addr().map_err(|source| Error::Bind {
            addr: opts.https_addr,
            source,
        })?;
        let http = match opts.http_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let http_addr = match &http {
            Some(l) => Some(l.local_addr().map_err(|source| Error::Bind {
                addr: opts.https_addr,
                source,
            })?),
            None => None,
        };
        let (shutdown_tx, shutdown_rx) = signal::channel(false);
        let state = Arc::new(http::ServerState {
            cluster,
            token: token.clone(),
            bookmark_interval: opts.bookmark_interval,
            shutdown: shutdown_rx.clone(),
            address: https_addr.to_string(),
            forbidden: http::Forbidden::default(),
        });
        let mut tasks = vec![tokio::spawn(serve(
            https,
            Some(TlsAcceptor::from(tls_config)),
            state.clone(),
            shutdown_rx.clone(),
        ))];
        if let Some(l) = http {
            tasks.push(tokio::spawn(serve(l, None, state.clone(), shutdown_rx)));
        }
        tracing::info!(
            "kube test server (a TEST SERVER, not a Kubernetes API server for production) listening on https://{https_addr}{}",
            http_addr
                .map(|a| format!(" and http://{a}"))
                .unwrap_or_default()
        );
        Ok(RunningServer {
            https_addr,
            http_addr,
            token,
            ca_pem: certs.ca_pem,
            shutdown: shutdown_tx,
            tasks,
            state,
        })
    }

    /// Starts the server on a runtime of its own, for synchronous tests. Must not
    /// be called from inside an async context.
    pub fn start_blocking(opts: Options) -> Result<BlockingServer, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kube-test-server")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let server = runtime.block_on(TestServer::start(opts))?;
        Ok(BlockingServer {
            server: Some(server),
            runtime: Some(runtime),
        })
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<http::ServerState>,
    mut shutdown: signal::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let state = state.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let secure = tls.is_some();
                    let svc = service_fn(move |req| http::handle(state.clone(), req, secure));
                    let builder = hyper::server::conn::http1::Builder::new();
                    let result = match tls {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => builder.serve_connection(TokioIo::new(stream), svc).await,
                            Err(e) => {
                                tracing::debug!("kube test server: TLS handshake failed: {e}");
                                return;
                            }
                        },
                        None => builder.serve_connection(TokioIo::new(tcp), svc).await,
                    };
                    if let Err(e) = result {
                        tracing::debug!("kube test server: connection ended: {e}");
                    }
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// A started test server. Dropping it stops it too.
pub struct RunningServer {
    https_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    token: String,
    ca_pem: String,
    shutdown: signal::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    state: Arc<http::ServerState>,
}

impl RunningServer {
    /// Refuses writes (create, update, patch, delete) to `group`'s `plural` over HTTPS
    /// with 403 Forbidden, in the words of the RBAC authorizer, until
    /// [`Self::allow_writes`]. The server has no RBAC; this stands in for a role that
    /// lacks those verbs, so tests can see how a client copes (the core group is `""`).
    pub fn forbid_writes(&self, group: &str, plural: &str) {
        self.state.forbidden.forbid(group, plural);
    }

    /// Lifts [`Self::forbid_writes`].
    pub fn allow_writes(&self, group: &str, plural: &str) {
        self.state.forbidden.allow(group, plural);
    }

    /// How many writes [`Self::forbid_writes`] refused so far.
    pub fn refused_writes(&self) -> u64 {
        self.state.forbidden.refused()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.https_addr)
    }

    /// `http://127.0.0.1:PORT` (unauthenticated), if the HTTP listener is on.
    pub fn http_url(&self) -> Option<String> {
        self.http_addr.map(|a| format!("http://{a}"))
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The bearer token HTTPS requests must carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CA that signed the serving certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig for the HTTPS endpoint with the CA and token embedded.
    pub fn kubeconfig_yaml(&self) -> String {
        tls::kubeconfig(&self.https_url(), &self.ca_pem, &self.token)
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path` with mode 0600.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let err = |source| Error::WriteKubeconfig {
            path: path.display().to_string(),
            source,
        };
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(path).map_err(err)?;
        std::io::Write::write_all(&mut f, self.kubeconfig_yaml().as_bytes()).map_err(err)
    }

    /// Stops accepting, ends every watch and connection, and waits for the listeners.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A test server running on its own runtime ([`TestServer::start_blocking`]).
pub struct BlockingServer {
    server: Option<RunningServer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::ops::Deref for BlockingServer {
    type Target = RunningServer;
    fn deref(&self) -> &RunningServer {
        match &self.server {
            Some(s) => s,
            None => unreachable!("the server is only taken in drop"),
        }
    }
}

impl Drop for BlockingServer {
    fn drop(&mut self) {
        if let (Some(server), Some(rt)) = (self.server.take(), self.runtime.take()) {
            rt.block_on(server.shutdown());
            rt.shutdown_background();
        }
    }
}
