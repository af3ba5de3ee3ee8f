//! The join string handed to a spoke:
//! `flotilla://TOKEN@HOST:PORT[,HOST:PORT…]?ca-sha256=HEX`.
//!
//! It carries everything a spoke needs to enroll: where the hub is (every advertised
//! address, in order: the replicas of one hub), a single-purpose token, and the digest
//! that pins the hub CA before anything is trusted. A string with one address, as every
//! hub wrote before address lists, is the same format.

use std::fmt;

use crate::Error;

#[derive(Clone, PartialEq, Eq)]
pub struct JoinString {
    pub token: String,
    /// The hub's advertised addresses as `hub.conf` holds them: `HOST:PORT`, or several
    /// comma-separated (see [`JoinString::hubs`]).
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

impl JoinString {
    /// Every address of the hub, in the order to try them.
    pub fn hubs(&self) -> Result<Vec<String>, Error> {
        crate::addrs::hub_addresses(&self.hub)
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
                "malformed join string ({why}); expected \
                 flotilla://TOKEN@HOST:PORT[,HOST:PORT…]?ca-sha256=HEX"
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
        if token.is_empty() {
            return Err(bad("empty token"));
        }
        let hubs = crate::addrs::hub_addresses(hub).map_err(|e| bad(&e.to_string()))?;
        Ok(JoinString {
            token: token.to_string(),
            hub: hubs.join(","),
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

    #[test]
    fn a_join_string_with_several_hub_addresses_round_trips_and_keeps_their_order() {
        let pin = "b".repeat(64);
        let text = format!(
            "flotilla://abc.def@hub-b.example.com:7443,10.0.0.1:7443,[::1]:9443?ca-sha256={pin}"
        );
        let j: JoinString = text.parse().expect("parses");
        assert_eq!(
            j.hubs().expect("addresses"),
            ["hub-b.example.com:7443", "10.0.0.1:7443", "[::1]:9443"]
        );
        assert_eq!(j.to_string(), text);
        assert_eq!(j.to_string().parse::<JoinString>().expect("again"), j);
        // The single-address form every older hub printed is one address.
        let old: JoinString = format!("flotilla://abc.def@127.0.0.1:7443?ca-sha256={pin}")
            .parse()
            .expect("old form");
        assert_eq!(old.hubs().expect("one"), ["127.0.0.1:7443"]);
        for bad in [
            format!("flotilla://t@h:1,?ca-sha256={pin}"),
            format!("flotilla://t@h:1,h?ca-sha256={pin}"),
            format!("flotilla://t@h:1,h:1?ca-sha256={pin}"),
        ] {
            let err = bad.parse::<JoinString>().expect_err(&bad).to_string();
            assert!(err.contains("malformed join string"), "{err}");
        }
    }
}
