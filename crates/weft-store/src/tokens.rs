//! API tokens: created, listed, revoked and looked up for authentication.
//!
//! A token is `weft_<token_id>_<secret>`: `token_id` (16 hex characters)
//! finds the row, `secret` (64 hex characters, 256 bits from the operating
//! system's RNG) proves it. Only a per-token salt and
//! `HMAC-SHA256(pepper, salt || secret)` are stored: the pepper is a
//! server-side key kept outside the database, so rows read from a stolen
//! database or backup verify nothing. API tokens are high-entropy, so a
//! keyed hash (microseconds) is as strong here as a password hash such as
//! argon2 would be (tens of milliseconds on every worker call). A token in
//! any other shape (a bootstrap token an operator chose) gets its id from
//! `HMAC-SHA256(pepper, "weft-token-id" || token)`, so it is looked up the
//! same way.
//!
//! Invariant: the secret is never stored, logged or returned after
//! creation; the comparison of hashes is constant-time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{Error, Problem, Result, Store, args};

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every token Weft creates.
pub const TOKEN_PREFIX: &str = "weft_";

/// Shortest pepper accepted, in bytes.
pub const MIN_PEPPER_BYTES: usize = 16;

/// The server-side key of the token hashes. Every server and every
/// `weft tokens` command writing to the same database must use the same
/// pepper; a different one makes every stored token fail to verify.
#[derive(Clone)]
pub struct Pepper(Vec<u8>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper([hidden])")
    }
}

impl Pepper {
    /// A pepper from its bytes (a file's contents or an environment
    /// variable's value, surrounding whitespace trimmed).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when it is shorter than [`MIN_PEPPER_BYTES`].
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Pepper> {
        let bytes = bytes.as_ref().trim_ascii();
        if bytes.len() < MIN_PEPPER_BYTES {
            return Err(Error::Config(format!(
                "the token pepper must be at least {MIN_PEPPER_BYTES} bytes (has {})",
                bytes.len()
            )));
        }
        Ok(Pepper(bytes.to_vec()))
    }

    /// A new random pepper, as 64 hex characters (32 bytes from the OS RNG).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the OS RNG fails.
    pub fn generate_text() -> Result<String> {
        Ok(hex::encode(random_bytes::<32>()?))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }

    /// `HMAC-SHA256(pepper, salt || secret)`.
    fn digest(&self, salt: &[u8], secret: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(salt);
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `secret` matches the stored `salt` and `hash` (hex), in
    /// constant time. A malformed stored value matches nothing.
    pub fn verify(&self, salt_hex: &str, hash_hex: &str, secret: &str) -> bool {
        let (Ok(salt), Ok(hash)) = (hex::decode(salt_hex), hex::decode(hash_hex)) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(&salt);
        mac.update(secret.as_bytes());
        mac.verify_slice(&hash).is_ok()
    }

    /// Splits a presented token into the id to look up and the secret to
    /// check: `weft_<id>_<secret>` as created, any other text (a bootstrap
    /// token) as a whole with an id derived from it under the pepper.
    pub fn split<'a>(&self, token: &'a str) -> (String, &'a str) {
        if let Some(rest) = token.strip_prefix(TOKEN_PREFIX)
            && let Some((id, secret)) = rest.split_once('_')
            && id.len() == ID_HEX_LEN
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && !secret.is_empty()
        {
            return (id.to_owned(), secret);
        }
        let mut mac = self.mac();
        mac.update(b"weft-token-id");
        mac.update(token.as_bytes());
        let id = hex::encode(mac.finalize().into_bytes());
        (id[..ID_HEX_LEN].to_owned(), token)
    }
}

/// Hex characters of a token id.
const ID_HEX_LEN: usize = 16;

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|err| Error::Config(format!("the OS random number generator failed: {err}")))?;
    Ok(bytes)
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Unique among tokens not revoked; recorded as the actor of what the
    /// token does.
    pub name: String,
    /// `admin`, `operator`, `viewer` or `worker` (checked by the caller).
    pub role: String,
    /// For worker tokens, the queues it may poll; `None` is any queue.
    pub queues: Option<Vec<String>>,
    /// Epoch milliseconds after which the token is refused; `None` never.
    pub expires_at: Option<i64>,
    /// Who created it: a token's name, `anonymous`, or `cli:<user>` for
    /// `weft tokens create --database-url`.
    pub created_by: String,
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The `<id>` of `weft_<id>_<secret>`.
    pub token_id: String,
    /// Unique among live tokens; the actor of what the token does.
    pub name: String,
    /// `admin`, `operator`, `viewer` or `worker`.
    pub role: String,
    /// For worker tokens, the queues it may poll; `None` is any queue.
    pub queues: Option<Vec<String>>,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Who created it (see [`NewToken::created_by`]).
    pub created_by: String,
    /// Epoch milliseconds; `None` never expires.
    pub expires_at: Option<i64>,
    /// Epoch milliseconds; `None` while live.
    pub revoked_at: Option<i64>,
    /// Epoch milliseconds of the last successful use, written at most about
    /// once a minute per server; `None` never used.
    pub last_used_at: Option<i64>,
}

