//! A source's chart repository credentials. The secrets (a password, a CA bundle, an OCI
//! token) are files in `<data-dir>/credentials/<source>/helm-*`, the folder 0700 and the
//! files 0600, and nowhere else: not in the state store, not in an Admin API answer, a
//! status or a log. What is not secret (the username, the URL regex, plain HTTP) is
//! `records::HelmAuthSpec`, stored with the source.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::ChartAuth;
use crate::records::HelmAuthSpec;

/// Largest credential file (a CA bundle may hold many certificates).
pub const MAX_SECRET_BYTES: usize = 1 << 20;
const MAX_REGEX_LEN: usize = 1024;

/// The secrets and the file each lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    Password,
    Ca,
    Token,
}

impl Secret {
    pub const ALL: [Secret; 3] = [Secret::Password, Secret::Ca, Secret::Token];

    /// The name users see (`sources -o json`).
    pub fn name(self) -> &'static str {
        match self {
            Secret::Password => "password",
            Secret::Ca => "ca",
            Secret::Token => "token",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Secret::Password => "helm-password",
            Secret::Ca => "helm-ca",
            Secret::Token => "helm-token",
        }
    }
}

/// `<data-dir>/credentials/<source>`; `source` is a validated DNS label.
fn dir(data_dir: &Path, source: &str) -> PathBuf {
    data_dir.join("credentials").join(source)
}

/// Checks what an admin sends before anything is stored.
pub fn validate(spec: &HelmAuthSpec, secrets: &[(Secret, &[u8])]) -> Result<(), String> {
    if spec.url_regex.len() > MAX_REGEX_LEN {
        return Err(format!(
            "--helm-repo-url-regex is over {MAX_REGEX_LEN} characters"
        ));
    }
    compile(&spec.url_regex)?;
    for (s, data) in secrets {
        if data.len() > MAX_SECRET_BYTES {
            return Err(format!(
                "the helm {} is over {MAX_SECRET_BYTES} bytes",
                s.name()
            ));
        }
        if std::str::from_utf8(data).is_err() {
            return Err(format!("the helm {} is not UTF-8 text", s.name()));
        }
        if *s == Secret::Ca
            && reqwest::Certificate::from_pem_bundle(data).map_or(true, |c| c.is_empty())
        {
            return Err("the helm CA file is not a PEM certificate bundle".into());
        }
    }
    Ok(())
}

fn compile(re: &str) -> Result<Option<Regex>, String> {
    if re.is_empty() {
        return Ok(None);
    }
    regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map(Some)
        .map_err(|e| format!("--helm-repo-url-regex: {e}"))
}

/// Replaces the source's secrets with `secrets` (the ones not given are removed).
pub fn store(data_dir: &Path, source: &str, secrets: &[(Secret, &[u8])]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let d = dir(data_dir, source);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    for s in Secret::ALL {
        let path = d.join(s.file());
        match secrets.iter().find(|(k, _)| *k == s) {
            Some((_, data)) => flotilla_identity::files::write_secret(&path, data)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
        }
    }
    Ok(())
}

/// Removes the source's chart secrets (source removal).
pub fn remove(data_dir: &Path, source: &str) {
    let d = dir(data_dir, source);
    for s in Secret::ALL {
        let _ = std::fs::remove_file(d.join(s.file()));
    }
    // Only if nothing else (git credentials) lives there.
    let _ = std::fs::remove_dir(&d);
}

/// The names of the secrets the hub holds for `source`.
pub fn stored(data_dir: &Path, source: &str) -> Vec<String> {
    let d = dir(data_dir, source);
    Secret::ALL
        .into_iter()
        .filter(|s| d.join(s.file()).is_file())
        .map(|s| s.name().to_string())
        .collect()
}

/// A source's credentials, loaded for one poll.
#[derive(Debug, Default)]
pub struct SourceAuth {
    url_regex: Option<Regex>,
    auth: ChartAuth,
}

impl SourceAuth {
    pub fn load(
        data_dir: &Path,
        source: &str,
        spec: Option<&HelmAuthSpec>,
    ) -> Result<Self, String> {
        let Some(spec) = spec else {
            return Ok(SourceAuth::default());
        };
        let d = dir(data_dir, source);
        let read = |s: Secret| -> Result<Option<String>, String> {
            let path = d.join(s.file());
            match flotilla_identity::files::read_secret(&path) {
                Ok(text) => Ok(Some(text)),
                Err(_) if !path.exists() => Ok(None),
                Err(e) => Err(format!("the helm {} of source {source}: {e}", s.name())),
            }
        };
        Ok(SourceAuth {
            url_regex: compile(&spec.url_regex)?,
            auth: ChartAuth {
                username: (!spec.username.is_empty()).then(|| spec.username.clone()),
                password: read(Secret::Password)?,
                token: read(Secret::Token)?,
                ca_pem: read(Secret::Ca)?,
                plain_http: spec.plain_http,
            },
        })
    }

    /// The credentials for a chart at `url`: all of them where the regex matches (or
    /// there is none), else none (the transport settings stay).
    pub fn for_url(&self, url: &str) -> ChartAuth {
        match &self.url_regex {
            Some(re) if !re.is_match(url) => ChartAuth {
                plain_http: self.auth.plain_http,
                ..ChartAuth::default()
            },
            _ => self.auth.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_files_and_apply_only_where_the_regex_matches() {
        use std::os::unix::fs::PermissionsExt;
        let data = tempfile::tempdir().expect("tmp");
        let spec = HelmAuthSpec {
            username: "u".into(),
            url_regex: "^https://charts\\.example/".into(),
            plain_http: false,
        };
        let secrets: &[(Secret, &[u8])] = &[(Secret::Password, b"s3cret")];
        validate(&spec, secrets).expect("valid");
        store(data.path(), "web", secrets).expect("store");
        let d = dir(data.path(), "web");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("helm-password")), 0o600);
        assert_eq!(stored(data.path(), "web"), vec!["password"]);

        let auth = SourceAuth::load(data.path(), "web", Some(&spec)).expect("load");
        let matching = auth.for_url("https://charts.example/stable");
        assert_eq!(matching.password.as_deref(), Some("s3cret"));
        assert_eq!(matching.username.as_deref(), Some("u"));
        assert_eq!(auth.for_url("https://elsewhere/").password, None);
        assert!(!format!("{auth:?}").contains("s3cret"));

        remove(data.path(), "web");
        assert!(stored(data.path(), "web").is_empty());
        assert!(!d.exists());
    }

    #[test]
    fn a_bad_regex_or_ca_is_refused_before_anything_is_stored() {
        let bad_re = HelmAuthSpec {
            url_regex: "(".into(),
            ..HelmAuthSpec::default()
        };
        assert!(validate(&bad_re, &[]).is_err());
        let ca: &[(Secret, &[u8])] = &[(Secret::Ca, b"not a pem")];
        assert!(validate(&HelmAuthSpec::default(), ca).is_err());
    }
}
