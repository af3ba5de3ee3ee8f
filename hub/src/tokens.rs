//! Join tokens: 128-bit random secrets, stored only as SHA-256 hashes, with an expiry and
//! a use limit. A token is shown once, at creation, as `ID.SECRET`.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::records::TokenRecord;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("join token is malformed")]
    Malformed,
    #[error("join token is unknown or was revoked")]
    Unknown,
    #[error("join token expired")]
    Expired,
    #[error("join token has no uses left")]
    UsedUp,
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Makes a token; returns the record to store and the `ID.SECRET` string to show once.
pub fn generate(
    ttl_secs: u64,
    max_uses: u32,
    description: &str,
    now: i64,
) -> (TokenRecord, String) {
    let mut rng = rand::rng();
    let id: [u8; 4] = rng.random();
    let secret: [u8; 16] = rng.random();
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let record = TokenRecord {
        id: id.clone(),
        hash: hash_secret(&secret),
        expires_at: now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX)),
        max_uses,
        uses: 0,
        description: description.to_string(),
        created_at: now,
        labels: flotilla_model::Labels::new(),
        spoke_label_keys: Vec::new(),
    };
    (record, format!("{id}.{secret}"))
}

fn hexy(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `id` has the shape of a token id (8 hex digits).
pub fn is_id(id: &str) -> bool {
    hexy(id, 8)
}

/// Splits `ID.SECRET`.
pub fn parse(token: &str) -> Result<(&str, &str), TokenError> {
    let (id, secret) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if is_id(id) && hexy(secret, 32) {
        Ok((id, secret))
    } else {
        Err(TokenError::Malformed)
    }
}

/// Checks a presented secret against its record. Does not consume a use.
pub fn check(record: &TokenRecord, secret: &str, now: i64) -> Result<(), TokenError> {
    if !constant_time_eq(hash_secret(secret).as_bytes(), record.hash.as_bytes()) {
        return Err(TokenError::Unknown);
    }
    if now >= record.expires_at {
        return Err(TokenError::Expired);
    }
    if record.uses >= record.max_uses {
        return Err(TokenError::UsedUp);
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_until_it_expires_or_is_used_up() {
        let (mut rec, token) = generate(60, 2, "t", 1000);
        let (id, secret) = parse(&token).expect("well formed");
        assert_eq!(id, rec.id);
        assert_ne!(rec.hash, secret, "only the hash is stored");
        assert_eq!(check(&rec, secret, 1000), Ok(()));
        assert_eq!(check(&rec, secret, 1060), Err(TokenError::Expired));
        rec.uses = 2;
        assert_eq!(check(&rec, secret, 1000), Err(TokenError::UsedUp));
        assert_eq!(check(&rec, &"0".repeat(32), 1000), Err(TokenError::Unknown));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "abc",
            "zzzzzzzz.00000000000000000000000000000000",
            "0000000.1",
        ] {
            assert_eq!(parse(bad), Err(TokenError::Malformed), "{bad:?}");
        }
    }
}
