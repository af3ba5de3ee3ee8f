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
    let mut out = String::with_capacity(url.len());
    let mut at = 0;
    for span in secret_spans(url) {
        out.push_str(&url[at..span.start]);
        out.push_str(REDACTED);
        at = span.end;
    }
    out.push_str(&url[at..]);
    out
}

/// `text` with every secret part of `url` replaced, wherever it is quoted (an error
/// from git or the network may quote the URL whole, or only its host and user).
pub fn redact_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    let mut secrets: Vec<&str> = secret_spans(url)
        .into_iter()
        .map(|span| &url[span])
        // A one- or two-character value would redact unrelated text; no real secret is.
        .filter(|s| s.len() >= 3)
        .collect();
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        out = out.replace(secret, REDACTED);
    }
    out
}

/// Where the secrets of `url` are, in order: the userinfo's password (or, over http(s),
/// a lone user) and each query value.
fn secret_spans(url: &str) -> Vec<std::ops::Range<usize>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let base = scheme.len() + 3;
    let authority_end = base + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut spans = Vec::new();
    if let Some(userinfo_end) = url[base..authority_end].rfind('@').map(|i| base + i) {
        match url[base..userinfo_end].find(':') {
            Some(colon) => spans.push(base + colon + 1..userinfo_end),
            None if lone_user_is_secret(scheme) => spans.push(base..userinfo_end),
            None => {}
        }
    }
    if let Some(q) = url[authority_end..]
        .find('?')
        .map(|i| authority_end + i + 1)
    {
        let query_end = url[q..].find('#').map_or(url.len(), |i| q + i);
        let mut start = q;
        for pair in url[q..query_end].split('&') {
            if let Some(eq) = pair.find('=') {
                spans.push(start + eq + 1..start + pair.len());
            }
            start += pair.len() + 1;
        }
    }
    spans
}

fn lone_user_is_secret(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
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
