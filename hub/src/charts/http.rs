//! The one HTTP client chart fetches go through, with its bounds: a whole-request
//! deadline, a connect deadline, at most a few redirects, and a byte cap on every body,
//! counted as it streams so a hostile server cannot make the hub buffer more.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Client, RequestBuilder, StatusCode};

use super::{ChartAuth, ChartError};

/// How long one request (headers and body) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Registries redirect blob downloads to storage; more than this is a loop or abuse.
pub const MAX_REDIRECTS: usize = 5;

/// A client for one source's chart repository: its CA bundle, if any, is the only trust
/// anchor (as Helm's `--ca-file`); otherwise the platform's roots.
pub fn client(auth: &ChartAuth) -> Result<Client, ChartError> {
    let mut b = Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .user_agent(concat!("flotilla-hub/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &auth.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
            .map_err(|e| ChartError::Config(format!("the chart repository CA bundle: {e}")))?;
        if certs.is_empty() {
            return Err(ChartError::Config(
                "the chart repository CA bundle holds no certificate".into(),
            ));
        }
        b = b.tls_certs_only(certs);
    }
    b.build()
        .map_err(|e| ChartError::Config(format!("building the HTTP client: {e}")))
}

/// A response whose body was read whole, within its cap.
pub struct Body {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

/// Sends `req` and reads at most `max` bytes of body; more is an error, not a cut.
/// `what` names the request in errors (a URL without credentials).
pub async fn read(req: RequestBuilder, what: &str, max: u64) -> Result<Body, ChartError> {
    let mut resp = req.send().await.map_err(|e| ChartError::Fetch {
        what: what.to_string(),
        why: error_chain(&e),
    })?;
    let too_large = || ChartError::TooLarge {
        what: what.to_string(),
        max,
    };
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ChartError::Fetch {
        what: what.to_string(),
        why: error_chain(&e),
    })? {
        if bytes.len() as u64 + chunk.len() as u64 > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        status,
        headers,
        bytes,
    })
}

/// reqwest's error with its causes ("error sending request: ... : invalid peer
/// certificate: UnknownIssuer"), so a TLS or connect failure says why.
fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}
