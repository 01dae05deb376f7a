//! Property test against the real server over HTTP: random sequences of ramps, advances,
//! retreats, recorded events, client heartbeats and clock ticks on one migration, with
//! occasional stale expected versions and empty reasons. After every step the migration is read
//! back and checked against the safety rules in the README:
//!
//! - a stage past `off` needs the expand DDL recorded (rule 2);
//! - no entity is at `shadow` or beyond while a backfill is not complete (rule 4);
//! - once an entity has been at `complete`, and until `old_shape_repaired` is accepted, no entity
//!   is at a stage that returns old values (rule 6);
//! - the stage moves one step at a time (rule 1), and never to `contracted` (rule 7);
//! - a backfill starts, and `complete` rises above 0, only when every live instance has applied
//!   the version the rule needs and every expected service is live (rules 3 and 5);
//! - the version grows by exactly one on an accepted change and not at all otherwise;
//! - a refused request (4xx) leaves the migration, the snapshot version and the audit log
//!   exactly as they were; an accepted one appends exactly one audit record (rule 9).
//!
//! Each step is also compared with `switchyard_domain::rules::apply` run on the state read
//! before it and on the fleet the test itself reported (a model of the server's behaviour).
//!
//! Each case starts its own server (fresh database) on a runtime built for the case. The clock
//! is the harness' `TestClock`, moved by hand: nothing sleeps.

use proptest::prelude::*;
use proptest::sample::select;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use switchyard_domain::gate;
use switchyard_domain::migration::BackfillStatus;
use switchyard_domain::rules::{self, DomainError};
use switchyard_domain::{
    BasisPoints, Event, Fleet, LiveInstance, Migration, Operation, Rule, Stage, Version,
};
use switchyard_tests::{CLIENT_TTL, Db, TestServer, parse_migration};

const KEY: &str = "users.username-to-handle";
const SERVICES: [&str; 2] = ["api", "worker"];

#[derive(Debug, Clone, Copy)]
enum StageChoice {
    /// No stage in the request: the current one.
    Omitted,
    Current,
    Next,
    Prev,
    Any(usize),
    /// The next stage when the current one is at 100%, else the current one: biases the walk
    /// forward so that cases reach the late stages.
    Ahead,
}

