//! The join string handed to a spoke: `flotilla://TOKEN@HOST:PORT?ca-sha256=HEX`.
//!
//! It carries everything a spoke needs to enroll: where the hub is, a single-purpose
//! token, and the digest that pins the hub CA before anything is trusted.

use std::fmt;

use crate::Error;

#[derive(Clone, PartialEq, Eq)]
pub struct JoinString {
    pub token: String,
    pub hub: String,
    pub ca_sha256: String,
}

impl fmt::Debug for JoinString {
    // The token is a secret: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinString")
            .field("hub", &self.hub)
            .field("ca_sha256", &self.ca_sha256)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flotilla://{}@{}?ca-sha256={}",
            self.token, self.hub, self.ca_sha256
        )
    }
}

impl std::str::FromStr for JoinString {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::Certificate(format!(
                "malformed join string ({why}); expected flotilla://TOKEN@HOST:PORT?ca-sha256=HEX"
            ))
        };
        let rest = s
            .trim()
            .strip_prefix("flotilla://")
            .ok_or_else(|| bad("missing flotilla:// prefix"))?;
        let (token, rest) = rest.split_once('@').ok_or_else(|| bad("missing TOKEN@"))?;
        let (hub, query) = rest
            .split_once('?')
            .ok_or_else(|| bad("missing ?ca-sha256="))?;
        let ca_sha256 = query
            .strip_prefix("ca-sha256=")
            .ok_or_else(|| bad("missing ca-sha256="))?
            .to_ascii_lowercase();
        if ca_sha256.len() != 64 || !ca_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("ca-sha256 must be 64 hex characters"));
        }
        if token.is_empty() || hub.is_empty() || !hub.contains(':') {
            return Err(bad("empty token or hub address without port"));
        }
        Ok(JoinString {
            token: token.to_string(),
            hub: hub.to_string(),
            ca_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_malformed_strings() {
        let j = JoinString {
            token: "abc.def".into(),
            hub: "127.0.0.1:7443".into(),
            ca_sha256: "a".repeat(64),
        };
        assert_eq!(j.to_string().parse::<JoinString>().expect("parses"), j);
        for bad in [
            "",
            "https://x@h:1?ca-sha256=aa",
            "flotilla://h:1?ca-sha256=aa",
            &format!("flotilla://t@h:1?ca-sha256={}", "z".repeat(64)),
            &format!("flotilla://t@h?ca-sha256={}", "a".repeat(64)),
        ] {
            assert!(bad.parse::<JoinString>().is_err(), "{bad:?}");
        }
        assert!(
            !format!("{j:?}").contains("abc.def"),
            "Debug must hide the token"
        );
    }
}
