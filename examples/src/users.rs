//! The users service of the column rename `users.username` → `users.handle`.
//!
//! Both shapes live in the same row, so every write in either shape is an upsert on the row's
//! id: whichever side runs first (old until `live`, new from `live` on) creates the row, the
//! other fills in its column. Ids come from the table's sequence before the write, so both sides
//! agree on them.
//!
//! A dual write is two statements. Two writers changing the same user at once can interleave
//! (A old, B old, B new, A new) and leave the shapes holding different names; shadow reads
//! would report it. Services where that can happen run both sides in one transaction (the
//! shapes share a database here) or serialize writes per entity; the load generator does the
//! latter, each worker owning its users.

use crate::Entities;
use sqlx::PgPool;
use switchyard_client::Migrator;
use switchyard_client::postgres::PgBackfill;

/// The migration's key, as created with `switchyard migration create`.
pub const MIGRATION: &str = "users.username-to-handle";

/// The schema files, in order: create, expand, contract.
pub const MIGRATION_FILES: [&str; 3] = [
    "0001_create_users.sql",
    "0002_add_handle.sql",
    "0003_drop_username.sql",
];

pub struct Users {
    pool: PgPool,
    migrator: Migrator,
    corrupt_new_writes: bool,
}

impl Users {
    pub fn new(pool: PgPool, migrator: Migrator) -> Users {
        Users {
            pool,
            migrator,
            corrupt_new_writes: false,
        }
    }

    /// Writes a wrong value to the new shape (drops the name's last character): the kind of bug
    /// in new-shape code that shadow reads exist to catch. Used by the negative drill.
    pub fn with_corrupt_new_writes(mut self) -> Users {
        self.corrupt_new_writes = true;
        self
    }

    /// The user's name.
    pub async fn name(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        let entity = id.to_string();
        self.migrator
            .read(
                &entity,
                || self.column(id, "SELECT username FROM users WHERE id = $1"),
                || self.column(id, "SELECT handle FROM users WHERE id = $1"),
            )
            .await
    }

    /// Renames a user.
    pub async fn rename(&self, id: i64, name: &str) -> Result<(), sqlx::Error> {
        let entity = id.to_string();
        let new_value = self.new_shape_value(name);
        self.migrator
            .write(
                &entity,
                || self.set(id, name, "UPDATE users SET username = $2 WHERE id = $1"),
                || self.set(id, &new_value, "UPDATE users SET handle = $2 WHERE id = $1"),
            )
            .await
    }

    /// Creates a user; returns its id.
    pub async fn create(&self, name: &str) -> Result<i64, sqlx::Error> {
        let id: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('users', 'id'))")
            .fetch_one(&self.pool)
            .await?;
        let entity = id.to_string();
        let new_value = self.new_shape_value(name);
        self.migrator
            .write(
                &entity,
                || {
                    self.set(
                        id,
                        name,
                        "INSERT INTO users (id, username) VALUES ($1, $2) \
                         ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username",
                    )
                },
                || {
                    self.set(
                        id,
                        &new_value,
                        "INSERT INTO users (id, handle) VALUES ($1, $2) \
                         ON CONFLICT (id) DO UPDATE SET handle = EXCLUDED.handle",
                    )
                },
            )
            .await?;
        Ok(id)
    }

    fn new_shape_value(&self, name: &str) -> String {
        if self.corrupt_new_writes {
            let mut wrong = name.to_owned();
            wrong.pop();
            wrong
        } else {
            name.to_owned()
        }
    }

    async fn column(&self, id: i64, sql: &str) -> Result<Option<String>, sqlx::Error> {
        crate::text_by_id(&self.pool, sql, id).await
    }

    async fn set(&self, id: i64, value: &str, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::query(sql)
            .bind(id)
            .bind(value)
            .execute(&self.pool)
            .await
            .map(drop)
    }
}

/// The name the seed gives user `id`.
pub fn seeded_name(id: i64) -> String {
    format!("user-{id}")
}

/// Inserts users 1..=rows (in the old shape) and moves the id sequence past them.
pub async fn seed(pool: &PgPool, rows: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, username) SELECT g, 'user-' || g FROM generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(pool)
    .await?;
    crate::seeded(pool, "users", rows).await
}

/// The backfill: copy `username` into `handle` where they differ.
pub fn backfill(pool: PgPool) -> PgBackfill {
    PgBackfill::new(pool, "users", "id", "handle = username")
        .pending("handle IS DISTINCT FROM username")
}

impl Entities for Users {
    type Value = String;

    fn seeded(&self, id: i64) -> String {
        seeded_name(id)
    }

    fn fresh(&self, worker: usize, n: u64) -> String {
        format!("w{worker}-name-{n}")
    }

    async fn read(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        self.name(id).await
    }

    async fn update(&self, id: i64, value: &String) -> Result<(), sqlx::Error> {
        self.rename(id, value).await
    }

    async fn insert(&self, value: &String) -> Result<i64, sqlx::Error> {
        self.create(value).await
    }
}
