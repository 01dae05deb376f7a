//! The store on its own, against SQLite and Postgres alike: every scenario is one `async fn`
//! registered with `both_databases!`, talking to `Store` directly (no server, no HTTP).
//!
//! Covers: create / get / changed_since, mutations through the domain rules (the global version
//! grows by exactly one per committed change and a refusal changes nothing), the audit log,
//! client heartbeats and the fleet handed to the rules, API tokens, concurrent writers,
//! durability across a close and reconnect, and a backfill's cancel forgetting its checkpoint in
//! the same transaction.

use std::time::Duration;
use switchyard_domain::migration::{BackfillStatus, DEFAULT_SHADOW_SAMPLE, DEFAULT_SOAK_SECONDS};
use switchyard_domain::rules::{self, DomainError, parse_reason};
use switchyard_domain::{
    BasisPoints, Event, Fleet, LiveInstance, Migration, MigrationKey, NewMigration, Operation,
    Rule, Stage, Version,
};
use switchyard_domain::{Role, Scope};
use switchyard_server::auth::hash_token;
use switchyard_server::store::{
    Alongside, AuditRecord, Checkpoint, ClientInstance, HeartbeatOutcome, Registrant, Store,
    StoreError, TokenRecord,
};
use switchyard_tests::{Db, TestDb, both_databases};

/// A fixed "now" (Unix ms); the store takes time as an argument, so no clock is needed.
const T0: i64 = 1_700_000_000_000;
const TTL: Duration = Duration::from_secs(30);

async fn open(db: &TestDb) -> Store {
    Store::connect(&db.url).await.expect("connecting the store")
}

fn new_migration(key: &str, has_backfill: bool, services: &[&str]) -> NewMigration {
    NewMigration {
        key: MigrationKey::parse(key).unwrap(),
        description: format!("test migration {key}"),
        owner: "team-store".to_owned(),
        entity_kind: "user_id".to_owned(),
        soak_seconds: DEFAULT_SOAK_SECONDS,
        expected_services: services.iter().map(|s| s.to_string()).collect(),
        has_backfill,
        shadow_sample: DEFAULT_SHADOW_SAMPLE,
        database: Default::default(),
        retire_probation_seconds: None,
    }
}

async fn create(store: &Store, key: &str, has_backfill: bool, services: &[&str]) -> Migration {
    let reason = parse_reason(&format!("create {key}")).unwrap();
    store
        .create_migration(
            new_migration(key, has_backfill, services),
            0x1234_5678,
            "alice",
            &reason,
            T0,
        )
        .await
        .expect("creating a migration")
}

/// One operation through the domain rules, exactly as the server's `App::mutate` does it.
async fn apply(
    store: &Store,
    key: &str,
    actor: &str,
    now: i64,
    expected: Version,
    reason: &str,
    op: Operation,
) -> Result<Migration, StoreError> {
    store
        .mutate(key, actor, now, TTL, |current, fleet, next| {
            let (m, r) = rules::apply(current, expected, reason, &op, fleet, next, now)?;
            Ok((m, r, op.action().to_owned()))
        })
        .await
        .map(|done| done.migration)
}

fn ramp(stage: Option<Stage>, bp: u32) -> Operation {
    Operation::SetRollout {
        stage,
        rollout: BasisPoints::new(bp).unwrap(),
    }
}

/// The refusal of a mutation, and the unchanged state it carries.
/// A heartbeat as the API records it, from one reader token with no instance bound.
async fn beat(
    store: &Store,
    service: &str,
    instance_id: &str,
    applied: Version,
    now_ms: i64,
) -> Result<(), StoreError> {
    let by = Registrant {
        token_id: 1,
        live_after_ms: i64::MIN,
        max_live: u64::MAX,
    };
    match store
        .record_heartbeat(by, service, instance_id, applied, &[], now_ms)
        .await?
    {
        HeartbeatOutcome::Recorded { .. } => Ok(()),
        other => panic!("heartbeat of {service}/{instance_id} not recorded: {other:?}"),
    }
}

fn refused<T: std::fmt::Debug>(result: Result<T, StoreError>) -> (DomainError, Migration) {
    match result {
        Err(StoreError::Refused { error, current }) => (error, *current),
        Err(other) => panic!("expected a refusal, got error {other:?}"),
        Ok(m) => panic!("expected a refusal, got a committed change to {m:?}"),
    }
}

fn refused_rule(result: Result<Migration, StoreError>) -> (Rule, Migration) {
    match refused(result) {
        (DomainError::Refused { rule, .. }, current) => (rule, current),
        (other, _) => panic!("expected a rule refusal, got {other:?}"),
    }
}

/// Everything a mutation of `key` could touch.
#[derive(Debug, PartialEq)]
struct Observed {
    snapshot: Version,
    migration: Option<Migration>,
    audit: Vec<AuditRecord>,
}

async fn observe(store: &Store, key: &str) -> Observed {
    Observed {
        snapshot: store.snapshot_version().await.unwrap(),
        migration: store.get(key).await.unwrap(),
        audit: store.audit(key, 1000, None).await.unwrap(),
    }
}

/// The state an audit record holds, read back through the store's own stored form.
fn parse_state(state: Result<Option<Migration>, StoreError>) -> Migration {
    state
        .expect("audit JSON parses")
        .expect("the record holds a state")
}

