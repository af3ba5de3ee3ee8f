//! Push webhooks from GitHub, GitLab and Gitea. A delivery with a valid signature (HMAC-
//! SHA256 for GitHub and Gitea, the shared token for GitLab) starts an immediate poll of
//! every source whose repository and branch it names and whose secret signed it: a
//! source's own webhook secret if it has one, else the hub's. Anything else is refused,
//! and a refusal says why without echoing secrets.

use flotilla_telemetry::hyper::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::fleet::Fleet;

/// Who sent a delivery, from the last segment of `/webhooks/{provider}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
}

impl Provider {
    pub fn from_path(segment: &str) -> Result<Provider, Refusal> {
        match segment {
            "github" => Ok(Provider::GitHub),
            "gitlab" => Ok(Provider::GitLab),
            "gitea" => Ok(Provider::Gitea),
            other => Err(Refusal::UnknownProvider(other.to_string())),
        }
    }
}

/// What a delivery with a valid signature asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// GitHub's test delivery when a webhook is created.
    Ping,
    /// A push to `git_ref` of the repository, named in each of the spellings the
    /// payload carries, normalised (`normalize_repo`).
    Push { git_ref: String, repos: Vec<String> },
}

/// Why a delivery is refused. Messages never echo secrets or signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown webhook provider {0:?}; use github, gitlab or gitea")]
    UnknownProvider(String),
    #[error("signature or token does not match")]
    BadSignature,
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload has no ref; only push events are handled")]
    NoRef,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::UnknownProvider(_) => StatusCode::NOT_FOUND,
            Refusal::BadSignature => StatusCode::UNAUTHORIZED,
            Refusal::NotJson(_) | Refusal::NoRef => StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks a delivery's signature against `secret`, then reads what it asks for. Pure: no
/// I/O and no fleet, so it can be fuzzed (`fuzz/fuzz_targets/webhook_delivery.rs`).
pub fn read_delivery(
    p: Provider,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Delivery, Refusal> {
    verify(p, secret, headers, body)?;
    if p == Provider::GitHub && header(headers, "x-github-event") == Some("ping") {
        return Ok(Delivery::Ping);
    }
    // serde_json bounds nesting (128 levels), so a deep body cannot overflow the stack.
    let v: Value = serde_json::from_slice(body).map_err(|e| Refusal::NotJson(e.to_string()))?;
    let git_ref = v["ref"].as_str().ok_or(Refusal::NoRef)?.to_string();
    Ok(Delivery::Push {
        git_ref,
        repos: repo_urls(p, &v),
    })
}

fn json(v: Value) -> String {
    v.to_string() + "\n"
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn hmac_hex_matches(secret: &str, body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&sig).is_ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn verify(p: Provider, secret: &str, h: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let ok = match p {
        Provider::GitHub => header(h, "x-hub-signature-256")
            .and_then(|s| s.strip_prefix("sha256="))
            .is_some_and(|sig| hmac_hex_matches(secret, body, sig)),
        Provider::Gitea => {
            header(h, "x-gitea-signature").is_some_and(|sig| hmac_hex_matches(secret, body, sig))
        }
        Provider::GitLab => header(h, "x-gitlab-token")
            .is_some_and(|t| constant_time_eq(t.as_bytes(), secret.as_bytes())),
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::BadSignature)
    }
}

/// `host/owner/repo` for any of https://, git://, ssh:// and scp-like `git@host:owner/repo`
/// forms, so a webhook's clone URL matches however the source spelled its repo.
pub fn normalize_repo(url: &str) -> String {
    let s = url.trim().trim_end_matches('/');
    let s = s.strip_suffix(".git").unwrap_or(s);
    let s = match s.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        None => s.replacen(':', "/", 1),
    };
    let s = s
        .rsplit_once('@')
        .map_or(s.as_str(), |(_, host)| host)
        .to_string();
    // Drop a port: webhooks report the canonical clone URL.
    let (host, path) = s.split_once('/').unwrap_or((s.as_str(), ""));
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    format!("{host}/{path}")
}

fn repo_urls(p: Provider, v: &Value) -> Vec<String> {
    let obj = match p {
        Provider::GitLab => &v["project"],
        Provider::GitHub | Provider::Gitea => &v["repository"],
    };
    let keys: &[&str] = match p {
        Provider::GitLab => &["git_http_url", "git_ssh_url", "web_url", "http_url", "url"],
        _ => &["clone_url", "ssh_url", "git_url", "html_url", "url"],
    };
    keys.iter()
        .filter_map(|k| obj[*k].as_str())
        .map(normalize_repo)
        .collect()
}

