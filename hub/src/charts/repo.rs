//! Helm chart repositories: `REPO/index.yaml`, version resolution as `helm pull
//! --version` does it (an exact version string first, else the highest version in the
//! range, stable versions only unless the range names a prerelease), and the download of
//! the chosen archive, verified against the index's `digest` when it gives one. A chart
//! named by its archive's URL (no repository) takes the same download path.

use std::collections::BTreeMap;

use bytes::Bytes;
use reqwest::{Client, RequestBuilder};
use serde::Deserialize;

use super::{ChartAuth, ChartCache, ChartError, ChartLimits, FetchedChart, http, sha256};
use flotilla_gotmpl::semver::{Constraint, Version};

/// The parts of `index.yaml` that resolution reads; other fields are ignored.
#[derive(Debug, Deserialize)]
pub struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Vec<Entry>>,
    /// The URL it was read from (without credentials), for errors.
    #[serde(skip)]
    shown: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub urls: Vec<String>,
    /// Hex SHA-256 of the archive (Helm writes it without a `sha256:` prefix).
    #[serde(default)]
    pub digest: Option<String>,
}

fn index_url(repo: &str) -> String {
    format!("{}/index.yaml", repo.trim_end_matches('/'))
}

/// Basic auth goes only to the repository's own scheme, host and port, as Helm does
/// without `--pass-credentials`: a chart URL elsewhere gets none.
fn with_auth(req: RequestBuilder, url: &str, repo: &str, auth: &ChartAuth) -> RequestBuilder {
    let same_origin = match (reqwest::Url::parse(url), reqwest::Url::parse(repo)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    };
    match (&auth.username, same_origin) {
        (Some(user), true) => req.basic_auth(user, auth.password.as_deref()),
        _ => req,
    }
}

pub async fn fetch_index(
    client: &Client,
    repo: &str,
    auth: &ChartAuth,
    limits: &ChartLimits,
) -> Result<Index, ChartError> {
    let url = index_url(repo);
    let shown = flotilla_model::redact_url(&url);
    let req = with_auth(client.get(&url), &url, repo, auth);
    let body = http::read(req, &shown, limits.max_index_bytes).await?;
    if !body.status.is_success() {
        return Err(ChartError::status(&shown, body.status));
    }
    let text = std::str::from_utf8(&body.bytes).map_err(|e| ChartError::Invalid {
        what: shown.clone(),
        why: format!("not UTF-8: {e}"),
    })?;
    let mut index: Index = serde_saphyr::from_str(text).map_err(|e| ChartError::Invalid {
        what: shown.clone(),
        why: format!("not a Helm repository index: {e}"),
    })?;
    index.shown = shown;
    Ok(index)
}

impl Index {
    /// The entry `helm pull CHART --version RANGE` would take.
    pub fn resolve(&self, chart: &str, range: &str) -> Result<Entry, ChartError> {
        let what = format!("chart {chart} in {}", self.shown);
        let entries = self
            .entries
            .get(chart)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| ChartError::Invalid {
                what: self.shown.clone(),
                why: format!("no chart named {chart:?}"),
            })?;
        if !range.is_empty()
            && let Some(exact) = entries.iter().find(|e| e.version == range)
        {
            return Ok(exact.clone());
        }
        let constraint =
            Constraint::parse(any_if_empty(range)).map_err(|why| ChartError::Invalid {
                what: what.clone(),
                why: format!("version {range:?}: {why}"),
            })?;
        let best = entries
            .iter()
            .filter_map(|e| Version::parse(&e.version).map(|v| (v, e)))
            .filter(|(v, _)| constraint.matches(v))
            .max_by(|a, b| a.0.cmp(&b.0));
        match best {
            Some((_, e)) => Ok(e.clone()),
            None => Err(ChartError::NoVersion {
                what,
                range: constraint.to_string(),
                available: available(entries.iter().map(|e| e.version.as_str())),
            }),
        }
    }
}

/// A few of the versions on offer, for an error message.
/// An empty chart version means any stable version, as Helm reads it (`IndexFile.Get`
/// uses `*` for ""; Masterminds itself refuses an empty range).
pub(super) fn any_if_empty(range: &str) -> &str {
    if range.trim().is_empty() { "*" } else { range }
}

pub fn available<'a>(versions: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = versions.collect();
    let n = v.len();
    v.truncate(10);
    let mut s = v.join(", ");
    if n > 10 {
        s.push_str(&format!(" and {} more", n - 10));
    }
    s
}

/// The archive URL of an entry: absolute, or relative to the repository.
fn chart_url(repo: &str, url: &str) -> Result<String, String> {
    if url.contains("://") {
        return Ok(url.to_string());
    }
    let base = reqwest::Url::parse(&format!("{}/", repo.trim_end_matches('/')))
        .map_err(|e| format!("repository URL: {e}"))?;
    base.join(url)
        .map(|u| u.to_string())
        .map_err(|e| format!("chart URL {url:?}: {e}"))
}

