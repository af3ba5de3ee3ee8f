//! Refusals that retrying cannot change, named on the wire so a spoke can stop (or back
//! off slowly) instead of dialling the hub forever at its normal pace.
//!
//! The hub attaches the reason as the gRPC metadata `flotilla-refusal` to the `Status`
//! it returns from Register, Recover or Sync; the spoke reads it back with
//! [`Refusal::of`]. A status without it (an older hub, a network error) is not
//! permanent.

use std::fmt;
use std::str::FromStr;

/// The metadata key carrying a [`Refusal`].
pub const METADATA_KEY: &str = "flotilla-refusal";

/// Why the hub will never accept this spoke as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An admin revoked the cluster.
    Revoked,
    /// The hub has no such cluster (deleted, or another hub).
    NotRegistered,
    /// The certificate expired longer ago than the hub's recovery grace.
    BeyondGrace,
    /// The certificate is not one the hub still honours for the cluster.
    Superseded,
    /// The proof of possession does not match the certificate's key.
    WrongKey,
    /// The certificate was not issued by a CA the hub trusts.
    UnknownIssuer,
    /// The join token is unknown, expired or used up.
    Token,
    /// Another cluster already has the requested name.
    NameTaken,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::Revoked,
        Refusal::NotRegistered,
        Refusal::BeyondGrace,
        Refusal::Superseded,
        Refusal::WrongKey,
        Refusal::UnknownIssuer,
        Refusal::Token,
        Refusal::NameTaken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Revoked => "revoked",
            Refusal::NotRegistered => "not-registered",
            Refusal::BeyondGrace => "beyond-grace",
            Refusal::Superseded => "superseded",
            Refusal::WrongKey => "wrong-key",
            Refusal::UnknownIssuer => "unknown-issuer",
            Refusal::Token => "token",
            Refusal::NameTaken => "name-taken",
        }
    }

    /// A `PermissionDenied` status carrying this refusal.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        self.tag(tonic::Status::permission_denied(message))
    }

    /// `status` with this refusal attached.
    pub fn tag(self, mut status: tonic::Status) -> tonic::Status {
        status.metadata_mut().insert(
            METADATA_KEY,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        status
    }

    /// The refusal a status carries, if any; unknown values are not permanent.
    pub fn of(status: &tonic::Status) -> Option<Refusal> {
        status
            .metadata()
            .get(METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
}

impl FromStr for Refusal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Refusal::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown refusal {s:?}"))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_survives_a_status_and_a_plain_status_carries_none() {
        for r in Refusal::ALL {
            let status = r.status("no");
            assert_eq!(Refusal::of(&status), Some(r));
            assert_eq!(status.code(), tonic::Code::PermissionDenied);
        }
        assert_eq!(Refusal::of(&tonic::Status::permission_denied("no")), None);
        let mut odd = tonic::Status::unavailable("x");
        odd.metadata_mut()
            .insert(METADATA_KEY, "later".parse().expect("ascii"));
        assert_eq!(Refusal::of(&odd), None, "unknown reasons are not permanent");
    }
}
