//! Evaluation and migrator overhead (divan). `cargo bench -p switchyard-client`.
//!
//! The client starts from a bootstrap file (no server), so nothing but evaluation runs on the
//! measured thread. Keys rotate through 4,096 precomputed entity keys so the hash really runs.

use std::convert::Infallible;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use switchyard_client::atomic::{BeginTransaction, WriteTransaction};
use switchyard_client::{Client, MigrationHandle, Migrator};
use switchyard_domain::{BasisPoints, Migration, MigrationKey, NewMigration, Stage, Version};
use switchyard_proto::json;

fn main() {
    divan::main();
}

struct Fixture {
    client: Client,
    split: MigrationHandle,
    compare_none: Migrator,
    compare_all: Migrator,
    keys: Vec<String>,
    _runtime: tokio::runtime::Runtime,
}

/// Every bench migration's salt.
const SALT: u64 = 0x5eed;

fn migration(key: &str, stage: Stage, rollout: u32, sample: u32, version: u64) -> Migration {
    let mut m = Migration::create(
        NewMigration {
            key: MigrationKey::parse(key).unwrap(),
            description: String::new(),
            owner: String::new(),
            entity_kind: "user_id".into(),
            soak_seconds: 0,
            expected_services: vec![],
            has_backfill: false,
            shadow_sample: BasisPoints::new(sample).unwrap(),
            database: Default::default(),
            retire_probation_seconds: None,
        },
        SALT,
        Version(version),
        0,
    );
    m.stage = stage;
    m.rollout_bp = BasisPoints::new(rollout).unwrap();
    m
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bootstrap.json");
        let snapshot = serde_json::json!({
            "version": 3,
            "migrations": [
                json::Migration::from(&migration("bench.split", Stage::Live, 5_000, 0, 1)),
                json::Migration::from(&migration("bench.compare-none", Stage::Live, 10_000, 0, 2)),
                json::Migration::from(&migration("bench.compare-all", Stage::Live, 10_000, 10_000, 3)),
            ],
        });
        std::fs::write(&path, snapshot.to_string()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            Client::builder("http://127.0.0.1:9", "unused", "bench")
                .startup_timeout(Duration::from_millis(50))
                .bootstrap_file(&path)
                .backoff(Duration::from_secs(60), Duration::from_secs(600))
                .connect()
                .await
                .unwrap()
        });
        Fixture {
            split: client.handle("bench.split"),
            compare_none: client.migrator("bench.compare-none"),
            compare_all: client.migrator("bench.compare-all"),
            keys: (0..4096).map(|i| format!("user-{i}")).collect(),
            client,
            _runtime: runtime,
        }
    })
}

/// The irreducible work of a decision, on the same keys: xxh3 of the entity key seeded with the
/// migration's salt, modulo the buckets, compared with the rollout. `stage()` is measured
/// against this.
#[divan::bench(threads = [1, 2])]
fn bare_bucket_compare(bencher: divan::Bencher) {
    let f = fixture();
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 1) & 4095;
        let bucket = switchyard_domain::bucket(
            divan::black_box(SALT),
            divan::black_box(f.keys[i].as_bytes()),
        );
        if bucket < divan::black_box(5_000) {
            Stage::Live
        } else {
            Stage::Shadow
        }
    });
}

/// `stage()` on a pre-resolved handle (single thread; with `threads` for scaling).
#[divan::bench(threads = [1, 2])]
fn stage_by_handle(bencher: divan::Bencher) {
    let f = fixture();
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 1) & 4095;
        f.split.stage(divan::black_box(f.keys[i].as_bytes()))
    });
}

/// `stage()` by migration name, the same one every call (a request handler's case): the
/// thread's memory of the slot it evaluated last, then the same evaluation.
#[divan::bench(threads = [1, 2])]
fn stage_by_name(bencher: divan::Bencher) {
    let f = fixture();
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 1) & 4095;
        f.client.stage(
            divan::black_box("bench.split"),
            divan::black_box(f.keys[i].as_bytes()),
        )
    });
}

