//! API tokens: only their hashes are stored; a revoked token stays listed.

use super::rows::{TokenRecord, TokenRow};
use super::{Store, StoreError};
use std::collections::HashMap;
use switchyard_domain::{KeyPattern, Role, Scope};

/// SQL that is true when the instance aliased `i` may evaluate migration `{key}` (a
/// placeholder): its token is unscoped (or unknown: an instance from before owners were
/// recorded), or one of the token's patterns is the key or a prefix of it. The rules and the
/// instance lists count only such instances for a migration.
pub(super) fn instance_covers(key: &str) -> String {
    format!(
        "(NOT EXISTS (SELECT 1 FROM token_scopes s WHERE s.token_id = i.token_id) \
         OR EXISTS (SELECT 1 FROM token_scopes s WHERE s.token_id = i.token_id \
         AND (s.pattern = {key} OR (s.pattern LIKE '%*' \
         AND substr({key}, 1, length(s.pattern) - 1) = substr(s.pattern, 1, length(s.pattern) - 1)))))"
    )
}

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
        scope: &Scope,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<TokenRecord, StoreError> {
        let id = self
            .write(|tx| {
                Box::pin(async move {
                    let id = sqlx::query_scalar::<_, i64>(
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
                    })?;
                    for pattern in scope.texts() {
                        sqlx::query("INSERT INTO token_scopes (token_id, pattern) VALUES ($1, $2)")
                            .bind(id)
                            .bind(pattern)
                            .execute(&mut **tx)
                            .await?;
                    }
                    Ok(id)
                })
            })
            .await?;
        Ok(TokenRecord {
            id: id as u64,
            name: name.to_owned(),
            role,
            scope: scope.clone(),
            created_at_ms: now_ms,
            revoked_at_ms: None,
        })
    }

    /// The scopes of the tokens `ids` (every token: `None`), unscoped ones absent.
    async fn scopes(&self, id: Option<i64>) -> Result<HashMap<i64, Scope>, StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT token_id, pattern FROM token_scopes WHERE $1 IS NULL OR token_id = $1 \
             ORDER BY token_id, pattern",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut patterns: HashMap<i64, Vec<String>> = HashMap::new();
        for (token, pattern) in rows {
            patterns.entry(token).or_default().push(pattern);
        }
        patterns
            .into_iter()
            .map(|(token, texts)| {
                // Stored only after parsing: a pattern that no longer parses is a corrupt row,
                // not something to widen to every migration.
                for text in &texts {
                    KeyPattern::parse(text).map_err(|e| {
                        StoreError::Corrupt(format!("token {token}: scope {text:?}: {}", e.0))
                    })?;
                }
                Ok((token, Scope::parse(&texts).expect("each pattern parsed")))
            })
            .collect()
    }

    async fn with_scopes(
        &self,
        rows: Vec<TokenRow>,
        only: Option<i64>,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let mut scopes = self.scopes(only).await?;
        rows.into_iter()
            .map(|row| {
                let scope = scopes.remove(&row.id).unwrap_or_default();
                row.into_record(scope)
            })
            .collect()
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
        let Some(row) = row else { return Ok(None) };
        let id = row.id;
        Ok(self.with_scopes(vec![row], Some(id)).await?.pop())
    }

    /// The live (not revoked) token with this id.
    pub async fn live_token(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at_ms, revoked_at_ms FROM api_tokens \
             WHERE id = $1 AND revoked_at_ms IS NULL",
        )
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id = row.id;
        Ok(self.with_scopes(vec![row], Some(id)).await?.pop())
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
        self.with_scopes(rows, None).await
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
        let row = TokenRow {
            id,
            name,
            role,
            created_at_ms,
            revoked_at_ms,
        };
        let record = self.with_scopes(vec![row], Some(id)).await?.remove(0);
        Ok((record, hash))
    }
}
