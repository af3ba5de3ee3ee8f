//! mTLS (or server-authenticated) gRPC channels to the hub.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

use crate::{Error, HUB_SERVER_NAME};

/// What a client presents and trusts. Without `cert_pem`/`key_pem` the channel is
/// server-authenticated only, which is enough for registration and nothing else.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // Never print key material, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_cert", &self.cert_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Connects to the hub at `addr` (host:port), verifying it against `creds.ca_pem`.
pub async fn connect(addr: &str, creds: &Credentials) -> Result<Channel, Error> {
    let connect_err = |message: String| Error::Connect {
        addr: addr.to_string(),
        message,
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&creds.ca_pem))
        .domain_name(HUB_SERVER_NAME);
    if let (Some(cert), Some(key)) = (&creds.cert_pem, &creds.key_pem) {
        tls = tls.identity(TlsIdentity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| connect_err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| connect_err(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|e| connect_err(error_chain(&e)))
}

/// Connects to the first of `addrs` that answers, trying them in order (the addresses of
/// one hub, from `admin.conf`); returns the channel and the address it reached. The error
/// names every address and why it failed.
pub async fn connect_first(
    addrs: &[String],
    creds: &Credentials,
) -> Result<(Channel, String), Error> {
    let mut failures = Vec::new();
    for addr in addrs {
        match connect(addr, creds).await {
            Ok(channel) => return Ok((channel, addr.clone())),
            Err(Error::Connect { message, .. }) => failures.push(format!("{addr}: {message}")),
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    Err(Error::Connect {
        addr: addrs.join(","),
        message: if failures.is_empty() {
            "no address to try".to_string()
        } else {
            failures.join("; ")
        },
    })
}

/// Flattens an error and its sources, so "transport error" shows the TLS reason too.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}