#[derive(Debug, Clone, Copy)]
enum EventChoice {
    /// The event that would move this migration forward now (resolved against its state).
    Useful,
    Expand,
    BackfillStarted,
    BackfillProgress {
        rows_done: u64,
        total: u64,
    },
    BackfillComplete,
    OldShapeRepaired,
    Contracted,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Ramp {
        stage: StageChoice,
        rollout_bp: u32,
    },
    Advance,
    Retreat,
    Record(EventChoice),
    /// An instance of `SERVICES[service]` reports `snapshot version + delta` as applied.
    Heartbeat {
        service: usize,
        instance: u8,
        delta: i64,
    },
    /// Moves the server's clock, so instances age out of the client TTL.
    Tick {
        secs: u64,
    },
    /// Whatever moves this migration forward now, resolved against its state and the fleet
    /// (see `resolve_action`): the missing event, a heartbeat a rule waits for, or a ramp to
    /// 100% of the current or next stage. Keeps the walk reaching the late stages.
    Forward,
    /// Steps the front back: ramps the current stage to 0%, or retreats when it is at 0%. With
    /// `repair`, records `old_shape_repaired` first when the old shape is stale and nothing is
    /// at `complete` (without it, stepping back runs into rule 6).
    Backward {
        repair: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum Expected {
    Current,
    /// The current version plus this offset (clamped at 0).
    Stale(i64),
}

#[derive(Debug, Clone)]
struct Step {
    action: Action,
    expected: Expected,
    reason: &'static str,
}

#[derive(Debug, Clone)]
struct Case {
    drive: u32,
    has_backfill: bool,
    expected_services: Vec<&'static str>,
    steps: Vec<Step>,
}

fn stage_choice() -> impl Strategy<Value = StageChoice> {
    prop_oneof![
        1 => Just(StageChoice::Omitted),
        2 => Just(StageChoice::Current),
        2 => Just(StageChoice::Next),
        5 => Just(StageChoice::Ahead),
        1 => Just(StageChoice::Prev),
        1 => (0..Stage::ALL.len()).prop_map(StageChoice::Any),
    ]
}

/// Biased to the two ends, where stages change.
fn rollout_bp() -> impl Strategy<Value = u32> {
    prop_oneof![5 => Just(10_000u32), 2 => Just(0u32), 3 => 0u32..=10_000]
}

fn event_choice() -> impl Strategy<Value = EventChoice> {
    prop_oneof![
        6 => Just(EventChoice::Useful),
        1 => Just(EventChoice::Expand),
        1 => Just(EventChoice::BackfillStarted),
        1 => (0u64..1000, 0u64..2000)
            .prop_map(|(rows_done, total)| EventChoice::BackfillProgress { rows_done, total }),
        1 => Just(EventChoice::BackfillComplete),
        1 => Just(EventChoice::OldShapeRepaired),
        1 => Just(EventChoice::Contracted),
    ]
}

/// `drive` weighs `Forward` against the other actions (the others weigh 22 together).
fn action(drive: u32) -> impl Strategy<Value = Action> {
    prop_oneof![
        drive => Just(Action::Forward),
        3 => any::<bool>().prop_map(|repair| Action::Backward { repair }),
        8 => (stage_choice(), rollout_bp())
            .prop_map(|(stage, rollout_bp)| Action::Ramp { stage, rollout_bp }),
        2 => Just(Action::Advance),
        1 => Just(Action::Retreat),
        4 => event_choice().prop_map(Action::Record),
        3 => (0..SERVICES.len(), 0u8..3, prop_oneof![4 => Just(0i64), 2 => -3i64..0, 1 => Just(1i64)])
            .prop_map(|(service, instance, delta)| Action::Heartbeat { service, instance, delta }),
        1 => prop_oneof![Just(5u64), Just(31u64)].prop_map(|secs| Action::Tick { secs }),
    ]
}

fn step(drive: u32) -> impl Strategy<Value = Step> {
    let expected = prop_oneof![
        14 => Just(Expected::Current),
        1 => prop_oneof![Just(-1i64), Just(1i64), Just(-1000i64)].prop_map(Expected::Stale),
    ];
    let reason = prop_oneof![
        14 => select(vec!["ramp per runbook", "  padded reason  ", "step forward"]),
        1 => select(vec!["", "   "]),
    ];
    (action(drive), expected, reason).prop_map(|(action, expected, reason)| Step {
        action,
        expected,
        reason,
    })
}

/// Each case has its own drive: some wander, some push forward hard enough to reach `complete`
/// and then exercise the rules about stepping back from it.
fn case() -> impl Strategy<Value = Case> {
    select(vec![5u32, 15, 60])
        .prop_flat_map(|drive| {
            (
                Just(drive),
                any::<bool>(),
                select(vec![vec![], vec!["api"], vec!["api", "worker"]]),
                prop::collection::vec(step(drive), 10..=25),
            )
        })
        .prop_map(|(drive, has_backfill, expected_services, steps)| Case {
            drive,
            has_backfill,
            expected_services,
            steps,
        })
}

/// What the test knows independently of the server.
struct Model {
    state: Migration,
    snapshot: u64,
    audit: Vec<Value>,
    /// (service, instance) → (applied version, last seen ms), as reported by this test.
    instances: BTreeMap<(String, String), (u64, i64)>,
    /// An entity has been at `complete` and no `old_shape_repaired` was accepted since.
    old_shape_stale: bool,
    /// The front has been at `complete` 100%: from then on `Forward` walks back down.
    turned: bool,
    /// The rule that refused the last mutation, if one did.
    last_rule: Option<u64>,
}

impl Model {
    fn fleet(&self, now: i64) -> Fleet {
        let live_after = now - CLIENT_TTL.as_millis() as i64;
        Fleet {
            live: self
                .instances
                .iter()
                .filter(|(_, (_, seen))| *seen >= live_after)
                .map(|((service, id), (applied, _))| LiveInstance {
                    service: service.clone(),
                    instance_id: id.clone(),
                    applied_version: Version(*applied),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Coverage {
    cases: u64,
    accepted: BTreeMap<&'static str, u64>,
    refused: BTreeMap<String, u64>,
    furthest: BTreeMap<Stage, u64>,
    reached_complete: u64,
    repaired: u64,
}

static COVERAGE: Mutex<Option<Coverage>> = Mutex::new(None);

async fn read_state(ts: &TestServer) -> (Migration, u64, Vec<Value>) {
    let migration = parse_migration(ts.migration(KEY).await).expect("migration JSON");
    let snapshot = ts.snapshot_version().await;
    let (status, body) = ts
        .get(&format!("/v1/migrations/{KEY}/audit?limit=500"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = body["entries"].as_array().expect("audit entries").clone();
    (migration, snapshot, entries)
}

fn now(ts: &TestServer) -> i64 {
    (ts.clock.clock())()
}

/// The request and domain operation a mutating step makes from the current state.
fn build(action: Action, m: &Migration) -> (Operation, &'static str, Value) {
    match action {
        Action::Ramp { stage, rollout_bp } => {
            let stage = match stage {
                StageChoice::Omitted => None,
                StageChoice::Current => Some(m.stage),
                StageChoice::Next => Some(m.stage.next().unwrap_or(m.stage)),
                StageChoice::Prev => Some(m.stage.prev().unwrap_or(m.stage)),
                StageChoice::Any(i) => Some(Stage::ALL[i]),
                StageChoice::Ahead if m.rollout_bp.is_full() => {
                    Some(m.stage.next().unwrap_or(m.stage))
                }
                StageChoice::Ahead => Some(m.stage),
            };
            let mut body = json!({ "rollout_bp": rollout_bp });
            if let Some(s) = stage {
                body["stage"] = s.as_str().into();
            }
            let op = Operation::SetRollout {
                stage,
                rollout: BasisPoints::new(rollout_bp).unwrap(),
            };
            (op, "rollout", body)
        }
        Action::Advance => (Operation::Advance, "advance", json!({})),
        Action::Retreat => (Operation::Retreat, "retreat", json!({})),
        Action::Record(choice) => {
            let event = resolve_event(choice, m);
            let mut body = json!({ "event": event.as_str() });
            if let Event::BackfillProgress {
                rows_done,
                rows_total_estimate,
            } = event
            {
                body["rows_done"] = rows_done.into();
                body["rows_total_estimate"] = rows_total_estimate.into();
            }
            (Operation::Record(event), "events", body)
        }
        Action::Heartbeat { .. }
        | Action::Tick { .. }
        | Action::Forward
        | Action::Backward { .. } => {
            unreachable!("not a mutation")
        }
    }
}

/// Turns `Forward` and `Backward` into a concrete action for the current state; other actions
/// are returned as they are.
fn resolve_action(action: Action, model: &Model, now: i64) -> Action {
    let m = &model.state;
    let action = match action {
        // Walking back down from `complete`: step back until rule 6 refuses, then repair.
        Action::Forward if model.turned => Action::Backward {
            repair: model.last_rule == Some(6),
        },
        other => other,
    };
    match action {
        Action::Forward => {}
        Action::Backward { repair: true }
            if m.old_shape_stale && m.front().share_past_old_writes() == 0 =>
        {
            return Action::Record(EventChoice::OldShapeRepaired);
        }
        Action::Backward { .. } if m.rollout_bp.is_zero() => return Action::Retreat,
        Action::Backward { .. } => {
            return Action::Ramp {
                stage: StageChoice::Current,
                rollout_bp: 0,
            };
        }
        other => return other,
    }
    let ahead = Action::Ramp {
        stage: StageChoice::Ahead,
        rollout_bp: 10_000,
    };
    if !m.expand_applied {
        return Action::Record(EventChoice::Expand);
    }
    // Rules 3 and 5 wait for the fleet: report a heartbeat for what they wait on.
    let waits_on = match (m.backfill.status, m.front().share_past_old_writes()) {
        (BackfillStatus::NotStarted, _) => m.full_since.get(&Stage::DualWrite),
        (_, 0) if m.stage >= Stage::Rampdown => m.full_since.get(&Stage::Rampdown),
        _ => None,
    };
    if let Some(&since) = waits_on {
        let fleet = model.fleet(now);
        let lagging = fleet
            .live
            .iter()
            .find(|i| i.applied_version < since)
            .map(|i| (i.service.clone(), i.instance_id.clone()));
        let missing = m
            .expected_services
            .iter()
            .find(|s| !fleet.live.iter().any(|i| &i.service == *s))
            .map(|s| (s.clone(), format!("{s}-0")));
        if let Some((service, id)) = lagging.or(missing) {
            return Action::Heartbeat {
                service: SERVICES.iter().position(|s| *s == service).unwrap(),
                instance: id.rsplit('-').next().unwrap().parse().unwrap(),
                delta: 0,
            };
        }
        if m.backfill.status == BackfillStatus::NotStarted {
            return Action::Record(EventChoice::BackfillStarted);
        }
    }
    match m.backfill.status {
        BackfillStatus::NotStarted => ahead,
        BackfillStatus::Running => Action::Record(EventChoice::BackfillComplete),
        _ => ahead,
    }
}

fn resolve_event(choice: EventChoice, m: &Migration) -> Event {
    match choice {
        EventChoice::Useful if !m.expand_applied => Event::ExpandApplied,
        EventChoice::Useful if m.backfill.status == BackfillStatus::NotStarted => {
            Event::BackfillStarted
        }
        EventChoice::Useful if m.backfill.status == BackfillStatus::Running => {
            Event::BackfillComplete
        }
        EventChoice::Useful if m.old_shape_stale => Event::OldShapeRepaired,
        EventChoice::Useful => Event::BackfillProgress {
            rows_done: 1,
            rows_total_estimate: 1,
        },
        EventChoice::Expand => Event::ExpandApplied,
        EventChoice::BackfillStarted => Event::BackfillStarted,
        EventChoice::BackfillProgress { rows_done, total } => Event::BackfillProgress {
            rows_done,
            rows_total_estimate: total,
        },
        EventChoice::BackfillComplete => Event::BackfillComplete,
        EventChoice::OldShapeRepaired => Event::OldShapeRepaired,
        EventChoice::Contracted => Event::Contracted,
    }
}

/// The HTTP status and code a domain refusal maps to.
fn expected_refusal(error: &DomainError) -> (StatusCode, &'static str, Option<Rule>) {
    match error {
        DomainError::Stale { .. } => (
            StatusCode::CONFLICT,
            "stale_version",
            Some(Rule::ExpectedVersion),
        ),
        DomainError::Refused {
            rule: Rule::Reason, ..
        } => (
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            Some(Rule::Reason),
        ),
        DomainError::Refused { rule, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "rule_refused",
            Some(*rule),
        ),
        DomainError::NotApplicable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_applicable", None),
        DomainError::Unchanged(_) => unreachable!("answered 200 with the state, checked above"),
        DomainError::NeedsApproval { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "approval_required", None)
        }
        DomainError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_argument", None),
    }
}

fn audit_state(entry: &Value, side: &str) -> Migration {
    parse_migration(entry[side].clone())
        .unwrap_or_else(|e| panic!("audit entry's {side} is not a migration ({e}): {entry}"))
}

/// The invariants every state must satisfy, whatever happened.
fn check_state(ctx: &str, m: &Migration, model_stale: bool) {
    assert_ne!(
        m.stage,
        Stage::Contracted,
        "{ctx}: rule 7: never contracted"
    );
    assert!(
        m.stage == Stage::Off || m.expand_applied,
        "{ctx}: rule 2: stage {} without expand recorded",
        m.stage
    );
    if m.has_backfill && m.front().leading() >= Stage::Shadow {
        assert_eq!(
            m.backfill.status,
            BackfillStatus::Complete,
            "{ctx}: rule 4: entities at {} before the backfill completed",
            m.front().leading()
        );
    }
    assert_eq!(
        m.old_shape_stale, model_stale,
        "{ctx}: rule 6: the server's old_shape_stale disagrees with the history"
    );
    if model_stale {
        assert!(
            !m.front().trailing().returns_old(),
            "{ctx}: rule 6: entities at {} return old values after old writes stopped",
            m.front().trailing()
        );
    }
}

/// The invariants of one accepted change from `before` to `after`.
fn check_transition(ctx: &str, before: &Migration, after: &Migration, fleet: &Fleet) {
    assert_eq!(
        after.version.0,
        before.version.0 + 1,
        "{ctx}: an accepted change takes exactly the next version"
    );
    let (from, to) = (before.stage, after.stage);
    let one_step = to == from
        || (Some(to) == from.next() && before.rollout_bp.is_full())
        || (Some(to) == from.prev() && before.rollout_bp.is_zero());
    assert!(
        one_step,
        "{ctx}: rule 1: {from} at {} to {to}",
        before.rollout_bp
    );
    let everyone_applied = |since: Version| {
        fleet.live.iter().all(|i| i.applied_version >= since)
            && before
                .expected_services
                .iter()
                .all(|s| fleet.live.iter().any(|i| &i.service == s))
    };
    if before.backfill.status == BackfillStatus::NotStarted
        && after.backfill.status == BackfillStatus::Running
    {
        let since = before.full_since.get(&Stage::DualWrite);
        assert!(
            since.is_some_and(|v| everyone_applied(*v)),
            "{ctx}: rule 3: backfill started with dual_write since {since:?}, fleet {fleet:?}"
        );
    }
    if after.front().share_past_old_writes() > before.front().share_past_old_writes() {
        let since = before.full_since.get(&Stage::Rampdown);
        assert!(
            since.is_some_and(|v| everyone_applied(*v)),
            "{ctx}: rule 5: complete raised with rampdown since {since:?}, fleet {fleet:?}"
        );
    }
}

async fn run_case(db: Db, case: Case) {
    let ts = TestServer::start(db).await;
    let created = ts
        .create(KEY, case.has_backfill, &case.expected_services)
        .await;
    let (state, snapshot, audit) = read_state(&ts).await;
    assert_eq!(parse_migration(created).unwrap(), state);
    let mut model = Model {
        state,
        snapshot,
        audit,
        instances: BTreeMap::new(),
        old_shape_stale: false,
        turned: false,
        last_rule: None,
    };
    let mut cov = Coverage {
        cases: 1,
        ..Coverage::default()
    };
    let mut furthest = Stage::Off;

    for (i, step) in case.steps.iter().enumerate() {
        let ctx = format!("step {i} {step:?} on {:?}", model.state.front());
        let now = now(&ts);
        let action = resolve_action(step.action, &model, now);
        let ctx = format!("{ctx} ({action:?})");
        match action {
            Action::Tick { secs } => {
                ts.clock.advance(Duration::from_secs(secs));
                continue;
            }
            Action::Heartbeat {
                service,
                instance,
                delta,
            } => {
                let service = SERVICES[service];
                let id = format!("{service}-{instance}");
                let applied = (model.snapshot as i64 + delta).max(0) as u64;
                let (status, body) = ts
                    .post(
                        "/v1/clients/heartbeat",
                        json!({ "service": service, "instance_id": id, "applied_version": applied }),
                    )
                    .await;
                if applied <= model.snapshot {
                    assert_eq!(status, StatusCode::OK, "{ctx}: {body}");
                    assert_eq!(body["snapshot_version"], model.snapshot, "{ctx}");
                    model
                        .instances
                        .insert((service.to_owned(), id), (applied, now));
                    *cov.accepted.entry("heartbeat").or_default() += 1;
                } else {
                    assert_eq!(
                        status,
                        StatusCode::BAD_REQUEST,
                        "{ctx}: a version newer than the snapshot: {body}"
                    );
                    *cov.refused.entry("heartbeat 400".to_owned()).or_default() += 1;
                }
                let (after, snapshot, audit) = read_state(&ts).await;
                assert_eq!(
                    after, model.state,
                    "{ctx}: a heartbeat changed the migration"
                );
                assert_eq!(snapshot, model.snapshot, "{ctx}");
                assert_eq!(audit, model.audit, "{ctx}");
                // The server's view of the fleet is the one the test reported.
                let (status, body) = ts.get("/v1/clients").await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let live_after = now - CLIENT_TTL.as_millis() as i64;
                let listed: BTreeMap<(String, String), (u64, i64, bool)> = body["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        (
                            (
                                i["service"].as_str().unwrap().to_owned(),
                                i["instance_id"].as_str().unwrap().to_owned(),
                            ),
                            (
                                i["applied_version"].as_u64().unwrap(),
                                i["last_seen_ms"].as_i64().unwrap(),
                                i["live"].as_bool().unwrap(),
                            ),
                        )
                    })
                    .collect();
                let expected: BTreeMap<(String, String), (u64, i64, bool)> = model
                    .instances
                    .iter()
                    .map(|(k, (applied, seen))| (k.clone(), (*applied, *seen, *seen >= live_after)))
                    .collect();
                assert_eq!(listed, expected, "{ctx}: /v1/clients");
                continue;
            }
            _ => {}
        }

        let before = model.state.clone();
        let (op, path, mut body) = build(action, &before);
        let expected_version = match step.expected {
            Expected::Current => before.version.0,
            Expected::Stale(offset) => (before.version.0 as i64 + offset).max(0) as u64,
        };
        body["expected_version"] = expected_version.into();
        body["reason"] = step.reason.into();
        let ctx = format!("{ctx} as {op:?} expecting v{expected_version}");
        let fleet = model.fleet(now);
        let predicted = rules::apply(
            &before,
            Version(expected_version),
            step.reason,
            &op,
            &fleet,
            Version(model.snapshot + 1),
            now,
        )
        .map(|(mut next, reason)| {
            // The server also records a closing live window's comparisons; none are reported
            // here, so they are zero.
            gate::record_closed_live_window(&before, &mut next, &[]);
            (next, reason)
        });

        let (status, response) = ts.post(&format!("/v1/migrations/{KEY}/{path}"), body).await;
        let (after, snapshot, audit) = read_state(&ts).await;

        let accepted = status.is_success();
        assert!(
            accepted || status.is_client_error(),
            "{ctx}: neither accepted nor refused: {status} {response}"
        );
        let unchanged = matches!(predicted, Err(DomainError::Unchanged(_)));
        if unchanged {
            // Asked for what already holds: answered with the state, and nothing written.
            assert_eq!(status, StatusCode::OK, "{ctx}: unchanged: {response}");
            let returned = parse_migration(response.clone()).unwrap();
            assert_eq!((&returned, &after), (&before, &before), "{ctx}: unchanged");
            assert_eq!(
                snapshot, model.snapshot,
                "{ctx}: unchanged, yet the version moved"
            );
            assert_eq!(audit, model.audit, "{ctx}: unchanged, yet audited");
            *cov.accepted.entry("unchanged").or_default() += 1;
            continue;
        }
        if accepted {
            assert_eq!(status, StatusCode::OK, "{ctx}: {response}");
            let returned = parse_migration(response.clone()).unwrap();
            assert_eq!(returned, after, "{ctx}: the response is what GET shows");
            assert_eq!(snapshot, model.snapshot + 1, "{ctx}: snapshot version");
            assert_eq!(after.version.0, snapshot, "{ctx}");
            check_transition(&ctx, &before, &after, &fleet);
            // Exactly one new audit record, on top of the unchanged older ones.
            assert_eq!(
                audit.len(),
                model.audit.len() + 1,
                "{ctx}: one audit record"
            );
            assert_eq!(
                audit[1..],
                model.audit[..],
                "{ctx}: the audit log is append-only"
            );
            let entry = &audit[0];
            assert_eq!(entry["action"], op.action(), "{ctx}");
            assert_eq!(entry["reason"], step.reason.trim(), "{ctx}");
            assert_eq!(entry["version"], after.version.0, "{ctx}");
            assert_eq!(entry["at_ms"], now, "{ctx}");
            assert!(
                entry["actor"].as_str().is_some_and(|a| a.contains("admin")),
                "{ctx}: actor {}",
                entry["actor"]
            );
            assert_eq!(audit_state(entry, "before"), before, "{ctx}: audit before");
            assert_eq!(audit_state(entry, "after"), after, "{ctx}: audit after");
            *cov.accepted.entry(op.action()).or_default() += 1;
            model.last_rule = None;
        } else {
            // A refusal changes nothing: state, version counter, audit log.
            assert_eq!(
                after, before,
                "{ctx}: refused with {status} {response} but changed"
            );
            assert_eq!(
                snapshot, model.snapshot,
                "{ctx}: refused but the version moved"
            );
            assert_eq!(audit, model.audit, "{ctx}: refused but audited");
            let rule = response["rule"].as_u64();
            model.last_rule = rule;
            *cov.refused
                .entry(format!(
                    "{} {}{}",
                    status.as_u16(),
                    response["code"].as_str().unwrap_or("?"),
                    rule.map_or(String::new(), |r| format!(" rule {r}"))
                ))
                .or_default() += 1;
        }

        // The model: the domain's own decision on the state and fleet this test knows.
        match predicted {
            Ok((next, reason)) => {
                assert!(
                    accepted,
                    "{ctx}: the rules allow it but the server said {status} {response}"
                );
                assert_eq!(
                    after, next,
                    "{ctx}: the server's result differs from the rules'"
                );
                assert_eq!(audit[0]["reason"], reason.as_str(), "{ctx}");
            }
            Err(error) => {
                assert!(
                    !accepted,
                    "{ctx}: the rules refuse it ({error}) but the server accepted"
                );
                let (want_status, want_code, want_rule) = expected_refusal(&error);
                assert_eq!(
                    (status, response["code"].as_str(), response["rule"].as_u64()),
                    (
                        want_status,
                        Some(want_code),
                        want_rule.map(|r| u64::from(r.number()))
                    ),
                    "{ctx}: refusal {error}: {response}"
                );
                if want_status != StatusCode::BAD_REQUEST {
                    let current =
                        parse_migration(response["current"].clone()).unwrap_or_else(|e| {
                            panic!("{ctx}: refusal without current ({e}): {response}")
                        });
                    assert_eq!(
                        current, before,
                        "{ctx}: the refusal carries the current state"
                    );
                }
            }
        }

        if accepted && op == Operation::Record(Event::OldShapeRepaired) {
            model.old_shape_stale = false;
            cov.repaired += 1;
        }
        if after.front().share_past_old_writes() > 0 {
            model.old_shape_stale = true;
        }
        check_state(&ctx, &after, model.old_shape_stale);
        furthest = furthest.max(after.front().leading());
        model.turned |= after.stage == Stage::Complete && after.rollout_bp.is_full();
        model.state = after;
        model.snapshot = snapshot;
        model.audit = audit;
    }

    *cov.furthest.entry(furthest).or_default() += 1;
    if furthest >= Stage::Complete {
        cov.reached_complete += 1;
    }
    ts.stop().await;
    report(db, case.drive, &cov);
}

/// Prints the case's coverage and the running totals (visible with `--nocapture`).
fn report(db: Db, drive: u32, case: &Coverage) {
    let mut total = COVERAGE.lock().unwrap_or_else(|e| e.into_inner());
    let total = total.get_or_insert_with(Coverage::default);
    total.cases += 1;
    for (k, v) in &case.accepted {
        *total.accepted.entry(k).or_default() += v;
    }
    for (k, v) in &case.refused {
        *total.refused.entry(k.clone()).or_default() += v;
    }
    for (k, v) in &case.furthest {
        *total.furthest.entry(*k).or_default() += v;
    }
    total.reached_complete += case.reached_complete;
    total.repaired += case.repaired;
    let accepted: u64 = case.accepted.values().sum();
    let refused: u64 = case.refused.values().sum();
    eprintln!(
        "[{db:?}] case (drive {drive}): {accepted} accepted, {refused} refused, furthest {:?} | totals over {} \
         cases: furthest stage per case {:?} ({} reached complete); accepted {:?}; refused {:?}; \
         repaired {}",
        case.furthest.keys().next(),
        total.cases,
        total.furthest,
        total.reached_complete,
        total.accepted,
        total.refused,
        total.repaired,
    );
}

fn run(db: Db, case: Case) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime per case");
    runtime.block_on(run_case(db, case));
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 64,
        // No regression files: this suite writes nothing beside its sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(12))]
    #[test]
    fn random_operations_keep_the_safety_rules_sqlite(case in case()) {
        run(Db::Sqlite, case);
    }
}

proptest! {
    #![proptest_config(config(6))]
    #[test]
    fn random_operations_keep_the_safety_rules_postgres(case in case()) {
        run(Db::Postgres, case);
    }
}
