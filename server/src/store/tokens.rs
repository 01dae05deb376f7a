//! API tokens: only their hashes are stored; a revoked token stays listed.

use super::rows::{TokenRecord, TokenRow};
use super::{Store, StoreError};
use switchyard_domain::Role;

impl Store {
    pub async fn count_tokens(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<TokenRecord, StoreError> {
        let id = self
            .write(|tx| {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>(
                        "INSERT INTO api_tokens (name, role, token_hash, created_at_ms) \
                         VALUES ($1, $2, $3, $4) RETURNING id",
                    )
                    .bind(name)
                    .bind(role.as_str())
                    .bind(token_hash)
                    .bind(now_ms)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(|e| match e {
                        sqlx::Error::Database(db) if db.is_unique_violation() => {
                            StoreError::AlreadyExists(format!("token named {name}"))
                        }
                        other => other.into(),
                    })
                })
            })
            .await?;
        Ok(TokenRecord {
            id: id as u64,
            name: name.to_owned(),
            role,
            created_at_ms: now_ms,
            revoked_at_ms: None,
        })
    }

    /// The live (not revoked) token with this hash.
    pub async fn find_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at_ms, revoked_at_ms FROM api_tokens \
             WHERE token_hash = $1 AND revoked_at_ms IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(TokenRow::into_record).transpose()
    }

    /// The ids of the tokens revoked after `after_ms` (by their `revoked_at_ms`), with the
    /// latest such time. The caller re-reads a margin before the latest time it saw, since
    /// revoke times come from each replica's clock and commit a little after they are taken.
    pub async fn tokens_revoked_after(
        &self,
        after_ms: i64,
    ) -> Result<(Vec<u64>, Option<i64>), StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, revoked_at_ms FROM api_tokens \
             WHERE revoked_at_ms IS NOT NULL AND revoked_at_ms > $1",
        )
        .bind(after_ms)
        .fetch_all(&self.pool)
        .await?;
        let latest = rows.iter().map(|&(_, at)| at).max();
        Ok((rows.into_iter().map(|(id, _)| id as u64).collect(), latest))
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at_ms, revoked_at_ms FROM api_tokens ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TokenRow::into_record).collect()
    }

    /// Revokes a token; returns its record and hash (so caches can drop it).
    pub async fn revoke_token(
        &self,
        id: u64,
        now_ms: i64,
    ) -> Result<(TokenRecord, String), StoreError> {
        let row: Option<(i64, String, String, i64, Option<i64>, String)> = self
            .write(|tx| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE api_tokens SET revoked_at_ms = $1 \
                         WHERE id = $2 AND revoked_at_ms IS NULL",
                    )
                    .bind(now_ms)
                    .bind(id as i64)
                    .execute(&mut **tx)
                    .await?;
                    // Wakes the other replicas' followers, which read revocations beside
                    // changes (`tokens_revoked_after`): their caches and open streams drop the
                    // token now rather than when its cache entry expires. No snapshot version
                    // is taken: a revoke is not a migration change, and a version without an
                    // audit row would read as a gap to the hub.
                    self.announce(tx, "token_revoked").await?;
                    Ok(sqlx::query_as(
                        "SELECT id, name, role, created_at_ms, revoked_at_ms, token_hash \
                         FROM api_tokens WHERE id = $1",
                    )
                    .bind(id as i64)
                    .fetch_optional(&mut **tx)
                    .await?)
                })
            })
            .await?;
        let (id, name, role, created_at_ms, revoked_at_ms, hash) =
            row.ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
        let record = TokenRow {
            id,
            name,
            role,
            created_at_ms,
            revoked_at_ms,
        }
        .into_record()?;
        Ok((record, hash))
    }
}
