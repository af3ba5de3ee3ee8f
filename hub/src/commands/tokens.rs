//! Join token commands: create, list, revoke. Tokens live only in the store, not in
//! memory: every hub replica sharing the store sees the same tokens and the same uses
//! left, and `registration` spends a use with a compare-and-swap on the stored record.

use flotilla_identity::JoinString;
use flotilla_model::{Labels, labels};

use super::{CommandError, invalid, validate_labels};
use crate::fleet::Fleet;
use crate::records::{TokenRecord, now_unix};
use crate::store::{Op, Revision, StoreError, Table};
use crate::tokens;

/// What `flotilla token create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub ttl_secs: u64,
    pub max_uses: u32,
    pub description: String,
    /// Fixed on every cluster that joins with the token.
    pub labels: Labels,
    /// Keys whose value the spoke may choose itself, at registration.
    pub spoke_label_keys: Vec<String>,
}

/// A created token: its record, and the join string a spoke starts with (shown once:
/// it holds the secret, which the hub does not keep).
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub record: TokenRecord,
    pub join: String,
}

/// A description is for people; this bounds what the store and every listing carry.
const MAX_DESCRIPTION_BYTES: usize = 1024;

impl Fleet {
    /// `flotilla token create`.
    pub async fn create_token(&self, new: NewToken) -> Result<CreatedToken, CommandError> {
        if new.ttl_secs == 0 || new.max_uses == 0 {
            return Err(invalid("ttl and max uses must be positive"));
        }
        if new.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(invalid(format!(
                "a token description is at most {MAX_DESCRIPTION_BYTES} bytes"
            )));
        }
        validate_labels(&new.labels)?;
        for k in &new.spoke_label_keys {
            labels::validate_key(k).map_err(invalid)?;
        }
        let (mut record, token) =
            tokens::generate(new.ttl_secs, new.max_uses, &new.description, now_unix());
        record.labels = new.labels;
        record.spoke_label_keys = new.spoke_label_keys;
        // A fresh random id; the order lock is not needed, nothing else can name it.
        self.store
            .commit(vec![Op::put_json(
                Table::Tokens,
                record.id.clone(),
                &record,
            )])
            .await?;
        tracing::info!(token = %record.id, "join token created");
        let join = JoinString {
            token,
            hub: self.advertise.clone(),
            ca_sha256: self.pin(),
        };
        Ok(CreatedToken {
            record,
            join: join.to_string(),
        })
    }

    /// `flotilla token list`: every token, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, CommandError> {
        let range = self.store.range(Table::Tokens, "").await?;
        let mut tokens = range
            .entries
            .iter()
            .map(|e| decode_token(&e.key, &e.value))
            .collect::<Result<Vec<_>, _>>()?;
        tokens.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(tokens)
    }

    /// `flotilla token revoke ID`: the token buys no further registration, on any replica.
    pub async fn revoke_token(&self, id: &str) -> Result<(), CommandError> {
        let _order = self.order.lock().await;
        if self.stored_token(id).await?.is_none() {
            return Err(CommandError::NotFound(format!("token {id} not found")));
        }
        self.store
            .commit(vec![Op::delete(Table::Tokens, id)])
            .await?;
        tracing::info!(token = %id, "join token revoked");
        Ok(())
    }

    /// The stored token `id` and the revision that last wrote it; `None` for an id that
    /// is not a token's (malformed ids are not looked up).
    pub(super) async fn stored_token(
        &self,
        id: &str,
    ) -> Result<Option<(TokenRecord, Revision)>, CommandError> {
        if !tokens::is_id(id) {
            return Ok(None);
        }
        let range = self.store.range(Table::Tokens, id).await?;
        range
            .entries
            .iter()
            .find(|e| e.key == id)
            .map(|e| decode_token(&e.key, &e.value).map(|t| (t, e.revision)))
            .transpose()
    }
}

fn decode_token(key: &str, value: &[u8]) -> Result<TokenRecord, CommandError> {
    serde_json::from_slice(value).map_err(|e| {
        CommandError::Store(StoreError::Corrupt {
            table: Table::Tokens,
            key: key.to_string(),
            message: e.to_string(),
        })
    })
}