pub async fn fetch_chart(
    client: &Client,
    repo: &str,
    entry: &Entry,
    auth: &ChartAuth,
    limits: &ChartLimits,
    cache: &ChartCache,
) -> Result<FetchedChart, ChartError> {
    let what = format!(
        "chart {} {} from {}",
        entry.name,
        entry.version,
        flotilla_model::redact_url(repo)
    );
    let expected = match entry.digest.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => {
            let hex = d.strip_prefix("sha256:").unwrap_or(d).to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ChartError::Invalid {
                    what,
                    why: format!("the index's digest {d:?} is not a SHA-256"),
                });
            }
            Some(format!("sha256:{hex}"))
        }
    };
    let done = |digest: String, bytes: Bytes| FetchedChart {
        name: entry.name.clone(),
        version: entry.version.clone(),
        digest,
        bytes,
    };
    if let Some(d) = &expected
        && let Some(bytes) = cache.get(d).await
    {
        return Ok(done(d.clone(), bytes));
    }
    let first = entry.urls.first().ok_or_else(|| ChartError::Invalid {
        what: what.clone(),
        why: "the index lists no URL for it".into(),
    })?;
    let url = chart_url(repo, first).map_err(|why| ChartError::Invalid {
        what: what.clone(),
        why,
    })?;
    let req = with_auth(client.get(&url), &url, repo, auth);
    let body = http::read(req, &what, limits.max_chart_bytes).await?;
    if !body.status.is_success() {
        return Err(ChartError::status(&what, body.status));
    }
    let actual = sha256(&body.bytes);
    if let Some(expected) = expected
        && expected != actual
    {
        return Err(ChartError::Digest {
            what,
            expected,
            actual,
        });
    }
    let bytes = Bytes::from(body.bytes);
    cache.put(&actual, bytes.clone()).await;
    Ok(done(actual, bytes))
}

/// A chart named by its archive's URL (`helm.chart: https://host/path/web-1.2.3.tgz`):
/// fetched like a repository's archive, with the URL as its own origin for basic auth and
/// no index digest to check against; the download is cached under its own digest. Name
/// and version come from the file name, as Helm names the archives it packages.
pub async fn fetch_url(
    client: &Client,
    url: &str,
    auth: &ChartAuth,
    limits: &ChartLimits,
    cache: &ChartCache,
) -> Result<FetchedChart, ChartError> {
    let (name, version) = archive_name(url);
    let entry = Entry {
        name,
        version,
        urls: vec![url.to_string()],
        digest: None,
    };
    fetch_chart(client, url, &entry, auth, limits, cache).await
}

/// `NAME-VERSION.tgz` at the end of a URL's path (VERSION starts `N.N.N`), else the file
/// name without its extension and no version.
fn archive_name(url: &str) -> (String, String) {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file
        .strip_suffix(".tgz")
        .or_else(|| file.strip_suffix(".tar.gz"))
        .unwrap_or(file);
    let semver_start = |rest: &str| {
        let mut parts = rest.splitn(3, '.');
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        let patch = |p: &str| digits(p.split(['-', '+']).next().unwrap_or(""));
        parts.next().is_some_and(digits)
            && parts.next().is_some_and(digits)
            && parts.next().is_some_and(patch)
    };
    for (i, _) in stem.match_indices('-') {
        let rest = &stem[i + 1..];
        if semver_start(rest) {
            return (stem[..i].to_string(), rest.to_string());
        }
    }
    (stem.to_string(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(versions: &[&str]) -> Index {
        let entries = versions
            .iter()
            .map(|v| Entry {
                name: "web".into(),
                version: v.to_string(),
                urls: vec![format!("web-{v}.tgz")],
                digest: None,
            })
            .collect();
        Index {
            entries: BTreeMap::from([("web".to_string(), entries)]),
            shown: "https://charts.example/index.yaml".into(),
        }
    }

    #[test]
    fn resolution_takes_an_exact_version_else_the_highest_stable_match() {
        let i = index(&["1.0.0", "1.2.0", "1.10.0", "2.0.0-rc.1", "v1.3"]);
        let got = |range: &str| i.resolve("web", range).map(|e| e.version);
        assert_eq!(got(""), Ok("1.10.0".into()));
        assert_eq!(got("~1.2"), Ok("1.2.0".into()));
        assert_eq!(got("v1.3"), Ok("v1.3".into()));
        assert_eq!(got(">=2.0.0-0"), Ok("2.0.0-rc.1".into()));
        let err = got("^3").expect_err("none");
        assert!(err.to_string().contains("no version matches"), "{err}");
        assert!(i.resolve("db", "").is_err());
    }

    #[test]
    fn archive_urls_name_their_chart_and_version() {
        let name = |u: &str| archive_name(u);
        assert_eq!(
            name("https://h/charts/web-1.2.3.tgz"),
            ("web".into(), "1.2.3".into())
        );
        assert_eq!(
            name("https://h/k8s-2-app-1.0.0-rc.1.tgz?sig=x"),
            ("k8s-2-app".into(), "1.0.0-rc.1".into())
        );
        assert_eq!(
            name("https://h/download"),
            ("download".into(), String::new())
        );
    }

    #[test]
    fn chart_urls_resolve_against_the_repository() {
        assert_eq!(
            chart_url("https://h/charts", "web-1.0.0.tgz").as_deref(),
            Ok("https://h/charts/web-1.0.0.tgz")
        );
        assert_eq!(
            chart_url("https://h/charts/", "https://cdn/x.tgz").as_deref(),
            Ok("https://cdn/x.tgz")
        );
    }
}
