//! Remote Helm charts, fetched by the hub: a chart named in a Helm repository
//! (`index.yaml`), in an OCI registry (`oci://`) or by its archive's URL, resolved to one version, downloaded
//! within bounds, verified against its digest and cached by that digest on disk and in
//! memory, so that a chart is fetched once however many clusters render it.
//!
//! `repo.rs` reads Helm repositories, `oci.rs` speaks the OCI distribution API, `http.rs`
//! holds the one bounded HTTP client, `version.rs` the Masterminds version ranges and
//! `cache.rs` the digest-addressed store. The renderer stays pure: it is handed the
//! chart's bytes (`FetchedChart`) and never sees a URL.
//!
//! **Invariant:** credentials (`ChartAuth`) are used for requests and nothing else: they
//! are never in an error, a log line, a status or an Admin API reply. Errors name URLs
//! through `flotilla_model::redact_url`.

pub mod auth;
mod cache;
mod http;
mod oci;
mod repo;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flotilla_render::{ChartArchive, RemoteChart};

pub use cache::ChartCache;

/// The Helm chart archive media type in an OCI manifest's layers.
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// Where a bundle's chart comes from, as fleet.yaml's `helm.chart`, `helm.repo` and
/// `helm.version` name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChartRef {
    /// `chart: NAME`, `repo: https://…`: a chart in a Helm repository's `index.yaml`.
    Repo {
        repo: String,
        chart: String,
        version: String,
    },
    /// `chart: oci://HOST/PATH/NAME`: a chart in an OCI registry, its tag the version.
    Oci { reference: String, version: String },
    /// `chart: https://HOST/PATH/NAME-1.2.3.tgz` without `repo`: one archive, fetched as
    /// is (Fleet and `helm install URL` accept it); `version` does not apply to it.
    Url { url: String },
}

impl ChartRef {
    /// Reads what fleet.yaml names; `None` for a chart in the bundle's own files (a
    /// path, without `repo`).
    pub fn from_remote(r: &RemoteChart) -> Option<ChartRef> {
        Self::from_fleet(
            &r.chart,
            r.repo.as_deref().unwrap_or(""),
            r.version.as_deref().unwrap_or(""),
        )
    }

    fn from_fleet(chart: &str, repo: &str, version: &str) -> Option<ChartRef> {
        let version = version.trim().to_string();
        if let Some(reference) = chart.strip_prefix("oci://") {
            return Some(ChartRef::Oci {
                reference: reference.trim_end_matches('/').to_string(),
                version,
            });
        }
        if repo.trim().is_empty() {
            let url = chart.trim();
            let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            return matches!(scheme.as_deref(), Some("http" | "https")).then(|| ChartRef::Url {
                url: url.to_string(),
            });
        }
        Some(ChartRef::Repo {
            repo: repo.trim().to_string(),
            chart: chart.trim().to_string(),
            version,
        })
    }

    /// The URL the credentials are matched against (`--helm-repo-url-regex`).
    pub fn url(&self) -> String {
        match self {
            ChartRef::Repo { repo, .. } => repo.clone(),
            ChartRef::Oci { reference, .. } => format!("oci://{reference}"),
            ChartRef::Url { url } => url.clone(),
        }
    }
}

impl fmt::Display for ChartRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = |v: &str| {
            if v.is_empty() {
                "latest".to_string()
            } else {
                v.to_string()
            }
        };
        match self {
            ChartRef::Repo {
                repo,
                chart,
                version: v,
            } => write!(
                f,
                "chart {chart} {} from {}",
                version(v),
                flotilla_model::redact_url(repo)
            ),
            ChartRef::Oci {
                reference,
                version: v,
            } => write!(
                f,
                "chart {} {}",
                flotilla_model::redact_url(&format!("oci://{reference}")),
                version(v)
            ),
            ChartRef::Url { url } => write!(f, "chart {}", flotilla_model::redact_url(url)),
        }
    }
}

/// A source's credentials for its chart repositories. Kept on the hub only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChartAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// A bearer token for an OCI registry, sent as is.
    pub token: Option<String>,
    /// PEM CA bundle: the only roots trusted for the repository's TLS.
    pub ca_pem: Option<String>,
    /// Speak plain HTTP to an OCI registry (Helm's `--plain-http`); Helm repositories
    /// follow their URL's scheme.
    pub plain_http: bool,
}

impl fmt::Debug for ChartAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |s: &Option<String>| s.as_ref().map(|_| flotilla_model::redact::REDACTED);
        f.debug_struct("ChartAuth")
            .field("username", &self.username)
            .field("password", &shown(&self.password))
            .field("token", &shown(&self.token))
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "…"))
            .field("plain_http", &self.plain_http)
            .finish()
    }
}