impl TokenRecord {
    /// Whether the token is refused at `now_ms`: revoked, or past its expiry.
    pub fn refused_at(&self, now_ms: i64) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("revoked")
        } else if self.expires_at.is_some_and(|at| at <= now_ms) {
            Some("expired")
        } else {
            None
        }
    }
}

/// A stored token with what verifying it needs.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The token's public fields.
    pub record: TokenRecord,
    /// Hex of the per-token salt.
    pub salt: String,
    /// Hex of `HMAC-SHA256(pepper, salt || secret)`.
    pub hash: String,
}

impl StoredToken {
    /// Whether `secret` is this token's, in constant time.
    pub fn verify(&self, pepper: &Pepper, secret: &str) -> bool {
        pepper.verify(&self.salt, &self.hash, secret)
    }
}

const COLUMNS: &str = "token_id, name, role, queues, salt, hash, created_at, created_by, expires_at, revoked_at, last_used_at";

fn stored(row: &crate::db::Row) -> Result<StoredToken> {
    let queues = match row.opt_text("queues")? {
        Some(text) => Some(serde_json::from_str(&text).map_err(|err| {
            Error::corrupt(
                "weft_tokens queues",
                None,
                Problem::BadJson(err.to_string()),
            )
        })?),
        None => None,
    };
    Ok(StoredToken {
        record: TokenRecord {
            token_id: row.text("token_id")?,
            name: row.text("name")?,
            role: row.text("role")?,
            queues,
            created_at: row.int("created_at")?,
            created_by: row.text("created_by")?,
            expires_at: row.opt_int("expires_at")?,
            revoked_at: row.opt_int("revoked_at")?,
            last_used_at: row.opt_int("last_used_at")?,
        },
        salt: row.text("salt")?,
        hash: row.text("hash")?,
    })
}

impl Store {
    /// Creates a token with a fresh id and secret; returns its record and
    /// the token text (`weft_<id>_<secret>`), which is shown once and never
    /// stored.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] `token_name_taken` when a live token has the name.
    pub async fn create_token(
        &self,
        new: &NewToken,
        pepper: &Pepper,
    ) -> Result<(TokenRecord, String)> {
        let token_id = hex::encode(random_bytes::<{ ID_HEX_LEN / 2 }>()?);
        let secret = hex::encode(random_bytes::<32>()?);
        let token = format!("{TOKEN_PREFIX}{token_id}_{secret}");
        let record = self.insert_token(new, &token_id, &secret, pepper).await?;
        Ok((record, token))
    }

    /// Stores a token whose text the caller chose (the bootstrap token of
    /// `WEFT_BOOTSTRAP_TOKEN`); it is looked up as [`Pepper::split`] says.
    /// When that token is already stored, its record is returned unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] `token_name_taken` when another live token has the
    /// name.
    pub async fn accept_token(
        &self,
        new: &NewToken,
        token: &str,
        pepper: &Pepper,
    ) -> Result<TokenRecord> {
        let (token_id, secret) = pepper.split(token);
        if let Some(existing) = self.token(&token_id).await?
            && existing.verify(pepper, secret)
        {
            return Ok(existing.record);
        }
        self.insert_token(new, &token_id, secret, pepper).await
    }

    async fn insert_token(
        &self,
        new: &NewToken,
        token_id: &str,
        secret: &str,
        pepper: &Pepper,
    ) -> Result<TokenRecord> {
        let salt = random_bytes::<16>()?;
        let hash = hex::encode(pepper.digest(&salt, secret));
        let queues = new
            .queues
            .as_ref()
            .map(|q| serde_json::to_string(q).expect("a list of strings serializes"));
        let now = self.now_ms();
        self.pool()
            .execute(
                &format!(
                    "INSERT INTO weft_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)"
                ),
                args![
                    token_id,
                    &new.name,
                    &new.role,
                    queues,
                    hex::encode(salt),
                    hash,
                    now,
                    &new.created_by,
                    new.expires_at
                ],
            )
            .await
            .map_err(|err| match err {
                Error::Conflict { .. } => Error::Conflict {
                    code: weft_core::ErrorCode::TokenNameTaken,
                    message: format!(
                        "a live token is already named `{}`; revoke it first or pick another name",
                        new.name
                    ),
                },
                other => other,
            })?;
        tracing::info!(component = "server", token = %new.name, token_id, role = %new.role, created_by = %new.created_by, "token created");
        Ok(TokenRecord {
            token_id: token_id.to_owned(),
            name: new.name.clone(),
            role: new.role.clone(),
            queues: new.queues.clone(),
            created_at: now,
            created_by: new.created_by.clone(),
            expires_at: new.expires_at,
            revoked_at: None,
            last_used_at: None,
        })
    }

