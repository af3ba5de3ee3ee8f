//! Helm charts in OCI registries (`oci://HOST/PATH/NAME`), over the distribution API
//! v2: the tag is the chart version (`+` written `_`, as Helm pushes it); a range is
//! resolved against the tag list. The manifest's layer of media type
//! `application/vnd.cncf.helm.chart.content.v1.tar+gzip` is the archive, checked against
//! its digest. Authentication as registries ask for it in `WWW-Authenticate`: `Basic`,
//! or `Bearer` with a token from the realm (sent the source's basic credentials), or a
//! bearer token the source supplies.

use bytes::Bytes;
use reqwest::header::{ACCEPT, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Client, StatusCode};
use serde::Deserialize;

use super::{
    ChartAuth, ChartCache, ChartError, ChartLimits, FetchedChart, HELM_CHART_LAYER, http, sha256,
};
use flotilla_gotmpl::semver::{Constraint, Version};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// `HOST[:PORT]/PATH/NAME` split into the registry and the repository.
struct Reference<'a> {
    host: &'a str,
    repository: &'a str,
    name: &'a str,
}

fn split(reference: &str) -> Result<Reference<'_>, String> {
    let (host, repository) = reference
        .split_once('/')
        .ok_or_else(|| "expected oci://HOST/PATH/CHART".to_string())?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b))
            && !s
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    };
    if !valid(host) || host.contains('/') || !valid(repository) || repository.contains(':') {
        return Err("not a valid registry reference".into());
    }
    let name = repository.rsplit('/').next().unwrap_or(repository);
    Ok(Reference {
        host,
        repository,
        name,
    })
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
struct Tags {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Talks to one registry, keeping the authorization it earned.
struct Registry<'a> {
    client: &'a Client,
    base: String,
    auth: &'a ChartAuth,
    limits: &'a ChartLimits,
    /// The authorization that worked (or was given).
    authorization: Option<Authorization>,
}

#[derive(Clone)]
enum Authorization {
    Basic(String, Option<String>),
    Bearer(String),
}

impl Registry<'_> {
    /// GET `path` below `/v2/`, answering one authentication challenge if asked.
    async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
        what: &str,
        max: u64,
    ) -> Result<http::Body, ChartError> {
        let url = format!("{}/v2/{path}", self.base);
        let send = |authorization: Option<&Authorization>| {
            let mut req = self.client.get(&url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            match authorization {
                Some(Authorization::Basic(u, p)) => req.basic_auth(u, p.as_deref()),
                Some(Authorization::Bearer(t)) => req.bearer_auth(t),
                None => req,
            }
        };
        let body = http::read(send(self.authorization.as_ref()), what, max).await?;
        if body.status != StatusCode::UNAUTHORIZED || self.authorization.is_some() {
            return Ok(body);
        }
        let Some(authorization) = self.answer(&body.headers, what).await? else {
            return Ok(body);
        };
        self.authorization = Some(authorization);
        http::read(send(self.authorization.as_ref()), what, max).await
    }

    /// The authorization a 401's challenge asks for, or None when there is nothing to
    /// answer with.
    async fn answer(
        &self,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<Option<Authorization>, ChartError> {
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = || {
            self.auth
                .username
                .as_ref()
                .map(|u| Authorization::Basic(u.clone(), self.auth.password.clone()))
        };
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(basic());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(None);
        }
        let params = challenge_params(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ChartError::Invalid {
                what: what.to_string(),
                why: "the registry's bearer challenge names no realm".into(),
            })?;
        let mut url = reqwest::Url::parse(&realm).map_err(|e| ChartError::Invalid {
            what: what.to_string(),
            why: format!("the registry's token realm: {e}"),
        })?;
        for (k, v) in params
            .iter()
            .filter(|(k, _)| k == "service" || k == "scope")
        {
            url.query_pairs_mut().append_pair(k, v);
        }
        let mut req = self.client.get(url);
        if let Some(Authorization::Basic(u, p)) = basic() {
            req = req.basic_auth(u, p);
        }
        let token_what = format!("a token for {what}");
        let body = http::read(req, &token_what, self.limits.max_manifest_bytes).await?;
        if !body.status.is_success() {
            return Err(ChartError::status(&token_what, body.status));
        }
        let token: Token =
            serde_json::from_slice(&body.bytes).map_err(|e| ChartError::Invalid {
                what: token_what.clone(),
                why: format!("not a token response: {e}"),
            })?;
        let token = token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ChartError::Invalid {
                what: token_what,
                why: "the token response holds no token".into(),
            })?;
        Ok(Some(Authorization::Bearer(token)))
    }
}

/// `realm="https://auth",service="reg",scope="repository:a/b:pull"` as pairs. Values
/// may hold commas (scopes do), so quotes are honoured.
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_string()));
        rest = next.trim_start().trim_start_matches(',');
    }
    out
}