/// Handles one delivery; returns the HTTP status and a JSON body.
pub fn handle(
    fleet: &Fleet,
    secret: Option<&str>,
    provider: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, String) {
    let refused = |r: Refusal| {
        (
            r.status(),
            json(serde_json::json!({"error": r.to_string()})),
        )
    };
    let p = match Provider::from_path(provider) {
        Ok(p) => p,
        Err(r) => return refused(r),
    };
    let sources = fleet.sorted_sources();
    // A source with a secret of its own accepts only deliveries signed with it; the
    // others accept the hub's. Each distinct secret is tried once.
    let mut secrets: Vec<&str> = secret.into_iter().collect();
    for s in &sources {
        if let Some(own) = s.webhook_secret.as_deref()
            && !secrets.contains(&own)
        {
            secrets.push(own);
        }
    }
    if secrets.is_empty() {
        return (
            StatusCode::FORBIDDEN,
            json(
                serde_json::json!({"error": "webhooks are disabled: start the hub with --webhook-secret-file or give a source --webhook-secret-file"}),
            ),
        );
    }
    let mut verified = None;
    for candidate in secrets {
        match read_delivery(p, candidate, headers, body) {
            Ok(Delivery::Ping) => return (StatusCode::OK, json(serde_json::json!({"pong": true}))),
            Ok(Delivery::Push { git_ref, repos }) => {
                verified = Some((candidate, git_ref, repos));
                break;
            }
            Err(Refusal::BadSignature) => {}
            Err(r) => return refused(r),
        }
    }
    let Some((used, git_ref, urls)) = verified else {
        let r = Refusal::BadSignature;
        tracing::warn!(provider, "webhook refused: {r}");
        return refused(r);
    };
    let mut triggered = Vec::new();
    for s in &sources {
        let signed_for_it = s.webhook_secret.as_deref().or(secret) == Some(used);
        let same_repo = urls.contains(&normalize_repo(&s.spec.repo));
        let same_branch = git_ref == format!("refs/heads/{}", s.spec.branch);
        if signed_for_it && same_repo && same_branch {
            s.poke.notify_one();
            triggered.push(s.spec.name.clone());
        }
    }
    tracing::info!(provider, git_ref, ?triggered, "webhook accepted");
    (
        StatusCode::ACCEPTED,
        json(serde_json::json!({"triggered": triggered})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_urls_normalize_across_schemes() {
        let want = "example.com/team/fleet";
        for u in [
            "https://example.com/team/fleet.git",
            "https://user@Example.com/team/fleet/",
            "git@example.com:team/fleet.git",
            "ssh://git@example.com:22/team/fleet.git",
            "git://example.com/team/fleet",
        ] {
            assert_eq!(normalize_repo(u), want, "{u}");
        }
    }

    #[test]
    fn signatures_are_checked_per_provider() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={sig}").parse().expect("hv"),
        );
        assert!(verify(Provider::GitHub, "s3cret", &h, body).is_ok());
        assert!(verify(Provider::GitHub, "other", &h, body).is_err());
        assert!(verify(Provider::GitHub, "s3cret", &h, b"tampered").is_err());
        let mut g = HeaderMap::new();
        g.insert("x-gitea-signature", sig.parse().expect("hv"));
        assert!(verify(Provider::Gitea, "s3cret", &g, body).is_ok());
        let mut l = HeaderMap::new();
        l.insert("x-gitlab-token", "s3cret".parse().expect("hv"));
        assert!(verify(Provider::GitLab, "s3cret", &l, body).is_ok());
        assert!(verify(Provider::GitLab, "s3cre", &l, body).is_err());
        assert!(verify(Provider::GitHub, "s3cret", &HeaderMap::new(), body).is_err());
    }

    fn github_headers(secret: &str, body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={sig}").parse().expect("hv"),
        );
        h
    }

    #[test]
    fn a_signed_push_names_its_ref_and_normalised_repositories() {
        let body = br#"{"ref":"refs/heads/main","repository":{"clone_url":"https://Example.com/team/fleet.git"}}"#;
        let got = read_delivery(Provider::GitHub, "k", &github_headers("k", body), body);
        assert_eq!(
            got,
            Ok(Delivery::Push {
                git_ref: "refs/heads/main".into(),
                repos: vec!["example.com/team/fleet".into()],
            })
        );
    }

    #[test]
    fn a_signed_body_nested_beyond_serde_json_limits_is_refused_not_a_crash() {
        let body = "[".repeat(100_000).into_bytes();
        let got = read_delivery(Provider::GitHub, "k", &github_headers("k", &body), &body);
        assert!(matches!(got, Err(Refusal::NotJson(_))), "{got:?}");
    }

    #[test]
    fn an_unsigned_body_is_refused_before_it_is_parsed() {
        let got = read_delivery(Provider::Gitea, "k", &HeaderMap::new(), b"not json");
        assert_eq!(got, Err(Refusal::BadSignature));
    }

    #[test]
    fn a_source_with_its_own_secret_is_triggered_only_by_deliveries_signed_with_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let (fleet, _rx) = Fleet::for_tests(dir.path());
        let spec = |name: &str| crate::records::SourceSpec {
            name: name.into(),
            repo: "https://example.com/team/fleet.git".into(),
            branch: "main".into(),
            paths: vec![".".into()],
            interval_secs: 0,
            targets: Vec::new(),
            revision: None,
            paused: false,
            verify_commits: false,
            username: None,
            helm_auth: None,
        };
        crate::credentials::Credentials::of(dir.path(), "own")
            .write(crate::credentials::Kind::WebhookSecret, b"own-secret\n")
            .expect("write");
        for name in ["own", "shared"] {
            fleet.insert_source(spec(name)).expect("insert");
        }
        let body = br#"{"ref":"refs/heads/main","repository":{"clone_url":"https://example.com/team/fleet.git"}}"#;
        let deliver = |hub_secret: Option<&str>, key: &str| {
            let (status, text) = handle(
                &fleet,
                hub_secret,
                "github",
                &github_headers(key, body),
                body,
            );
            (status.as_u16(), text.trim().to_string())
        };
        let triggered = |names: &str| (202, format!(r#"{{"triggered":[{names}]}}"#));
        assert_eq!(
            deliver(Some("hub-secret"), "hub-secret"),
            triggered(r#""shared""#)
        );
        assert_eq!(
            deliver(Some("hub-secret"), "own-secret"),
            triggered(r#""own""#)
        );
        assert_eq!(deliver(None, "own-secret"), triggered(r#""own""#));
        assert_eq!(deliver(None, "hub-secret").0, 401);
    }
}
