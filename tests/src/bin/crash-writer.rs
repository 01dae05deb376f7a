//! A process for the crash tests of `tests/tests/atomic_writes.rs`: one write of an order through
//! the migrator whose non-authoritative side waits on an advisory lock the test holds, so the
//! test can `kill -9` this process between the two sides.
//!
//! `crash-writer GRPC_URL TOKEN DATABASE_URL MIGRATION ORDER_ID atomic|separate`

use std::time::Duration;
use switchyard_client::Client;

/// The advisory lock the new side waits on.
const LOCK: i64 = 4242;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, token, database, migration, id, mode] = &args[..] else {
        panic!(
            "usage: crash-writer GRPC_URL TOKEN DATABASE_URL MIGRATION ORDER_ID atomic|separate"
        );
    };
    let id: i64 = id.parse().expect("ORDER_ID is an integer");
    let client = Client::builder(server.as_str(), token.as_str(), "crash-writer")
        .startup_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connecting to the server");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(
            database
                .parse::<sqlx::postgres::PgConnectOptions>()
                .expect("a Postgres URL")
                .application_name("crash-writer"),
        )
        .await
        .expect("connecting to the database");
    let migrator = client.migrator(migration);
    let entity = id.to_string();
    match mode.as_str() {
        "atomic" => {
            migrator
                .write_atomic(
                    &pool,
                    &entity,
                    |tx| async move {
                        sqlx::query("INSERT INTO orders (id, address) VALUES ($1, 'old')")
                            .bind(id)
                            .execute(&mut **tx.lock().await)
                            .await
                            .map(drop)
                    },
                    |tx| async move {
                        let mut tx = tx.lock().await;
                        sqlx::query("SELECT pg_advisory_xact_lock($1)")
                            .bind(LOCK)
                            .execute(&mut **tx)
                            .await?;
                        sqlx::query("INSERT INTO shipments (order_id, address) VALUES ($1, 'new')")
                            .bind(id)
                            .execute(&mut **tx)
                            .await
                            .map(drop)
                    },
                )
                .await
                .expect("the write");
        }
        "separate" => {
            migrator
                .write(
                    &entity,
                    || async {
                        sqlx::query("INSERT INTO orders (id, address) VALUES ($1, 'old')")
                            .bind(id)
                            .execute(&pool)
                            .await
                            .map(drop)
                    },
                    || async {
                        let mut conn = pool.acquire().await?;
                        sqlx::query("SELECT pg_advisory_lock($1)")
                            .bind(LOCK)
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("INSERT INTO shipments (order_id, address) VALUES ($1, 'new')")
                            .bind(id)
                            .execute(&mut *conn)
                            .await
                            .map(drop)
                    },
                )
                .await
                .expect("the write");
        }
        other => panic!("unknown mode {other:?}: atomic or separate"),
    }
    println!("written");
}
