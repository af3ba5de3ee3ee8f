//! Appliers: where a spoke puts its bundles. `dir` writes manifests into a folder; a
//! Kubernetes applier (server-side apply) will sit beside it behind the same trait.

pub mod dir;

use std::path::PathBuf;

use anyhow::{Result, bail};

/// What a spoke does with a bundle's rendered manifests.
pub trait Target: Send + Sync {
    /// Makes the target hold exactly `content` for `bundle`.
    fn apply(&self, bundle: &str, deployment_id: &str, content: &[u8]) -> Result<()>;
    /// Removes what `bundle` put there (pruning).
    fn remove(&self, bundle: &str) -> Result<()>;
    /// Whether the target still holds exactly what was applied (drift detection).
    fn in_sync(&self, bundle: &str, deployment_id: &str, content: &[u8]) -> bool;
}

/// `--target` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Dir(PathBuf),
}

impl std::str::FromStr for TargetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("dir", path)) if !path.is_empty() => Ok(TargetSpec::Dir(PathBuf::from(path))),
            _ if s == "kubernetes" => Err(
                "--target kubernetes is not available in this build yet; use --target dir:PATH"
                    .into(),
            ),
            _ => Err(format!("unknown target {s:?}; expected dir:PATH")),
        }
    }
}

impl TargetSpec {
    pub fn build(&self) -> Result<Box<dyn Target>> {
        match self {
            TargetSpec::Dir(p) => Ok(Box::new(dir::DirTarget::new(p)?)),
        }
    }
}

/// Bundle names become file names: allow only DNS-1123 subdomains, which cannot contain
/// `/` or `..`.
pub fn check_bundle_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(flotilla_model::names::is_dns_label);
    if !ok {
        bail!("refusing bundle name {name:?}: not a DNS-1123 subdomain");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bundle_names_are_refused() {
        assert!(check_bundle_name("apps-web").is_ok());
        assert!(check_bundle_name("apps.web").is_ok());
        for bad in ["", "../etc", "a/b", "a..b", ".hidden", "UPPER"] {
            assert!(check_bundle_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn target_specs_parse() {
        assert_eq!(
            "dir:/tmp/x".parse::<TargetSpec>(),
            Ok(TargetSpec::Dir("/tmp/x".into()))
        );
        assert!("dir:".parse::<TargetSpec>().is_err());
        assert!("s3://x".parse::<TargetSpec>().is_err());
    }
}
