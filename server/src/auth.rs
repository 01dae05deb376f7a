//! Bearer tokens with roles. Tokens are random secrets shown once; only their SHA-256 is stored
//! (they carry 192 bits of entropy, so a slow password hash would add nothing). Verified tokens
//! are cached briefly with moka so the hot read paths (decide, snapshot) do not hit the database.

use crate::error::ApiError;
use crate::store::{Store, StoreError, TokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use switchyard_domain::{Permission, Role};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: u64,
    pub name: String,
    pub role: Role,
}

impl Principal {
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "token {:?} has role {} which may not {}",
                self.name,
                self.role.as_str(),
                permission.describe()
            )))
        }
    }

    /// The actor name written to the audit log.
    pub fn actor(&self) -> String {
        format!("{} (token {})", self.name, self.token_id)
    }
}

/// A new random token: `sy_` and 48 hex digits.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("sy_{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub struct Authenticator {
    store: Arc<Store>,
    /// hash → token; misses are cached too so a flood of bad tokens does not reach the store.
    cache: moka::future::Cache<String, Option<Principal>>,
}

impl Authenticator {
    /// How long a verified token is trusted without asking the store: bounds how long a token
    /// revoked through another replica keeps working.
    pub const CACHE_TTL: Duration = Duration::from_secs(10);

    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Self::CACHE_TTL)
                .build(),
        }
    }

    /// Resolves an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        let header = header.ok_or_else(|| {
            ApiError::Unauthenticated(
                "missing bearer token: send `Authorization: Bearer <token>`".to_owned(),
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "malformed Authorization header: expected `Bearer <token>`".to_owned(),
                )
            })?;
        let hash = hash_token(token);
        let store = self.store.clone();
        let found = self
            .cache
            .try_get_with(hash.clone(), async move {
                store.find_token(&hash).await.map(|t| t.map(principal))
            })
            .await
            .map_err(|e: Arc<StoreError>| ApiError::Internal(e.to_string()))?;
        found.ok_or_else(|| ApiError::Unauthenticated("unknown or revoked token".to_owned()))
    }

    pub async fn forget(&self, token_hash: &str) {
        self.cache.invalidate(token_hash).await;
    }
}

fn principal(t: TokenRecord) -> Principal {
    Principal {
        token_id: t.id,
        name: t.name,
        role: t.role,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with("sy_") && a.len() == 51);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(hash_token(&a).len(), 64);
    }
}
