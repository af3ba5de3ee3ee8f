//! Redaction of credentials in repository URLs. A source's URL may carry a password or a
//! token (`https://user:token@host/repo`, `?private_token=`); the hub needs it to fetch,
//! but nobody reads it back: logs, errors, status, the Admin API and `-o json` show
//! [`redact_url`]'s form, and any text that may quote the URL goes through
//! [`redact_in`].

/// Shown in place of a secret.
pub const REDACTED: &str = "***";

/// `url` with the userinfo's password (or, over http(s), a lone user, which hosts use for
/// tokens) and every query value replaced by `***`. An ssh user (`ssh://git@host`, the
/// scp-like `git@host:path`) is a name, not a secret, and stays. Text that is not a URL
/// comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{REDACTED}@{host}"),
            None if lone_user_is_secret(scheme) => format!("{REDACTED}@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    format!("{scheme}://{authority}{}", redact_query(path))
}

fn lone_user_is_secret(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

fn redact_query(path: &str) -> String {
    let Some((before, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}={REDACTED}"),
            None => pair.to_string(),
        })
        .collect();
    let mut out = format!("{before}?{}", redacted.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `text` with every secret part of `url` replaced, wherever it is quoted (an error
/// from git or the network may quote the URL whole, or only its host and user).
pub fn redact_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    for secret in secrets_of(url) {
        out = out.replace(&secret, REDACTED);
    }
    out
}

/// The userinfo secret and the query values of `url`, longest first.
fn secrets_of(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut secrets = Vec::new();
    if let Some((userinfo, _)) = rest[..authority_end].rsplit_once('@') {
        match userinfo.split_once(':') {
            Some((_, password)) => secrets.push(password.to_string()),
            None if lone_user_is_secret(scheme) => secrets.push(userinfo.to_string()),
            None => {}
        }
    }
    if let Some((_, query)) = rest[authority_end..].split_once('?') {
        let query = query.split('#').next().unwrap_or("");
        secrets.extend(
            query
                .split('&')
                .filter_map(|p| p.split_once('=').map(|(_, v)| v.to_string())),
        );
    }
    // A one- or two-character value would redact unrelated text; no real secret is one.
    secrets.retain(|s| s.len() >= 3);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_tokens_and_query_values_are_redacted() {
        let cases = [
            (
                "https://bob:s3cr3t@git.example.com/org/repo.git",
                "https://bob:***@git.example.com/org/repo.git",
            ),
            (
                "https://ghp_abcdef123456@github.com/org/repo",
                "https://***@github.com/org/repo",
            ),
            (
                "https://git.example.com/repo.git?private_token=glpat-123&ref=main",
                "https://git.example.com/repo.git?private_token=***&ref=***",
            ),
            ("git://127.0.0.1:9418/fleet", "git://127.0.0.1:9418/fleet"),
            ("file:///srv/git/fleet", "file:///srv/git/fleet"),
            ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
            ("ssh://git@host/repo", "ssh://git@host/repo"),
            ("ssh://git:pw123@host/repo", "ssh://git:***@host/repo"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn secrets_quoted_anywhere_in_a_text_are_redacted() {
        let url = "https://bob:s3cr3t@git.example.com/repo.git?token=abc123";
        let text = format!(
            "fetch {url}: authentication failed for 'https://bob:s3cr3t@git.example.com/' (token abc123)"
        );
        let out = redact_in(&text, url);
        assert!(!out.contains("s3cr3t") && !out.contains("abc123"), "{out}");
        assert!(
            out.contains("https://bob:***@git.example.com/repo.git"),
            "{out}"
        );
    }
}
