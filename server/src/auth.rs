//! Bearer tokens with roles. Tokens are random secrets shown once; only their SHA-256 is stored
//! (they carry 192 bits of entropy, so a slow password hash would add nothing). Verified tokens
//! are cached briefly with moka so the hot read paths (decide, snapshot) do not hit the database.
//!
//! The cache alone would let a revoked token work until its entry expires, and an open watch
//! authenticates only once. [`Revocations`] closes both gaps: it is the set of tokens this
//! replica knows to be revoked (from its own revokes at once, from other replicas' through the
//! hub's follower), checked on every cache hit and awaited by every open watch stream.

use crate::error::ApiError;
use crate::store::{Store, StoreError, TokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchyard_domain::{Permission, Role, Scope};
use tokio::sync::watch;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: u64,
    pub name: String,
    pub role: Role,
    /// The migrations it may see and act on.
    pub scope: Scope,
}

impl Principal {
    /// `permission` on migration `key`: the role must grant it and the scope cover the key.
    /// The scope is checked whether or not the migration exists, so a refusal says nothing of
    /// what lies outside the scope.
    pub fn require_on(&self, permission: Permission, key: &str) -> Result<(), ApiError> {
        self.require(permission)?;
        if self.scope.covers(key) {
            return Ok(());
        }
        Err(ApiError::PermissionDenied(format!(
            "token {:?} is scoped to {} and may not see or change migration {key:?}; use a \
             token whose scope covers it",
            self.name, self.scope
        )))
    }

    /// Whether lists and streams show migration `key` to this caller.
    pub fn sees(&self, key: &str) -> bool {
        self.scope.covers(key)
    }

    /// A permission that concerns no one migration (listing, tokens).
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

    /// Why an open stream authenticated as this caller ended.
    pub fn revoked(&self) -> ApiError {
        ApiError::Unauthenticated(format!(
            "token {:?} (id {}) was revoked; this stream has ended",
            self.name, self.token_id
        ))
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
    hex::encode(digest(token))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The ids of the tokens this replica knows to be revoked.
///
/// A `watch` channel rather than a broadcast: a stream that subscribes after a revoke still sees
/// it (no window between authenticating and subscribing), none can lag behind, and a revoke wakes
/// every open stream, each of which checks one id. Revocation is permanent and tokens are made
/// by hand, so the set only grows and stays small.
#[derive(Debug)]
pub struct Revocations(watch::Sender<HashSet<u64>>);

impl Default for Revocations {
    fn default() -> Self {
        Self(watch::channel(HashSet::new()).0)
    }
}

impl Revocations {
    /// Records revoked tokens; open streams authenticated with them end.
    pub fn revoke(&self, ids: impl IntoIterator<Item = u64>) {
        self.0.send_if_modified(|set| {
            let before = set.len();
            set.extend(ids);
            set.len() != before
        });
    }

    pub fn contains(&self, id: u64) -> bool {
        self.0.borrow().contains(&id)
    }

    /// Resolves once `id` is revoked (at once if it already is); never if the set is dropped.
    pub fn revoked(&self, id: u64) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.0.subscribe();
        async move {
            // `wait_for`'s guard is not `Send`: drop it before anything else awaits.
            if rx
                .wait_for(|set| set.contains(&id))
                .await
                .map(|_| ())
                .is_err()
            {
                std::future::pending::<()>().await;
            }
        }
    }
}

pub struct Authenticator {
    store: Arc<Store>,
    revocations: Arc<Revocations>,
    /// hash → token; misses are cached too so a flood of bad tokens does not reach the store.
    cache: moka::future::Cache<String, Option<Principal>>,
    /// Tells this authenticator's entries in the per-thread [`Recent`] caches from another's
    /// (tests run several servers in one process).
    id: u64,
    /// Bumped by `forget`: per-thread entries of an older generation are not used.
    generation: AtomicU64,
}

/// A token one thread verified recently. Each thread keeps its last few in front of the shared
/// cache, because a hit there costs the token's digest and a compare: no hex text, no lock, no
/// allocation but the principal's clone (the shared cache's read was a tenth of a server-side
/// decide). Entries are used for [`RECENT_FOR`], so a token is trusted without the store for
/// at most `CACHE_TTL` plus that; a revoke is still refused at once (checked on every hit), and
/// `forget` retires every thread's entries through the generation.
struct Recent {
    owner: u64,
    generation: u64,
    digest: [u8; 32],
    until: Instant,
    principal: Principal,
}

const RECENT_FOR: Duration = Duration::from_secs(1);
/// A service presents one or a few tokens; a thread remembers this many.
const RECENT_SLOTS: usize = 4;

thread_local! {
    /// The slots and the next one to overwrite.
    static RECENT: RefCell<([Option<Recent>; RECENT_SLOTS], usize)> = RefCell::default();
}

static NEXT_AUTHENTICATOR: AtomicU64 = AtomicU64::new(0);

impl Authenticator {
    /// How long a verified token is trusted without asking the store. A revoke reaches the
    /// cache sooner through [`Revocations`] (other replicas learn of it from the change feed);
    /// this bounds it only if that feed is down.
    pub const CACHE_TTL: Duration = Duration::from_secs(10);