/// `stage()` by name, alternating between two migrations: each call finds its slot in the
/// thread's cached map (a hash and a probe) rather than as the slot it evaluated last.
#[divan::bench(threads = [1, 2])]
fn stage_by_name_alternating(bencher: divan::Bencher) {
    let f = fixture();
    let names = ["bench.split", "bench.compare-none"];
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 1) & 4095;
        f.client.stage(
            divan::black_box(names[i & 1]),
            divan::black_box(f.keys[i].as_bytes()),
        )
    });
}

/// Baseline for the migrator: the two closures alone, joined, without the migrator.
#[divan::bench]
fn closures_alone(bencher: divan::Bencher) {
    bencher.bench_local(|| {
        futures::executor::block_on(async {
            let old = || async { Ok::<u64, Infallible>(1) };
            let new = || async { Ok::<u64, Infallible>(1) };
            let (a, b) = futures::join!(old(), new());
            divan::black_box((a, b))
        })
    });
}

/// A `live` read through the migrator: both sides, authoritative value, no comparison.
#[divan::bench]
fn migrator_read_live_no_comparison(bencher: divan::Bencher) {
    let f = fixture();
    bencher.bench_local(|| {
        futures::executor::block_on(f.compare_none.read(
            divan::black_box("user-42"),
            || async { Ok::<u64, Infallible>(1) },
            || async { Ok::<u64, Infallible>(1) },
        ))
    });
}

/// A `live` read through the migrator with the comparison on every read.
#[divan::bench]
fn migrator_read_live_with_comparison(bencher: divan::Bencher) {
    let f = fixture();
    bencher.bench_local(|| {
        futures::executor::block_on(f.compare_all.read(
            divan::black_box("user-42"),
            || async { Ok::<u64, Infallible>(1) },
            || async { Ok::<u64, Infallible>(1) },
        ))
    });
}

/// A `live` write through the migrator: the authoritative side, then the other.
#[divan::bench]
fn migrator_write_live(bencher: divan::Bencher) {
    let f = fixture();
    bencher.bench_local(|| {
        futures::executor::block_on(f.compare_none.write(
            divan::black_box("user-42"),
            || async { Ok::<u64, Infallible>(1) },
            || async { Ok::<u64, Infallible>(1) },
        ))
    });
}

/// A transaction whose every statement is done at once: what is left of a transactional write
/// is the migrator's own work (the handle, its locks, the savepoint calls, counting).
struct NoDb;

impl WriteTransaction for NoDb {
    type Error = Infallible;

    fn savepoint(&mut self) -> impl Future<Output = Result<(), Infallible>> + Send {
        std::future::ready(Ok(()))
    }

    fn release_savepoint(&mut self) -> impl Future<Output = Result<(), Infallible>> + Send {
        std::future::ready(Ok(()))
    }

    fn rollback_to_savepoint(&mut self) -> impl Future<Output = Result<(), Infallible>> + Send {
        std::future::ready(Ok(()))
    }

    fn commit(self) -> impl Future<Output = Result<(), Infallible>> + Send {
        std::future::ready(Ok(()))
    }

    fn rollback(self) -> impl Future<Output = Result<(), Infallible>> + Send {
        std::future::ready(Ok(()))
    }
}

impl BeginTransaction for NoDb {
    type Transaction = NoDb;

    fn begin(&self) -> impl Future<Output = Result<NoDb, Infallible>> + Send {
        std::future::ready(Ok(NoDb))
    }
}

/// A `live` transactional write: begin, the authoritative side, the other in a savepoint,
/// commit; database time zero.
#[divan::bench(args = [false, true])]
fn migrator_write_atomic_live(bencher: divan::Bencher, strict: bool) {
    let migrator = fixture().compare_none.clone().strict_writes(strict);
    bencher.bench_local(|| {
        futures::executor::block_on(migrator.write_atomic(
            &NoDb,
            divan::black_box("user-42"),
            |_tx| async { Ok::<u64, Infallible>(1) },
            |_tx| async { Ok::<u64, Infallible>(1) },
        ))
        .map(|w| w.value)
    });
}