async fn create_get_and_changed_since(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    assert_eq!(store.snapshot_version().await.unwrap(), Version(0));
    let (nothing, at) = store.changed_since(Version(0)).await.unwrap();
    assert!(nothing.is_empty());
    assert_eq!(at, Version(0));

    let a = create(&store, "a.first", false, &[]).await;
    let b = create(&store, "b.second", true, &["api", "worker"]).await;
    let c = create(&store, "c.third", false, &["api"]).await;
    assert_eq!(
        [a.version, b.version, c.version],
        [Version(1), Version(2), Version(3)]
    );
    assert_eq!(
        (a.stage, a.rollout_bp, a.expand_applied),
        (Stage::Off, BasisPoints::FULL, false)
    );
    assert_eq!(
        (a.created_at_ms, a.updated_at_ms, a.salt),
        (T0, T0, 0x1234_5678)
    );
    assert_eq!(b.backfill.status, BackfillStatus::NotStarted);
    assert_eq!(b.expected_services, ["api", "worker"]);
    assert_eq!(store.get("b.second").await.unwrap().as_ref(), Some(&b));
    assert_eq!(store.get("missing").await.unwrap(), None);

    assert_eq!(
        store.changed_since(Version(0)).await.unwrap(),
        (vec![a.clone(), b.clone(), c.clone()], Version(3))
    );
    assert_eq!(
        store.changed_since(Version(1)).await.unwrap(),
        (vec![b.clone(), c.clone()], Version(3))
    );

    // Changing the oldest migration moves it to the end: ordering is by version, not by key.
    let a2 = apply(
        &store,
        "a.first",
        "deployer",
        T0 + 5,
        a.version,
        "expand DDL applied",
        Operation::Record(Event::ExpandApplied),
    )
    .await
    .unwrap();
    assert_eq!(a2.version, Version(4));
    assert_eq!(
        store.changed_since(Version(2)).await.unwrap(),
        (vec![c.clone(), a2.clone()], Version(4))
    );
    assert_eq!(
        store.changed_since(Version(0)).await.unwrap(),
        (vec![b.clone(), c.clone(), a2.clone()], Version(4))
    );
    assert_eq!(
        store.changed_since(Version(4)).await.unwrap(),
        (vec![], Version(4))
    );

    // A duplicate key is refused and changes nothing (no version taken, no audit record).
    let before = observe(&store, "b.second").await;
    let reason = parse_reason("again").unwrap();
    let dup = store
        .create_migration(
            new_migration("b.second", false, &[]),
            99,
            "mallory",
            &reason,
            T0 + 9,
        )
        .await;
    match dup {
        Err(StoreError::AlreadyExists(what)) => assert!(what.contains("b.second"), "{what}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(observe(&store, "b.second").await, before);
    assert_eq!(before.audit.len(), 1);
    assert_eq!(before.snapshot, Version(4));
    // The next change still takes the next version: the refused create left no gap.
    let d = create(&store, "d.fourth", false, &[]).await;
    assert_eq!(d.version, Version(5));
    store.close().await;
}

async fn mutate_applies_rules_and_refusals_change_nothing(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    let key = "users.handle";
    let m1 = create(&store, key, true, &[]).await;
    let other = create(&store, "other.one", false, &[]).await;
    assert_eq!(store.snapshot_version().await.unwrap(), Version(2));

    // The closure sees the stored state and is offered the next global version.
    let mut seen = None;
    let m2 = store
        .mutate(key, "deployer", T0 + 10, TTL, |current, fleet, next| {
            seen = Some((current.clone(), fleet.clone(), next));
            let op = Operation::Record(Event::ExpandApplied);
            let (m, r) = rules::apply(
                current,
                m1.version,
                "expand done",
                &op,
                fleet,
                next,
                T0 + 10,
            )?;
            Ok((m, r, op.action().to_owned()))
        })
        .await
        .expect("expand_applied is allowed")
        .migration;
    let (seen_current, seen_fleet, seen_next) = seen.unwrap();
    assert_eq!(seen_current, m1);
    assert_eq!(seen_fleet, Fleet::default());
    assert_eq!(seen_next, Version(3));
    assert_eq!(m2.version, Version(3));
    assert!(m2.expand_applied);
    assert_eq!((m2.created_at_ms, m2.updated_at_ms), (T0, T0 + 10));
    assert_eq!(store.get(key).await.unwrap().as_ref(), Some(&m2));
    assert_eq!(store.snapshot_version().await.unwrap(), Version(3));

    let m3 = apply(
        &store,
        key,
        "rm",
        T0 + 20,
        m2.version,
        "start",
        Operation::Advance,
    )
    .await
    .unwrap();
    assert_eq!(
        (m3.stage, m3.rollout_bp, m3.version),
        (Stage::DualWrite, BasisPoints::ZERO, Version(4))
    );

    // Refusals of every kind: the row, the version counter and the audit log stay as they are.
    let before = observe(&store, key).await;
    let other_before = observe(&store, "other.one").await;
    let (rule, current) = refused_rule(
        apply(
            &store,
            key,
            "rm",
            T0 + 30,
            m3.version,
            "jump",
            ramp(Some(Stage::Shadow), 10),
        )
        .await,
    );
    assert_eq!((rule, &current), (Rule::OneStep, &m3));
    let (error, current) = refused(
        apply(
            &store,
            key,
            "rm",
            T0 + 30,
            m2.version,
            "stale",
            ramp(None, 5000),
        )
        .await,
    );
    assert_eq!(
        error,
        DomainError::Stale {
            expected: m2.version,
            current: m3.version
        }
    );
    assert_eq!(current, m3);
    let (error, _) = refused(
        apply(
            &store,
            key,
            "rm",
            T0 + 30,
            Version(99),
            "future",
            ramp(None, 5000),
        )
        .await,
    );
    assert!(matches!(error, DomainError::Stale { .. }), "{error:?}");
    let (rule, _) = refused_rule(
        apply(
            &store,
            key,
            "rm",
            T0 + 30,
            m3.version,
            "  ",
            ramp(None, 5000),
        )
        .await,
    );
    assert_eq!(rule, Rule::Reason);
    let (error, _) = refused(
        apply(
            &store,
            key,
            "rm",
            T0 + 30,
            m3.version,
            "again",
            Operation::Record(Event::ExpandApplied),
        )
        .await,
    );
    assert!(matches!(error, DomainError::NotApplicable(_)), "{error:?}");
    // A closure that refuses on its own, after the version was offered to it.
    let result = store
        .mutate(key, "rm", T0 + 30, TTL, |_, _, next| {
            assert_eq!(
                next,
                Version(5),
                "the refused attempts above must not consume versions"
            );
            Err(DomainError::NotApplicable("the test says no".to_owned()))
        })
        .await;
    match result {
        Err(StoreError::Refused { error, current }) => {
            assert_eq!(
                error,
                DomainError::NotApplicable("the test says no".to_owned())
            );
            assert_eq!(*current, m3);
        }
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("expected a refusal, got a commit"),
    }
    match apply(
        &store,
        "no.such",
        "rm",
        T0,
        Version(1),
        "x",
        Operation::Advance,
    )
    .await
    {
        Err(StoreError::NotFound(key)) => assert_eq!(key, "no.such"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(observe(&store, key).await, before);
    assert_eq!(observe(&store, "other.one").await, other_before);

    // Rule 4 through the store: no entity may be at shadow before the backfill is complete.
    // (`(shadow, 0%)` routes every entity like `(dual_write, 100%)`, so only ramping it is
    // refused.)
    let m4 = apply(
        &store,
        key,
        "rm",
        T0 + 40,
        m3.version,
        "full",
        ramp(None, 10_000),
    )
    .await
    .unwrap();
    assert_eq!(
        m4.version,
        Version(5),
        "exactly one more than the last committed change"
    );
    let (rule, _) = refused_rule(
        apply(
            &store,
            key,
            "rm",
            T0 + 41,
            m4.version,
            "go",
            ramp(Some(Stage::Shadow), 1),
        )
        .await,
    );
    assert_eq!(rule, Rule::ShadowAfterBackfill);

    // Interleaving two migrations: each change takes the next global version, and a change to
    // one leaves the other's version alone.
    let mut last = store.snapshot_version().await.unwrap();
    assert_eq!(last, Version(5));
    let mut cur = m4.clone();
    let mut oth = other.clone();
    let script: [(bool, Operation); 6] = [
        (true, Operation::Record(Event::BackfillStarted)),
        (false, Operation::Record(Event::ExpandApplied)),
        (
            true,
            Operation::Record(Event::BackfillProgress {
                rows_done: 10,
                rows_total_estimate: 100,
            }),
        ),
        (false, Operation::Advance),
        (true, Operation::Record(Event::BackfillComplete)),
        (true, Operation::Advance),
    ];
    for (i, (on_main, op)) in script.into_iter().enumerate() {
        let now = T0 + 100 + i as i64;
        let target = if on_main { &cur } else { &oth };
        let done = apply(
            &store,
            target.key.as_str(),
            "rm",
            now,
            target.version,
            "scripted",
            op,
        )
        .await
        .unwrap_or_else(|e| panic!("step {i} ({op:?}): {e:?}"));
        assert_eq!(done.version, Version(last.0 + 1), "step {i}");
        last = done.version;
        assert_eq!(store.snapshot_version().await.unwrap(), last);
        if on_main {
            cur = done;
        } else {
            oth = done;
        }
        assert_eq!(store.get(key).await.unwrap().as_ref(), Some(&cur));
        assert_eq!(store.get("other.one").await.unwrap().as_ref(), Some(&oth));
    }
    assert_eq!(
        (cur.stage, cur.rollout_bp),
        (Stage::Shadow, BasisPoints::ZERO)
    );
    assert_eq!(cur.backfill.status, BackfillStatus::Complete);
    assert_eq!(
        (cur.backfill.rows_done, cur.backfill.rows_total_estimate),
        (10, 100)
    );
    store.close().await;
}

async fn audit_log_records_every_committed_change(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    let key = "audit.me";
    let created = create(&store, key, false, &[]).await;
    let noise = create(&store, "audit.noise", false, &[]).await;
    let steps = [
        (
            "pipeline",
            "expand DDL applied in release 42",
            Operation::Record(Event::ExpandApplied),
        ),
        ("bob", "begin dual writes", Operation::Advance),
        ("carol", "canary 12.5%", ramp(None, 1250)),
        (
            "carol",
            "  full dual write  ",
            ramp(Some(Stage::DualWrite), 10_000),
        ),
        ("dave", "step back to check", ramp(None, 0)),
    ];
    let mut states = vec![created.clone()];
    for (i, (actor, reason, op)) in steps.iter().enumerate() {
        let now = T0 + 1000 * (i as i64 + 1);
        let prev = states.last().unwrap().clone();
        // A refused attempt before every change: never audited.
        refused(
            apply(
                &store,
                key,
                actor,
                now,
                Version(prev.version.0 + 7),
                reason,
                *op,
            )
            .await,
        );
        let next = apply(&store, key, actor, now, prev.version, reason, *op)
            .await
            .unwrap_or_else(|e| panic!("step {i}: {e:?}"));
        states.push(next);
        // Changes to another migration are interleaved and must not show up in this log.
        let n = store.get("audit.noise").await.unwrap().unwrap();
        let noise_op = match i {
            0 => Operation::Record(Event::ExpandApplied),
            1 => Operation::Advance,
            _ => ramp(None, 100 * i as u32),
        };
        apply(
            &store,
            "audit.noise",
            "x",
            now,
            n.version,
            "noise",
            noise_op,
        )
        .await
        .unwrap_or_else(|e| panic!("noise {i}: {e:?}"));
    }
    assert_eq!(noise.version, Version(2));

    let log = store.audit(key, 100, None).await.unwrap();
    assert_eq!(
        log.len(),
        states.len(),
        "one record per committed change: {log:#?}"
    );
    // Newest first.
    for pair in log.windows(2) {
        assert!(pair[0].id > pair[1].id, "ids descend: {log:#?}");
        assert!(pair[0].version > pair[1].version, "versions descend");
    }
    let oldest_first: Vec<&AuditRecord> = log.iter().rev().collect();
    let create_record = oldest_first[0];
    assert_eq!(
        (
            create_record.action.as_str(),
            create_record.actor.as_str(),
            create_record.reason.as_str(),
            create_record.at_ms,
            create_record.version,
            create_record.before_json.as_str(),
        ),
        (
            "create",
            "alice",
            "create audit.me",
            T0,
            created.version,
            ""
        )
    );
    assert_eq!(parse_state(create_record.after()), created);
    for (i, (actor, reason, op)) in steps.iter().enumerate() {
        let record = oldest_first[i + 1];
        assert_eq!(record.migration_key, key);
        assert_eq!(record.actor, *actor, "step {i}");
        assert_eq!(
            record.reason,
            reason.trim(),
            "step {i}: reasons are stored trimmed"
        );
        assert_eq!(record.action, op.action(), "step {i}");
        assert_eq!(record.at_ms, T0 + 1000 * (i as i64 + 1), "step {i}");
        assert_eq!(record.version, states[i + 1].version, "step {i}");
        assert_eq!(parse_state(record.before()), states[i], "step {i}: before");
        assert_eq!(
            parse_state(record.after()),
            states[i + 1],
            "step {i}: after"
        );
    }
    assert_eq!(
        log.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        [
            "set_rollout",
            "set_rollout",
            "set_rollout",
            "advance",
            "expand_applied",
            "create"
        ]
    );

    // Paging: newest first, `before_id` continues strictly below the given id.
    let mut paged = Vec::new();
    let mut before_id = None;
    loop {
        let page = store.audit(key, 2, before_id).await.unwrap();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        before_id = Some(page.last().unwrap().id);
        paged.extend(page);
    }
    assert_eq!(paged, log);
    assert_eq!(store.audit(key, 1, None).await.unwrap(), log[..1]);
    assert_eq!(
        store.audit(key, 100, Some(log[2].id)).await.unwrap(),
        log[3..]
    );
    assert_eq!(store.audit(key, 100, Some(u64::MAX)).await.unwrap(), log);
    assert!(
        store
            .audit(key, 100, Some(log.last().unwrap().id))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.audit("no.such", 100, None).await.unwrap().is_empty());
    let noise_log = store.audit("audit.noise", 100, None).await.unwrap();
    assert!(noise_log.iter().all(|r| r.migration_key == "audit.noise"));
    assert_eq!(
        noise_log.len(),
        6,
        "create + the five interleaved changes: {noise_log:#?}"
    );
    store.close().await;
}

fn live(service: &str, id: &str, applied: u64) -> LiveInstance {
    LiveInstance {
        service: service.to_owned(),
        instance_id: id.to_owned(),
        applied_version: Version(applied),
    }
}

fn sorted(mut fleet: Fleet) -> Vec<LiveInstance> {
    fleet
        .live
        .sort_by(|a, b| (&a.service, &a.instance_id).cmp(&(&b.service, &b.instance_id)));
    fleet.live
}

fn names(instances: &[ClientInstance]) -> Vec<(&str, &str)> {
    instances
        .iter()
        .map(|i| (i.service.as_str(), i.instance_id.as_str()))
        .collect()
}

/// The fleet the store hands to the rules for a mutation at `now`.
async fn fleet_at(store: &Store, key: &str, now: i64) -> Vec<LiveInstance> {
    let mut seen = None;
    let result = store
        .mutate(key, "probe", now, TTL, |_, fleet, _| {
            seen = Some(fleet.clone());
            Err(DomainError::NotApplicable("probe only".to_owned()))
        })
        .await;
    assert!(matches!(result, Err(StoreError::Refused { .. })));
    sorted(seen.expect("the closure ran"))
}

async fn heartbeats_and_the_live_fleet(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    let ttl_ms = TTL.as_millis() as i64;
    beat(&store, "api", "api-1", Version(0), T0).await.unwrap();
    beat(&store, "api", "api-old", Version(0), T0 - 40_000)
        .await
        .unwrap();
    beat(&store, "worker", "w-1", Version(0), T0 - ttl_ms + 1)
        .await
        .unwrap();
    beat(&store, "worker", "w-edge", Version(0), T0 - ttl_ms - 1)
        .await
        .unwrap();

    let within_ttl = store.instances(T0, TTL).await.unwrap();
    assert_eq!(names(&within_ttl), [("api", "api-1"), ("worker", "w-1")]);
    let within_minute = store.instances(T0, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        names(&within_minute),
        [
            ("api", "api-1"),
            ("api", "api-old"),
            ("worker", "w-1"),
            ("worker", "w-edge")
        ]
    );
    assert!(
        store
            .instances(T0 + 3_600_000, TTL)
            .await
            .unwrap()
            .is_empty()
    );

    // Upsert: same (service, instance) updates applied version and last_seen, keeps first_seen.
    beat(&store, "api", "api-1", Version(1), T0 + 500)
        .await
        .unwrap();
    let api1: Vec<ClientInstance> = store
        .instances(T0 + 500, Duration::from_secs(3600))
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.instance_id == "api-1")
        .collect();
    assert_eq!(
        api1,
        [ClientInstance {
            service: "api".to_owned(),
            instance_id: "api-1".to_owned(),
            applied_version: Version(1),
            first_seen_ms: T0,
            last_seen_ms: T0 + 500,
        }]
    );
    // The same instance id under another service is another instance.
    beat(&store, "worker", "api-1", Version(0), T0)
        .await
        .unwrap();
    assert_eq!(
        names(&store.instances(T0, TTL).await.unwrap()),
        [("api", "api-1"), ("worker", "api-1"), ("worker", "w-1")]
    );

    // The fleet given to a mutation holds exactly the instances within the TTL of its `now`.
    let key = "fleet.rules";
    let m = create(&store, key, true, &[]).await;
    assert_eq!(
        fleet_at(&store, key, T0).await,
        [
            live("api", "api-1", 1),
            live("worker", "api-1", 0),
            live("worker", "w-1", 0)
        ]
    );
    assert_eq!(
        fleet_at(&store, key, T0 + 2).await,
        [live("api", "api-1", 1), live("worker", "api-1", 0)],
        "w-1 is now older than the TTL"
    );
    assert!(fleet_at(&store, key, T0 + 3_600_000).await.is_empty());

    // And the rules act on it: rule 3 waits for every live instance, not for expired ones.
    let now = T0 + 60_000;
    let m = apply(
        &store,
        key,
        "p",
        now,
        m.version,
        "x",
        Operation::Record(Event::ExpandApplied),
    )
    .await
    .unwrap();
    let m = apply(&store, key, "p", now, m.version, "x", Operation::Advance)
        .await
        .unwrap();
    let m = apply(&store, key, "p", now, m.version, "x", ramp(None, 10_000))
        .await
        .unwrap();
    let since = m.full_since[&Stage::DualWrite];
    assert_eq!(since, m.version);
    // A lagging instance that is live blocks the backfill...
    beat(&store, "api", "api-2", Version(since.0 - 1), now)
        .await
        .unwrap();
    // ...one that stopped reporting more than the TTL ago does not.
    beat(&store, "api", "api-gone", Version(0), now - ttl_ms - 1)
        .await
        .unwrap();
    beat(&store, "worker", "w-2", since, now).await.unwrap();
    let (rule, current) = refused_rule(
        apply(
            &store,
            key,
            "p",
            now,
            m.version,
            "x",
            Operation::Record(Event::BackfillStarted),
        )
        .await,
    );
    assert_eq!((rule, &current), (Rule::BackfillAfterDualWrite, &m));
    beat(&store, "api", "api-2", since, now + 1).await.unwrap();
    let started = apply(
        &store,
        key,
        "p",
        now + 1,
        m.version,
        "x",
        Operation::Record(Event::BackfillStarted),
    )
    .await
    .expect("every live instance has applied the dual_write version");
    assert_eq!(started.backfill.status, BackfillStatus::Running);
    store.close().await;
}

async fn tokens_create_find_revoke_list(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    assert_eq!(store.count_tokens().await.unwrap(), 0);
    assert!(store.list_tokens().await.unwrap().is_empty());
    let (h1, h2, h3) = (
        hash_token("secret-1"),
        hash_token("secret-2"),
        hash_token("secret-3"),
    );

    let t1 = store
        .create_token("ci-gate", Role::Gate, &Scope::all(), &h1, T0)
        .await
        .unwrap();
    assert_eq!(
        (
            t1.name.as_str(),
            t1.role,
            t1.created_at_ms,
            t1.revoked_at_ms
        ),
        ("ci-gate", Role::Gate, T0, None)
    );
    let t2 = store
        .create_token("ops", Role::Operator, &Scope::all(), &h2, T0 + 1)
        .await
        .unwrap();
    assert_ne!(t1.id, t2.id);
    match store
        .create_token("ci-gate", Role::Reader, &Scope::all(), &h3, T0 + 2)
        .await
    {
        Err(StoreError::AlreadyExists(what)) => assert!(what.contains("ci-gate"), "{what}"),
        other => panic!("expected AlreadyExists for a duplicate name, got {other:?}"),
    }
    assert_eq!(store.count_tokens().await.unwrap(), 2);
    assert_eq!(
        store.find_token(&h3).await.unwrap(),
        None,
        "the refused token was not stored"
    );
    assert_eq!(store.find_token(&h1).await.unwrap().as_ref(), Some(&t1));
    assert_eq!(store.find_token(&h2).await.unwrap().as_ref(), Some(&t2));
    assert_eq!(store.find_token("not-a-hash").await.unwrap(), None);
    assert_eq!(store.list_tokens().await.unwrap(), [t1.clone(), t2.clone()]);

    let (revoked, hash) = store.revoke_token(t1.id, T0 + 10).await.unwrap();
    assert_eq!(hash, h1);
    let t1_revoked = TokenRecord {
        revoked_at_ms: Some(T0 + 10),
        ..t1.clone()
    };
    assert_eq!(revoked, t1_revoked);
    assert_eq!(store.find_token(&h1).await.unwrap(), None);
    assert_eq!(store.find_token(&h2).await.unwrap().as_ref(), Some(&t2));
    assert_eq!(
        store.list_tokens().await.unwrap(),
        [t1_revoked.clone(), t2.clone()]
    );
    // Revoking again keeps the first revocation time.
    let (again, _) = store.revoke_token(t1.id, T0 + 20).await.unwrap();
    assert_eq!(again, t1_revoked);
    match store.revoke_token(t2.id + 1000, T0).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    // A revoked token's name stays taken (names are unique for the audit trail).
    assert!(matches!(
        store
            .create_token("ci-gate", Role::Gate, &Scope::all(), &h3, T0 + 30)
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    let t3 = store
        .create_token("ci-gate-2", Role::Admin, &Scope::all(), &h3, T0 + 30)
        .await
        .unwrap();
    assert!(t3.id > t2.id);
    assert_eq!(store.count_tokens().await.unwrap(), 3);
    assert_eq!(store.list_tokens().await.unwrap(), [t1_revoked, t2, t3]);
    store.close().await;
}

async fn concurrent_writers_take_distinct_consecutive_versions(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    let keys = ["race.a", "race.b", "race.c", "race.d"];
    let mut created = Vec::new();
    for key in keys {
        created.push(create(&store, key, false, &[]).await);
    }
    // Two writers per migration, both expecting the same version: exactly one wins each race.
    let attempts = created.iter().flat_map(|m| {
        let store = &store;
        (0..2).map(move |w| async move {
            let actor = format!("writer-{w}");
            apply(
                store,
                m.key.as_str(),
                &actor,
                T0 + 1,
                m.version,
                "race",
                Operation::Record(Event::ExpandApplied),
            )
            .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let mut versions = Vec::new();
    for (pair, m) in results.chunks(2).zip(&created) {
        let won: Vec<&Migration> = pair.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{}: exactly one writer wins: {pair:?}", m.key);
        versions.push(won[0].version.0);
        let lost = pair.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(
            matches!(
                lost,
                StoreError::Refused {
                    error: DomainError::Stale { .. },
                    ..
                }
            ),
            "{lost:?}"
        );
        assert_eq!(
            store.audit(m.key.as_str(), 10, None).await.unwrap().len(),
            2
        );
    }
    versions.sort();
    assert_eq!(
        versions,
        [5, 6, 7, 8],
        "consecutive, no gaps from the losers"
    );
    assert_eq!(store.snapshot_version().await.unwrap(), Version(8));

    store.close().await;
}

async fn concurrent_creates_of_one_key(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    // Release managers create the same key at once: one gets it, the others are told it
    // already exists (the same answer as when the creates do not overlap).
    // Warm the pool so that every create has a connection at once and they really overlap.
    futures::future::join_all((0..4).map(|_| store.ping())).await;
    let reason = parse_reason("create").unwrap();
    let creates = (0..4u64).map(|i| {
        let (store, reason) = (&store, &reason);
        async move {
            store
                .create_migration(new_migration("race.new", false, &[]), i, "rm", reason, T0)
                .await
        }
    });
    let results = futures::future::join_all(creates).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one create wins: {results:?}"
    );
    assert_eq!(store.snapshot_version().await.unwrap(), Version(1));
    assert_eq!(store.audit("race.new", 10, None).await.unwrap().len(), 1);
    for lost in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(lost, StoreError::AlreadyExists(_)),
            "a losing create must be AlreadyExists, got {lost:?}"
        );
    }
    store.close().await;
}

/// Everything the store holds, for comparing across reconnects.
#[derive(Debug, PartialEq)]
struct Everything {
    snapshot: Version,
    changes: (Vec<Migration>, Version),
    audits: Vec<Vec<AuditRecord>>,
    instances: Vec<ClientInstance>,
    tokens: Vec<TokenRecord>,
}

async fn everything(store: &Store, keys: &[&str]) -> Everything {
    let mut audits = Vec::new();
    for key in keys {
        audits.push(store.audit(key, 1000, None).await.unwrap());
    }
    Everything {
        snapshot: store.snapshot_version().await.unwrap(),
        changes: store.changed_since(Version(0)).await.unwrap(),
        audits,
        instances: store
            .instances(T0, Duration::from_secs(3600))
            .await
            .unwrap(),
        tokens: store.list_tokens().await.unwrap(),
    }
}

async fn committed_state_survives_close_and_reconnect(db: Db) {
    let db = TestDb::new(db).await;
    let keys = ["keep.a", "keep.b"];
    let store = open(&db).await;
    let a = create(&store, "keep.a", true, &["api"]).await;
    let b = create(&store, "keep.b", false, &[]).await;
    let expand = Operation::Record(Event::ExpandApplied);
    let a = apply(&store, "keep.a", "p", T0 + 1, a.version, "x", expand)
        .await
        .unwrap();
    let a = apply(
        &store,
        "keep.a",
        "p",
        T0 + 2,
        a.version,
        "x",
        Operation::Advance,
    )
    .await
    .unwrap();
    let a = apply(
        &store,
        "keep.a",
        "p",
        T0 + 3,
        a.version,
        "x",
        ramp(None, 4200),
    )
    .await
    .unwrap();
    refused(
        apply(
            &store,
            "keep.b",
            "p",
            T0 + 4,
            b.version,
            "x",
            Operation::Advance,
        )
        .await,
    );
    beat(&store, "api", "api-1", a.version, T0 + 5)
        .await
        .unwrap();
    beat(&store, "worker", "w-1", Version(1), T0 + 6)
        .await
        .unwrap();
    let ops = store
        .create_token("ops", Role::Operator, &Scope::all(), &hash_token("t-1"), T0)
        .await
        .unwrap();
    let old = store
        .create_token("old", Role::Reader, &Scope::all(), &hash_token("t-2"), T0)
        .await
        .unwrap();
    store.revoke_token(old.id, T0 + 7).await.unwrap();
    let first = everything(&store, &keys).await;
    assert_eq!(first.snapshot, Version(5));
    assert_eq!(first.changes.0.len(), 2);
    assert_eq!(
        first.audits.iter().map(Vec::len).collect::<Vec<_>>(),
        [4, 1]
    );
    assert_eq!(first.instances.len(), 2);
    store.close().await;
    drop(store);

    // Reconnect: everything committed is there; the migrations did not run again (the version
    // counter was not reset, no table was emptied).
    let store = open(&db).await;
    assert_eq!(everything(&store, &keys).await, first);
    assert_eq!(store.get("keep.a").await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.find_token(&hash_token("t-1")).await.unwrap(),
        Some(ops)
    );
    assert_eq!(store.find_token(&hash_token("t-2")).await.unwrap(), None);
    // Writing after the reconnect continues the version sequence and the audit log.
    let b2 = apply(&store, "keep.b", "p", T0 + 8, b.version, "x", expand)
        .await
        .unwrap();
    assert_eq!(b2.version, Version(6));
    let log = store.audit("keep.b", 10, None).await.unwrap();
    assert_eq!(log.len(), 2);
    let max_before = first.audits.iter().flatten().map(|r| r.id).max().unwrap();
    assert!(log[0].id > max_before, "audit ids keep growing");
    match store
        .create_migration(
            new_migration("keep.a", false, &[]),
            1,
            "x",
            &parse_reason("dup").unwrap(),
            T0,
        )
        .await
    {
        Err(StoreError::AlreadyExists(_)) => {}
        other => panic!("expected AlreadyExists after reconnect, got {other:?}"),
    }
    assert!(matches!(
        store
            .create_token("ops", Role::Admin, &Scope::all(), &hash_token("t-9"), T0)
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    let second = everything(&store, &keys).await;
    store.close().await;
    drop(store);

    // And once more: the write made after the first reconnect is durable too.
    let store = open(&db).await;
    assert_eq!(everything(&store, &keys).await, second);
    assert_eq!(store.get("keep.b").await.unwrap(), Some(b2));
    store.close().await;
}

/// Two release managers at once, one of them with a stale version (rule 8's own use case):
/// every stale attempt is refused, and every current one commits. A refusal rolls back its
/// transaction, which had already taken the next snapshot version (a write); the next writer
/// must not trip over that rollback.
async fn a_stale_writer_does_not_break_a_current_one(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    let key = "two.managers";
    let expand = Operation::Record(Event::ExpandApplied);
    let m = create(&store, key, false, &[]).await;
    let m = apply(&store, key, "p", T0, m.version, "x", expand)
        .await
        .unwrap();
    let m = apply(&store, key, "p", T0, m.version, "x", Operation::Advance)
        .await
        .unwrap();
    let rounds = 40u32;
    let current = async {
        let mut m = m.clone();
        for i in 0..rounds {
            m = apply(&store, key, "alice", T0, m.version, "ok", ramp(None, i + 1))
                .await
                .unwrap_or_else(|e| panic!("alice's write {i}: {e:?}"));
        }
        m
    };
    let stale = async {
        for i in 0..rounds {
            match apply(
                &store,
                key,
                "bob",
                T0,
                Version(1),
                "stale",
                ramp(None, 9_000),
            )
            .await
            {
                Err(StoreError::Refused {
                    error: DomainError::Stale { .. },
                    ..
                }) => {}
                other => panic!("bob's stale write {i}: expected Stale, got {other:?}"),
            }
        }
    };
    let (last, ()) = futures::join!(current, stale);
    assert_eq!(last.version, Version(3 + u64::from(rounds)));
    assert_eq!(last.rollout_bp.get(), rounds);
    assert_eq!(store.get(key).await.unwrap(), Some(last));
    let log = store.audit(key, 500, None).await.unwrap();
    assert_eq!(log.len(), 3 + rounds as usize);
    assert!(log.iter().all(|r| r.actor != "bob"));
    store.close().await;
}

/// A backfill running on a new migration `key`, with a saved position.
async fn running_backfill(store: &Store, key: &str) -> (Migration, Checkpoint) {
    let mut m = create(store, key, true, &[]).await;
    for op in [
        Operation::Record(Event::ExpandApplied),
        Operation::Advance,
        ramp(None, 10_000),
        Operation::Record(Event::BackfillStarted),
    ] {
        m = apply(store, key, "rm", T0 + 1, m.version, "x", op)
            .await
            .unwrap();
    }
    assert_eq!(m.backfill.status, BackfillStatus::Running);
    let saved = store
        .save_checkpoint(
            key,
            &Checkpoint {
                cursor: "600".to_owned(),
                rows_done: 600,
                rows_total_estimate: 1000,
                rate_rows_per_second: 0.0,
                runner: "api/worker-1".to_owned(),
                updated_at_ms: T0 + 2,
                throttle_reason: String::new(),
                throttled_since_ms: 0,
                throttled_ms: 0,
            },
            |_| Ok(()),
        )
        .await
        .unwrap();
    (m, saved)
}

/// The position is judged on the migration as stored when it is written: a checkpoint that
/// arrives after a cancel committed is refused with the state it was judged on, and writes
/// nothing (so a runner racing a cancel cannot bring back the cancelled run's position).
async fn a_checkpoint_is_judged_on_the_stored_state(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    let key = "users.raced";
    let (running, _) = running_backfill(&store, key).await;
    let cancelled = cancel(&store, key, running.version, |_| {}).await.unwrap();
    let before = observe(&store, key).await;
    let late = Checkpoint {
        cursor: "900".to_owned(),
        rows_done: 900,
        rows_total_estimate: 1000,
        rate_rows_per_second: 0.0,
        runner: "api/worker-1".to_owned(),
        updated_at_ms: T0 + 3,
        throttle_reason: String::new(),
        throttled_since_ms: 0,
        throttled_ms: 0,
    };
    let refused_late = store
        .save_checkpoint(key, &late, |m| {
            if m.backfill.status == BackfillStatus::Running {
                Ok(())
            } else {
                Err(DomainError::NotApplicable("not running".to_owned()))
            }
        })
        .await;
    let (error, current) = refused(refused_late);
    assert_eq!(error, DomainError::NotApplicable("not running".to_owned()));
    assert_eq!(current, cancelled);
    assert_eq!(store.checkpoint(key).await.unwrap(), None);
    assert_eq!(observe(&store, key).await, before);
    store.close().await;
}

/// A cancel recorded as `App::mutate` records it; `spoil` may alter the decided state.
async fn cancel(
    store: &Store,
    key: &str,
    expected: Version,
    spoil: impl FnOnce(&mut Migration) + Send,
) -> Result<Migration, StoreError> {
    let op = Operation::Record(Event::BackfillCancelled);
    let forget = Alongside {
        forget_checkpoint: true,
        ..Alongside::default()
    };
    store
        .mutate_with(key, "rm", T0 + 3, TTL, forget, |current, fleet, _, next| {
            let (mut m, r) = rules::apply(current, expected, "stop", &op, fleet, next, T0 + 3)?;
            spoil(&mut m);
            Ok((m, r, op.action().to_owned()))
        })
        .await
        .map(|done| done.migration)
}

async fn a_cancel_and_the_forgetting_of_its_checkpoint_commit_together(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    let key = "users.backfilled";
    let (running, saved) = running_backfill(&store, key).await;
    let other = create(&store, "other.one", false, &[]).await;
    let before = observe(&store, key).await;

    // Refused by the domain: nothing changes, the position stays.
    let (error, current) = refused(cancel(&store, key, Version(1), |_| {}).await);
    assert!(matches!(error, DomainError::Stale { .. }), "{error:?}");
    assert_eq!(current, running);
    assert_eq!(observe(&store, key).await, before);
    assert_eq!(store.checkpoint(key).await.unwrap(), Some(saved.clone()));

    // Decided, then the state cannot be written (its version is another migration's): the
    // forgetting rolls back with the cancel.
    let failed = cancel(&store, key, running.version, |m| m.version = other.version).await;
    assert!(matches!(failed, Err(StoreError::Database(_))), "{failed:?}");
    assert_eq!(observe(&store, key).await, before);
    assert_eq!(store.checkpoint(key).await.unwrap(), Some(saved));

    // Committed: the position is gone by the time the cancel is returned.
    let cancelled = cancel(&store, key, running.version, |_| {}).await.unwrap();
    assert_eq!(cancelled.backfill.status, BackfillStatus::NotStarted);
    assert_eq!(store.get(key).await.unwrap(), Some(cancelled));
    assert_eq!(store.checkpoint(key).await.unwrap(), None);
    store.close().await;
}

/// What each replica's follower reads to learn of revokes made through the others: the tokens
/// revoked after a time, and the latest such time; a revoke takes no snapshot version.
async fn revoked_tokens_are_read_by_revoke_time(db: Db) {
    let db = TestDb::new(db).await;
    let store = open(&db).await;
    let kept = store
        .create_token(
            "kept",
            Role::Reader,
            &Scope::all(),
            &hash_token("kept-1"),
            T0,
        )
        .await
        .unwrap();
    let first = store
        .create_token(
            "first",
            Role::Reader,
            &Scope::all(),
            &hash_token("first-1"),
            T0,
        )
        .await
        .unwrap();
    let second = store
        .create_token(
            "second",
            Role::Reader,
            &Scope::all(),
            &hash_token("second-1"),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        store.tokens_revoked_after(i64::MIN).await.unwrap(),
        (vec![], None)
    );
    let version = store.snapshot_version().await.unwrap();

    store.revoke_token(first.id, T0 + 10).await.unwrap();
    store.revoke_token(second.id, T0 + 20).await.unwrap();
    let (mut ids, latest) = store.tokens_revoked_after(i64::MIN).await.unwrap();
    ids.sort_unstable();
    assert_eq!((ids, latest), (vec![first.id, second.id], Some(T0 + 20)));
    assert_eq!(
        store.tokens_revoked_after(T0 + 10).await.unwrap(),
        (vec![second.id], Some(T0 + 20))
    );
    assert_eq!(
        store.tokens_revoked_after(T0 + 20).await.unwrap(),
        (vec![], None)
    );
    assert_eq!(store.list_tokens().await.unwrap()[0].revoked_at_ms, None);
    assert_eq!(store.list_tokens().await.unwrap()[0].id, kept.id);
    assert_eq!(store.snapshot_version().await.unwrap(), version);
    store.close().await;
}

both_databases!(
    create_get_and_changed_since,
    mutate_applies_rules_and_refusals_change_nothing,
    audit_log_records_every_committed_change,
    heartbeats_and_the_live_fleet,
    tokens_create_find_revoke_list,
    revoked_tokens_are_read_by_revoke_time,
    concurrent_writers_take_distinct_consecutive_versions,
    concurrent_creates_of_one_key,
    committed_state_survives_close_and_reconnect,
    a_stale_writer_does_not_break_a_current_one,
    a_cancel_and_the_forgetting_of_its_checkpoint_commit_together,
    a_checkpoint_is_judged_on_the_stored_state,
);