    pub fn new(store: Arc<Store>, revocations: Arc<Revocations>) -> Self {
        Self {
            store,
            revocations,
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Self::CACHE_TTL)
                .build(),
            id: NEXT_AUTHENTICATOR.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
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
        let digest = digest(token);
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(p) = self.recent(&digest, generation) {
            if !self.revocations.contains(p.token_id) {
                return Ok(p);
            }
        }
        let hash = hex::encode(digest);
        // A hit reads the shared cache by reference; only a miss builds the owned key and the
        // lookup that `try_get_with` shares among concurrent missers.
        let found = match self.cache.get(&hash).await {
            Some(found) => found,
            None => {
                let store = self.store.clone();
                let lookup = hash.clone();
                self.cache
                    .try_get_with(hash.clone(), async move {
                        store.find_token(&lookup).await.map(|t| t.map(principal))
                    })
                    .await
                    .map_err(|e: Arc<StoreError>| ApiError::Internal(e.to_string()))?
            }
        };
        match found {
            // Checked on every hit rather than only invalidating by hash when a revoke is
            // learned: a lookup that read the row just before the revoke committed may insert
            // its entry after that invalidation, and this check still refuses it.
            Some(p) if self.revocations.contains(p.token_id) => {
                self.forget(&hash).await;
                Err(unknown_or_revoked())
            }
            Some(p) => {
                self.remember(digest, generation, &p);
                Ok(p)
            }
            None => Err(unknown_or_revoked()),
        }
    }

    /// This thread's entry for the digest, if it is this authenticator's, current and fresh.
    fn recent(&self, digest: &[u8; 32], generation: u64) -> Option<Principal> {
        RECENT.with_borrow(|(slots, _)| {
            slots.iter().flatten().find_map(|r| {
                (r.owner == self.id
                    && r.generation == generation
                    && r.digest == *digest
                    && Instant::now() < r.until)
                    .then(|| r.principal.clone())
            })
        })
    }

    fn remember(&self, digest: [u8; 32], generation: u64, principal: &Principal) {
        RECENT.with_borrow_mut(|(slots, next)| {
            slots[*next] = Some(Recent {
                owner: self.id,
                generation,
                digest,
                until: Instant::now() + RECENT_FOR,
                principal: principal.clone(),
            });
            *next = (*next + 1) % RECENT_SLOTS;
        });
    }

    /// The revoked tokens this replica knows of.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    pub async fn forget(&self, token_hash: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(token_hash).await;
    }
}

fn unknown_or_revoked() -> ApiError {
    ApiError::Unauthenticated("unknown or revoked token".to_owned())
}

fn principal(t: TokenRecord) -> Principal {
    Principal {
        token_id: t.id,
        name: t.name,
        role: t.role,
        scope: t.scope,
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

    /// The per-thread entries in front of the shared cache: a revoke still refuses at once, a
    /// forgotten token is asked of the store again, and two authenticators on one thread (two
    /// servers in one process) never answer from each other's entries.
    #[tokio::test(flavor = "current_thread")]
    async fn a_thread_s_recent_tokens_keep_the_shared_cache_s_rules() {
        let dir = std::env::temp_dir().join(format!("sy-auth-{}", generate_token()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = |name: &str| format!("sqlite://{}", dir.join(name).display());
        let store = Arc::new(Store::connect(&url("a.db")).await.unwrap());
        let other = Authenticator::new(
            Arc::new(Store::connect(&url("b.db")).await.unwrap()),
            Arc::default(),
        );
        let revocations = Arc::new(Revocations::default());
        let auth = Authenticator::new(store.clone(), revocations.clone());
        let mut tokens = Vec::new();
        for name in ["revoked", "forgotten"] {
            let token = generate_token();
            let record = store
                .create_token(name, Role::Reader, &Scope::all(), &hash_token(&token), 1)
                .await
                .unwrap();
            tokens.push((record.id, token));
        }
        let header = |token: &str| format!("Bearer {token}");
        for (_, token) in &tokens {
            // The second call is answered from this thread's entry.
            for _ in 0..2 {
                auth.authenticate(Some(&header(token))).await.unwrap();
            }
            other
                .authenticate(Some(&header(token)))
                .await
                .expect_err("unknown to the other server's store");
        }

        let (revoked_id, revoked) = &tokens[0];
        revocations.revoke([*revoked_id]);
        auth.authenticate(Some(&header(revoked)))
            .await
            .expect_err("revoked while remembered");

        // Revoked in the store only: until forgotten it may be trusted from the caches (that
        // is what `Revocations` is for); once forgotten, the store is asked.
        let (forgotten_id, forgotten) = &tokens[1];
        store.revoke_token(*forgotten_id, 2).await.unwrap();
        auth.forget(&hash_token(forgotten)).await;
        auth.authenticate(Some(&header(forgotten)))
            .await
            .expect_err("forgotten, then asked of the store");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
