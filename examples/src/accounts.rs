//! The accounts service of `accounts.locale-required`: a value kept in a JSON blob
//! (`settings->>'locale'`, English when absent) becomes a required column (`locale text NOT
//! NULL`).
//!
//! The steps of adding a required column: the column is added nullable (the expand), the
//! application writes it beside the old place (dual writes), the backfill fills every existing
//! row (including the default for accounts that never had the key), and only then is it made
//! `NOT NULL`, through a `CHECK … NOT VALID` that is validated without blocking writers (the
//! contract). Making it required is what breaks an old writer, so it waits behind the gate.
//!
//! Both shapes live in one row of one database, so every write runs both sides in one
//! transaction ([`Migrator::write_atomic`]): a crash between the sides leaves neither.

use crate::Entities;
use sqlx::{PgPool, Postgres, Transaction};
use switchyard_client::Migrator;
use switchyard_client::atomic::TxHandle;
use switchyard_client::postgres::PgBackfill;

pub const MIGRATION: &str = "accounts.locale-required";

/// The schema files, in order: create, expand, contract.
pub const MIGRATION_FILES: [&str; 3] = [
    "0001_create_accounts.sql",
    "0002_add_locale.sql",
    "0003_require_locale.sql",
];

/// The folder of the files, under `examples/`.
pub const MIGRATIONS_DIR: &str = "locale-required/migrations";

const LOCALES: [&str; 6] = ["en", "de", "fr", "ja", "pt-BR", "es"];

type Tx = TxHandle<Transaction<'static, Postgres>>;

pub struct Accounts {
    pool: PgPool,
    migrator: Migrator,
}

impl Accounts {
    pub fn new(pool: PgPool, migrator: Migrator) -> Accounts {
        Accounts { pool, migrator }
    }

    /// The account's locale.
    pub async fn locale(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        let entity = id.to_string();
        self.migrator
            .read(
                &entity,
                || {
                    self.text(
                        id,
                        "SELECT coalesce(settings->>'locale', 'en') FROM accounts WHERE id = $1",
                    )
                },
                || self.text(id, "SELECT locale FROM accounts WHERE id = $1"),
            )
            .await
    }

    /// Changes an account's locale.
    pub async fn set_locale(&self, id: i64, locale: &str) -> Result<(), sqlx::Error> {
        self.migrator
            .write_atomic(
                &self.pool,
                &id.to_string(),
                |tx| {
                    run(
                        tx,
                        "UPDATE accounts SET settings = jsonb_set(settings, '{locale}', \
                         to_jsonb($2::text)) WHERE id = $1",
                        id,
                        locale,
                    )
                },
                |tx| {
                    run(
                        tx,
                        "UPDATE accounts SET locale = $2 WHERE id = $1",
                        id,
                        locale,
                    )
                },
            )
            .await
            .map(drop)
    }

    /// Opens an account; returns its id. Each side creates the row if the other has not (the
    /// old side runs first until `live`, the new side from `live` on), so each names every
    /// required column it knows.
    pub async fn open(&self, locale: &str) -> Result<i64, sqlx::Error> {
        let id: i64 =
            sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('accounts', 'id'))")
                .fetch_one(&self.pool)
                .await?;
        self.migrator
            .write_atomic(
                &self.pool,
                &id.to_string(),
                |tx| {
                    run(
                        tx,
                        "INSERT INTO accounts (id, name, settings) \
                         VALUES ($1, 'example', jsonb_build_object('locale', $2::text)) \
                         ON CONFLICT (id) DO UPDATE \
                         SET settings = jsonb_set(accounts.settings, '{locale}', to_jsonb($2::text))",
                        id,
                        locale,
                    )
                },
                |tx| {
                    run(
                        tx,
                        "INSERT INTO accounts (id, name, locale) VALUES ($1, 'example', $2) \
                         ON CONFLICT (id) DO UPDATE SET locale = EXCLUDED.locale",
                        id,
                        locale,
                    )
                },
            )
            .await?;
        Ok(id)
    }

    async fn text(&self, id: i64, sql: &str) -> Result<Option<String>, sqlx::Error> {
        crate::text_by_id(&self.pool, sql, id).await
    }
}

/// One side's statement in the write's transaction.
async fn run(tx: Tx, sql: &str, id: i64, locale: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql)
        .bind(id)
        .bind(locale)
        .execute(&mut **tx.lock().await)
        .await
        .map(drop)
}

/// The locale the seed gives account `id`: every fifth account has none in its settings (and so
/// speaks the default, English).
pub fn seeded_locale(id: i64) -> String {
    if id % 5 == 0 {
        "en".to_owned()
    } else {
        LOCALES[(id % 4) as usize].to_owned()
    }
}

/// Inserts accounts 1..=rows (in the old shape) and moves the id sequence past them.
pub async fn seed(pool: &PgPool, rows: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO accounts (id, name, settings) \
         SELECT g, 'account-' || g, CASE WHEN g % 5 = 0 THEN '{\"theme\": \"dark\"}'::jsonb \
         ELSE jsonb_build_object('locale', (ARRAY['en', 'de', 'fr', 'ja'])[g % 4 + 1]) END \
         FROM generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(pool)
    .await?;
    crate::seeded(pool, "accounts", rows).await
}

/// The backfill: the column from the JSON, with the default where the key is missing.
pub fn backfill(pool: PgPool) -> PgBackfill {
    PgBackfill::new(
        pool,
        "accounts",
        "id",
        "locale = coalesce(settings->>'locale', 'en')",
    )
    .pending("locale IS DISTINCT FROM coalesce(settings->>'locale', 'en')")
}

/// Every account's locale in the new shape (the column), by id.
pub async fn new_shape(pool: &PgPool) -> Result<Vec<(i64, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT id, locale FROM accounts ORDER BY id")
        .fetch_all(pool)
        .await
}

impl Entities for Accounts {
    type Value = String;

    fn seeded(&self, id: i64) -> String {
        seeded_locale(id)
    }

    fn fresh(&self, worker: usize, n: u64) -> String {
        LOCALES[(worker + n as usize) % LOCALES.len()].to_owned()
    }

    async fn read(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        self.locale(id).await
    }

    async fn update(&self, id: i64, value: &String) -> Result<(), sqlx::Error> {
        self.set_locale(id, value).await
    }

    async fn insert(&self, value: &String) -> Result<i64, sqlx::Error> {
        self.open(value).await
    }
}