/// A chart archive as fetched and verified, before it becomes the renderer's
/// `ChartArchive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedChart {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    pub bytes: Bytes,
}

/// What one fetch may cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartLimits {
    /// Largest `index.yaml` (or OCI tag list) read.
    pub max_index_bytes: u64,
    /// Largest chart archive.
    pub max_chart_bytes: u64,
    /// Largest OCI manifest or token response.
    pub max_manifest_bytes: u64,
}

impl Default for ChartLimits {
    fn default() -> Self {
        ChartLimits {
            // Large public repositories publish indexes of tens of MiB.
            max_index_bytes: 64 << 20,
            max_chart_bytes: 16 << 20,
            max_manifest_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChartError {
    #[error("fetching {what}: {why}")]
    Fetch { what: String, why: String },
    #[error("{what} is larger than {max} bytes")]
    TooLarge { what: String, max: u64 },
    #[error("{what}: HTTP {status}{hint}")]
    Status {
        what: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },
    #[error("{what}: no version matches {range:?} (available: {available})")]
    NoVersion {
        what: String,
        range: String,
        available: String,
    },
    #[error("{what}: digest mismatch: the index says {expected}, the download is {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Config(String),
}

impl ChartError {
    fn status(what: &str, status: reqwest::StatusCode) -> ChartError {
        let hint = match status.as_u16() {
            401 => " (the credentials were refused or are missing)",
            403 => " (the credentials may not read this)",
            404 => " (not found)",
            _ => "",
        };
        ChartError::Status {
            what: what.to_string(),
            status: status.as_u16(),
            hint,
        }
    }
}

/// Fetches charts through one digest cache. Shared by every source poller.
pub struct Charts {
    cache: ChartCache,
    limits: ChartLimits,
}

impl Charts {
    /// A fetcher caching under `dir` (created 0700).
    pub fn open(dir: &Path, limits: ChartLimits) -> std::io::Result<Charts> {
        Ok(Charts {
            cache: ChartCache::open(dir)?,
            limits,
        })
    }

    pub fn cache(&self) -> &ChartCache {
        &self.cache
    }

    /// One poll's view of the remote charts: indexes are read once per repository per
    /// poll, however many bundles name charts in them.
    pub fn session(self: &Arc<Self>) -> FetchSession {
        FetchSession {
            charts: self.clone(),
            indexes: HashMap::new(),
        }
    }
}

/// The repositories read so far in one poll.
pub struct FetchSession {
    charts: Arc<Charts>,
    indexes: HashMap<String, Arc<repo::Index>>,
}

impl FetchSession {
    /// Resolves `request` to one version and returns its verified archive, from the
    /// cache when its digest is known there.
    pub async fn fetch(
        &mut self,
        request: &RemoteChart,
        auth: &ChartAuth,
    ) -> Result<ChartArchive, ChartError> {
        let chart = ChartRef::from_remote(request).ok_or_else(|| {
            ChartError::Config(format!(
                "chart {:?} is neither oci://, an http(s) URL, nor named with a repo",
                request.chart
            ))
        })?;
        let f = self.fetch_ref(&chart, auth).await?;
        Ok(ChartArchive {
            request: request.clone(),
            name: f.name,
            version: f.version,
            digest: f.digest,
            bytes: Arc::from(&f.bytes[..]),
        })
    }

    async fn fetch_ref(
        &mut self,
        chart: &ChartRef,
        auth: &ChartAuth,
    ) -> Result<FetchedChart, ChartError> {
        let client = http::client(auth)?;
        let limits = self.charts.limits.clone();
        match chart {
            ChartRef::Repo {
                repo,
                chart,
                version,
            } => {
                let index = match self.indexes.get(repo) {
                    Some(i) => i.clone(),
                    None => {
                        let i = Arc::new(repo::fetch_index(&client, repo, auth, &limits).await?);
                        self.indexes.insert(repo.clone(), i.clone());
                        i
                    }
                };
                let entry = index.resolve(chart, version)?;
                repo::fetch_chart(&client, repo, &entry, auth, &limits, &self.charts.cache).await
            }
            ChartRef::Url { url } => {
                repo::fetch_url(&client, url, auth, &limits, &self.charts.cache).await
            }
            ChartRef::Oci { reference, version } => {
                oci::fetch(
                    &client,
                    reference,
                    version,
                    auth,
                    &limits,
                    &self.charts.cache,
                )
                .await
            }
        }
    }
}

/// `sha256:<hex>` of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
