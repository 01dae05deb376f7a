//! "Evaluation is local: no network call, no allocation, no lock on the hot path" (the README,
//! "In an application"). A counting global allocator watches the evaluating thread only (the client's
//! background tasks run, and allocate, on the runtime's own threads) while every evaluation path
//! runs 100,000 times against a migration whose front splits the entities, so the hash runs.
//!
//! The client starts from a bootstrap file: its server address is a port nothing listens on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;
use switchyard_client::{Client, ClientBuilder, Source, Stage};
use switchyard_domain::{BasisPoints, Migration, MigrationKey, NewMigration, Version};
use switchyard_proto::json;

/// Counts allocations (and reallocations) and deallocations made by threads that opted in.
struct CountingAllocator;

thread_local! {
    // `const` initialisers without destructors: using them never allocates, so the allocator
    // can touch them.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static DEALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note(counter: &'static std::thread::LocalKey<Cell<usize>>) {
    // `try_with`: never panic inside the allocator, e.g. while thread-locals are torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
    }
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCATIONS);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCATIONS);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(&ALLOCATIONS);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(&DEALLOCATIONS);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` on this thread counting its heap operations: (allocations, deallocations).
fn heap_operations_of(f: impl FnOnce()) -> (usize, usize) {
    ALLOCATIONS.with(|c| c.set(0));
    DEALLOCATIONS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get), DEALLOCATIONS.with(Cell::get))
}

const EVALUATIONS: usize = 100_000;
const SPLIT: &str = "alloc.users-handle";
const FULL: &str = "alloc.orders-total";
const FALLBACK: &str = "alloc.not-on-the-server";

fn migration(key: &str, stage: Stage, rollout_bp: u32, version: u64) -> Migration {
    let mut m = Migration::create(
        NewMigration {
            key: MigrationKey::parse(key).unwrap(),
            description: String::new(),
            owner: String::new(),
            entity_kind: "user_id".into(),
            soak_seconds: 0,
            expected_services: vec![],
            has_backfill: false,
            shadow_sample: BasisPoints::FULL,
            database: Default::default(),
            retire_probation_seconds: None,
        },
        0x5eed_1234,
        Version(version),
        0,
    );
    m.stage = stage;
    m.rollout_bp = BasisPoints::new(rollout_bp).unwrap();
    m
}

/// A client of no server, started from a bootstrap file holding `SPLIT` at (live, 50%) and
/// `FULL` at (rampdown, 100%), both comparing every shadow read.
fn offline_client(
    name: &str,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> (tokio::runtime::Runtime, Client, PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("switchyard-no-alloc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bootstrap = dir.join("bootstrap.json");
    let snapshot = serde_json::json!({
        "version": 2,
        "migrations": [
            json::Migration::from(&migration(SPLIT, Stage::Live, 5_000, 1)),
            json::Migration::from(&migration(FULL, Stage::Rampdown, 10_000, 2)),
        ],
    });
    std::fs::write(&bootstrap, snapshot.to_string()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let builder = Client::builder("http://127.0.0.1:9", "unused", "no-alloc")
        .startup_timeout(Duration::from_millis(200))
        .bootstrap_file(&bootstrap)
        .backoff(Duration::from_secs(60), Duration::from_secs(600));
    let client = runtime
        .block_on(configure(builder).connect())
        .expect("starting from the bootstrap file");
    assert_eq!(client.status().source, Source::BootstrapFile);
    (runtime, client, dir)
}

#[test]
fn evaluation_allocates_nothing() {
    let (runtime, client, dir) =
        offline_client("evaluation", |b| b.fallback(FALLBACK, Stage::DualWrite));
    assert_eq!(client.version(), 2);

    let keys: Vec<String> = (0..4_096).map(|i| format!("user-{i}")).collect();
    let key = |i: usize| keys[i % keys.len()].as_str();
    let handle = client.handle(SPLIT);

    // The front really splits the entities: both stages occur, and every path agrees.
    let live = keys
        .iter()
        .filter(|k| client.stage(SPLIT, k) == Stage::Live)
        .count();
    assert!(
        (1_000..3_096).contains(&live),
        "{live} of 4096 entities live at 50%"
    );
    for (i, k) in keys.iter().enumerate() {
        let stage = client.stage(SPLIT, k);
        assert!(matches!(stage, Stage::Live | Stage::Shadow));
        assert_eq!(handle.stage(k), stage);
        assert_eq!(client.plan(SPLIT, k), stage.plan());
        assert_eq!(handle.plan(k), stage.plan());
        assert_eq!(handle.stage_for_id(i as u64), handle.stage(i.to_string()));
    }
    assert_eq!(client.stage_without_entity(SPLIT), Stage::Shadow);
    assert_eq!(client.stage(FULL, "user-1"), Stage::Rampdown);
    assert_eq!(client.stage(FALLBACK, "user-1"), Stage::DualWrite);

    type Path<'a> = (&'a str, Box<dyn Fn(usize) + 'a>);
    let paths: Vec<Path<'_>> = vec![
        (
            "client.stage",
            Box::new(|i| {
                black_box(client.stage(black_box(SPLIT), key(i)));
            }),
        ),
        (
            "client.plan",
            Box::new(|i| {
                black_box(client.plan(black_box(SPLIT), key(i)));
            }),
        ),
        (
            "client.stage_without_entity",
            Box::new(|_| {
                black_box(client.stage_without_entity(black_box(SPLIT)));
            }),
        ),
        (
            "client.stage (100%: no hash)",
            Box::new(|i| {
                black_box(client.stage(black_box(FULL), key(i)));
            }),
        ),
        (
            "client.stage (fallback)",
            Box::new(|i| {
                black_box(client.stage(black_box(FALLBACK), key(i)));
            }),
        ),
        (
            "handle.stage",
            Box::new(|i| {
                black_box(handle.stage(key(i)));
            }),
        ),
        (
            "handle.stage_for_id",
            Box::new(|i| {
                black_box(handle.stage_for_id(black_box(i as u64 * 7_919)));
            }),
        ),
        (
            "handle.plan",
            Box::new(|i| {
                black_box(handle.plan(key(i)));
            }),
        ),
        (
            "handle.stage_without_entity",
            Box::new(|_| {
                black_box(handle.stage_without_entity());
            }),
        ),
    ];

    // Warm-up: one evaluation of each path lets lazily initialised thread-locals (the counter
    // shard, arc-swap's debt list) settle on this thread.
    for (_, path) in &paths {
        path(0);
    }
    let mut failures = Vec::new();
    for (name, path) in &paths {
        let (allocations, deallocations) = heap_operations_of(|| {
            for i in 0..EVALUATIONS {
                path(i);
            }
        });
        if (allocations, deallocations) != (0, 0) {
            failures.push(format!(
                "{name}: {allocations} allocations, {deallocations} deallocations in \
                 {EVALUATIONS} evaluations"
            ));
        }
    }
    // The counter itself works.
    let (allocations, _) = heap_operations_of(|| {
        black_box(vec![1u8; 16]);
    });
    assert_eq!(allocations, 1, "the counting allocator counts");
    assert!(failures.is_empty(), "{failures:#?}");

    drop(paths);
    drop(client);
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls a future that completes without waiting (the migrator's, with ready closures).
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the operation did not complete at once"),
    }
}

/// Beyond what the design promises (it says so of evaluation), the migrator adds no allocation
/// either: writes, and concurrent and serial reads with shadow comparisons, at a split front and
/// at 100%, with closures whose futures complete at once.
#[test]
fn migrator_operations_allocate_nothing() {
    let (runtime, client, dir) = offline_client("migrator", |b| b);
    let keys: Vec<String> = (0..4_096).map(|i| format!("user-{i}")).collect();
    for m in [SPLIT, FULL] {
        let migrator = client.migrator(m);
        let serial = client.migrator(m).serial_reads(true);
        let run = |i: usize| {
            let k = keys[i % keys.len()].as_str();
            let w: Result<u64, u32> =
                ready(migrator.write(k, || async { Ok(1) }, || async { Ok(2) }));
            black_box(w.unwrap());
            let r: Result<u64, u32> =
                ready(migrator.read(k, || async { Ok(3) }, || async { Ok(3) }));
            black_box(r.unwrap());
            let r: Result<u64, u32> = ready(serial.read(k, || async { Ok(3) }, || async { Ok(3) }));
            black_box(r.unwrap());
        };
        // Warm-up: thread-locals such as the comparison sampler's random generator.
        for i in 0..16 {
            run(i);
        }
        let ops = heap_operations_of(|| {
            for i in 0..EVALUATIONS {
                run(i)
            }
        });
        assert_eq!(ops, (0, 0), "{m}: (allocations, deallocations)");
    }
    drop(client);
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
}