pub async fn fetch(
    client: &Client,
    reference: &str,
    range: &str,
    auth: &ChartAuth,
    limits: &ChartLimits,
    cache: &ChartCache,
) -> Result<FetchedChart, ChartError> {
    let shown = flotilla_model::redact_url(&format!("oci://{reference}"));
    let r = split(reference).map_err(|why| ChartError::Invalid {
        what: shown.clone(),
        why,
    })?;
    let mut reg = Registry {
        client,
        base: format!(
            "{}://{}",
            if auth.plain_http { "http" } else { "https" },
            r.host
        ),
        auth,
        limits,
        authorization: auth.token.clone().map(Authorization::Bearer),
    };
    let version = resolve_tag(&mut reg, &r, range, &shown).await?;
    let tag = version.replace('+', "_");
    let what = format!("{shown}:{tag}");
    let body = reg
        .get(
            &format!("{}/manifests/{tag}", r.repository),
            Some(MANIFEST_TYPES),
            &what,
            limits.max_manifest_bytes,
        )
        .await?;
    if !body.status.is_success() {
        return Err(ChartError::status(&what, body.status));
    }
    let manifest: Manifest =
        serde_json::from_slice(&body.bytes).map_err(|e| ChartError::Invalid {
            what: what.clone(),
            why: format!("not an OCI manifest: {e}"),
        })?;
    let layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type == HELM_CHART_LAYER)
        .ok_or_else(|| ChartError::Invalid {
            what: what.clone(),
            why: format!("the manifest has no {HELM_CHART_LAYER} layer: not a Helm chart"),
        })?;
    let digest = layer.digest.to_ascii_lowercase();
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChartError::Invalid {
            what,
            why: format!(
                "the chart layer's digest {:?} is not a SHA-256",
                layer.digest
            ),
        });
    }
    if layer.size > limits.max_chart_bytes {
        return Err(ChartError::TooLarge {
            what,
            max: limits.max_chart_bytes,
        });
    }
    let done = |bytes: Bytes| FetchedChart {
        name: r.name.to_string(),
        version: version.clone(),
        digest: digest.clone(),
        bytes,
    };
    if let Some(bytes) = cache.get(&digest).await {
        return Ok(done(bytes));
    }
    let body = reg
        .get(
            &format!("{}/blobs/{digest}", r.repository),
            None,
            &what,
            limits.max_chart_bytes,
        )
        .await?;
    if !body.status.is_success() {
        return Err(ChartError::status(&what, body.status));
    }
    let actual = sha256(&body.bytes);
    if actual != digest {
        return Err(ChartError::Digest {
            what,
            expected: digest,
            actual,
        });
    }
    let bytes = Bytes::from(body.bytes);
    cache.put(&digest, bytes.clone()).await;
    Ok(done(bytes))
}

/// The version to pull: the range itself when it is one exact version, else the
/// highest tag in it.
async fn resolve_tag(
    reg: &mut Registry<'_>,
    r: &Reference<'_>,
    range: &str,
    shown: &str,
) -> Result<String, ChartError> {
    if !range.is_empty() && Version::parse(range).is_some() {
        return Ok(range.to_string());
    }
    let constraint =
        Constraint::parse(super::repo::any_if_empty(range)).map_err(|why| ChartError::Invalid {
            what: shown.to_string(),
            why: format!("version {range:?}: {why}"),
        })?;
    let what = format!("the tags of {shown}");
    let body = reg
        .get(
            &format!("{}/tags/list", r.repository),
            None,
            &what,
            reg.limits.max_index_bytes,
        )
        .await?;
    if !body.status.is_success() {
        return Err(ChartError::status(&what, body.status));
    }
    let tags: Tags = serde_json::from_slice(&body.bytes).map_err(|e| ChartError::Invalid {
        what: what.clone(),
        why: format!("not a tag list: {e}"),
    })?;
    let tags = tags.tags.unwrap_or_default();
    let versions = tags.iter().map(|t| t.replace('_', "+"));
    versions
        .filter_map(|t| Version::parse(&t).map(|v| (v, t)))
        .filter(|(v, _)| constraint.matches(v))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t)
        .ok_or_else(|| ChartError::NoVersion {
            what: shown.to_string(),
            range: constraint.to_string(),
            available: super::repo::available(tags.iter().map(String::as_str)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_keep_quoted_commas() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
    }

    #[test]
    fn references_name_a_registry_and_a_repository() {
        let r = split("127.0.0.1:5000/charts/web").expect("valid");
        assert_eq!(
            (r.host, r.repository, r.name),
            ("127.0.0.1:5000", "charts/web", "web")
        );
        for bad in ["nohost", "h/../x", "h//x", "h/a:b", "h/a b"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }
}