    /// The token with this id, revoked or not.
    pub async fn token(&self, token_id: &str) -> Result<Option<StoredToken>> {
        let row = self
            .pool()
            .fetch_optional(
                &format!("SELECT {COLUMNS} FROM weft_tokens WHERE token_id = $1"),
                args![token_id],
            )
            .await?;
        row.as_ref().map(stored).transpose()
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = self
            .pool()
            .fetch_all(
                &format!("SELECT {COLUMNS} FROM weft_tokens ORDER BY created_at, token_id"),
                Vec::new(),
            )
            .await?;
        rows.iter()
            .map(|row| stored(row).map(|s| s.record))
            .collect()
    }

    /// How many tokens are live (neither revoked nor expired) at `now_ms`.
    pub async fn live_token_count(&self, now_ms: i64) -> Result<i64> {
        let row = self
            .pool()
            .fetch_optional(
                "SELECT COUNT(*) AS n FROM weft_tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)",
                args![now_ms],
            )
            .await?;
        row.map_or(Ok(0), |row| row.int("n"))
    }

    /// Revokes the live token named `name_or_id`, or else the token with that
    /// id; revoking a revoked token changes nothing. Returns its record.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] (`token`) when no token has that name or id.
    pub async fn revoke_token(&self, name_or_id: &str) -> Result<TokenRecord> {
        let now = self.now_ms();
        let row = self
            .pool()
            .fetch_optional(
                &format!(
                    "SELECT {COLUMNS} FROM weft_tokens WHERE (name = $1 AND revoked_at IS NULL) OR token_id = $1 \
                     ORDER BY revoked_at IS NULL DESC LIMIT 1"
                ),
                args![name_or_id],
            )
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "token",
                id: name_or_id.to_owned(),
            })?;
        let mut record = stored(&row)?.record;
        if record.revoked_at.is_none() {
            self.pool()
                .execute(
                    "UPDATE weft_tokens SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL",
                    args![&record.token_id, now],
                )
                .await?;
            record.revoked_at = Some(now);
            tracing::info!(component = "server", token = %record.name, token_id = %record.token_id, "token revoked");
        }
        Ok(record)
    }

    /// Records a token's last use (callers write it at most about once a
    /// minute, off the request's path).
    pub async fn touch_token(&self, token_id: &str, at_ms: i64) -> Result<()> {
        self.pool()
            .execute(
                "UPDATE weft_tokens SET last_used_at = $2 WHERE token_id = $1",
                args![token_id, at_ms],
            )
            .await?;
        Ok(())
    }

    /// The token that claimed each of these leases, for the leases that
    /// exist: `(lease_id, token_id)`, `None` for a lease claimed with
    /// authentication off. A lease's token never changes, so the answer
    /// stays true for as long as the lease lives.
    pub async fn lease_tokens(&self, lease_ids: &[&str]) -> Result<Vec<(String, Option<String>)>> {
        if lease_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .pool()
            .fetch_all(
                &format!(
                    "SELECT lease_id, token_id FROM weft_leases WHERE lease_id IN ({})",
                    crate::db::placeholders(1, lease_ids.len())
                ),
                lease_ids
                    .iter()
                    .map(|id| crate::db::Arg::from(*id))
                    .collect(),
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.text("lease_id")?, row.opt_text("token_id")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Pepper;

    #[test]
    fn split_and_verify() {
        let pepper = Pepper::new("0123456789abcdef0123").unwrap();
        let (id, secret) = pepper.split("weft_0011223344556677_s3cret");
        assert_eq!((id.as_str(), secret), ("0011223344556677", "s3cret"));
        // Any other shape is looked up by a derived id and checked whole.
        let (id, secret) = pepper.split("case-admin-token");
        assert_eq!(id.len(), 16);
        assert_eq!(secret, "case-admin-token");
        assert_eq!(pepper.split("case-admin-token").0, id);
        let salt = [7u8; 16];
        let hash = hex::encode(pepper.digest(&salt, "s3cret"));
        assert!(pepper.verify(&hex::encode(salt), &hash, "s3cret"));
        assert!(!pepper.verify(&hex::encode(salt), &hash, "s3creT"));
        assert!(!pepper.verify("zz", &hash, "s3cret"));
        let other = Pepper::new("another pepper of enough length").unwrap();
        assert!(!other.verify(&hex::encode(salt), &hash, "s3cret"));
        assert!(Pepper::new("short").is_err());
    }
}
