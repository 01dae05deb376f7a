//! The operations of the flag server, independent of transport. HTTP and gRPC handlers parse
//! their wire forms into domain values, call these methods, and map the `ApiError` back.

use crate::approvals::Via;
use crate::auth::{Authenticator, Principal, generate_token, hash_token};
use crate::error::ApiError;
use crate::hub::{Hub, Snapshot, WatchItem};
use crate::store::{
    Alongside, AuditRecord, Checkpoint, ClientInstance, HeartbeatOutcome, InstanceOwner,
    MismatchEntity, Registrant, Store, StoredSettings, TokenRecord,
};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use switchyard_domain::gate::{self, GatePolicy, GateReport};
use switchyard_domain::migration::BackfillStatus;
use switchyard_domain::migration::{DEFAULT_SHADOW_SAMPLE, DEFAULT_SOAK_SECONDS};
use switchyard_domain::rules::{self, DomainError, parse_reason};
use switchyard_domain::traffic::{MismatchSample, TrafficCounts, minute_of};
use switchyard_domain::types::{TextKind, check_count, check_text, parse_label};
use switchyard_domain::usage::{self, Observation, StatementSummary};
use switchyard_domain::{
    BasisPoints, Database, Event, Migration, MigrationKey, NewMigration, Operation, Permission,
    Plan, Role, Scope, Stage, TargetName, Version,
};
use switchyard_proto::json::{BackfillSettings, BackfillSettingsChange};

/// Milliseconds since the Unix epoch. Injectable so tests can move time without sleeping.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

/// What a backfill runner reports after a batch.
pub struct RunnerPosition<'a> {
    /// Opaque to the server: the runner's keyset position.
    pub cursor: &'a str,
    pub rows_done: u64,
    pub rows_total_estimate: u64,
    /// Who runs it (service/instance); empty: the token's name.
    pub runner: &'a str,
    /// The run it belongs to (`backfill.started_version`); `None`: not checked.
    pub started_version: Option<Version>,
    /// Whether it holds between batches for the database's health; `None`: it does not.
    pub throttle: Option<RunnerThrottle<'a>>,
}

/// A runner's throttle state, as it reports it with a checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunnerThrottle<'a> {
    /// Why it holds; empty: it does not.
    pub reason: &'a str,
    /// How long the current hold has lasted (a duration, not a time: the runner's clock may
    /// differ from the server's).
    pub held_ms: u64,
    /// Time held over the whole backfill.
    pub throttled_ms: u64,
}

pub struct App {
    pub store: Arc<Store>,
    pub hub: Arc<Hub>,
    pub auth: Authenticator,
    pub clock: Clock,
    /// A client instance is live if it reported within this long.
    pub client_ttl: Duration,
    /// How long per-minute traffic rollups are kept.
    pub traffic_retention: Duration,
    /// How many live instances one token may have registered.
    pub max_instances_per_token: u32,
    /// The contract gate's server-wide settings (soak floor, new-shape error limit).
    pub gate_policy: GatePolicy,
    /// The changes a second operator must approve (`--require-approval`).
    pub approval_policy: switchyard_domain::approval::ApprovalPolicy,
    /// The names of the databases this server is configured to observe
    /// (`--target-database NAME=URL`); their URLs stay in the configuration.
    pub target_names: std::collections::BTreeSet<TargetName>,
    /// How often the usage observer reads the targets (the gate's staleness bound).
    pub observe: crate::observe::ObserveConfig,
}

/// Evidence rows one usage or gate answer reads at most (newest first: a blocking use is never
/// cut off by older ones).
const USAGE_ROWS: u32 = 10_000;
/// How long a backfill holds itself back before a webhook says so.
const HELD_NOTICE_AFTER_MS: u64 = 60_000;

/// A migration's usage evidence, as `GET /v1/migrations/{key}/usage` answers it.
#[derive(Debug, Clone)]
pub struct Usage {
    pub migration: Arc<Migration>,
    pub since_ms: i64,
    pub window_from_ms: Option<i64>,
    pub covered_since: Option<(i64, String)>,
    pub last_pass_ms: Option<i64>,
    pub last_pass_duration_ms: Option<u64>,
    pub statements_on_target: Option<u64>,
    pub failing: Option<(String, i64)>,
    pub check: gate::Check,
    pub statements: Vec<StatementSummary>,
}

/// Migrations whose lifecycle needs attention.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Contracted, yet live instances still name them in heartbeats: code to clean up.
    pub contracted_in_use: Vec<(String, Vec<ClientInstance>)>,
    /// At complete 100% for longer than asked, not contracted: (key, complete since).
    pub complete_not_contracted: Vec<(String, i64)>,
}

/// Where a backfill is: its recorded state and its runner's last checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillProgress {
    pub key: String,
    pub status: BackfillStatus,
    pub paused: bool,
    pub cursor: String,
    pub rows_done: u64,
    pub rows_total_estimate: u64,
    pub rate_rows_per_second: f64,
    /// Seconds left at the current rate, when both are known.
    pub eta_seconds: Option<u64>,
    pub runner: String,
    pub updated_at_ms: Option<i64>,
    /// Why the runner holds between batches; empty: it does not.
    pub throttle_reason: String,
    pub throttled_since_ms: Option<i64>,
    pub throttled_ms: u64,
    /// The settings release managers set for it (`switchyard backfill set`).
    pub settings: BackfillSettings,
    /// Who changed them last, when and why (`None`: never changed).
    pub settings_changed: Option<(String, i64, String)>,
}

impl BackfillProgress {
    fn new(m: &Migration, checkpoint: Option<Checkpoint>, stored: StoredSettings) -> Self {
        let c = checkpoint.unwrap_or(Checkpoint {
            cursor: String::new(),
            rows_done: m.backfill.rows_done,
            rows_total_estimate: m.backfill.rows_total_estimate,
            rate_rows_per_second: 0.0,
            runner: String::new(),
            updated_at_ms: 0,
            throttle_reason: String::new(),
            throttled_since_ms: 0,
            throttled_ms: 0,
        });
        // A hold reported by a runner of a backfill that is no longer running is history.
        let holding = m.backfill.status == BackfillStatus::Running && !c.throttle_reason.is_empty();
        let left = c.rows_total_estimate.saturating_sub(c.rows_done);
        let eta = (m.backfill.status == BackfillStatus::Running
            && c.rate_rows_per_second > 0.0
            && c.rows_total_estimate > 0)
            .then(|| (left as f64 / c.rate_rows_per_second).ceil() as u64);
        Self {
            key: m.key.to_string(),
            status: m.backfill.status,
            paused: m.backfill.paused,
            cursor: c.cursor,
            rows_done: c.rows_done,
            rows_total_estimate: c.rows_total_estimate,
            rate_rows_per_second: c.rate_rows_per_second,
            eta_seconds: eta,
            runner: c.runner,
            updated_at_ms: (c.updated_at_ms > 0).then_some(c.updated_at_ms),
            throttle_reason: if holding {
                c.throttle_reason
            } else {
                String::new()
            },
            throttled_since_ms: holding.then_some(c.throttled_since_ms),
            throttled_ms: c.throttled_ms,
            settings: stored.settings,
            settings_changed: (stored.updated_at_ms > 0).then_some((
                stored.updated_by,
                stored.updated_at_ms,
                stored.reason,
            )),
        }
    }
}

/// Checks settings a release manager sends: each within what a runner can use.
fn check_settings(s: &BackfillSettings) -> Result<(), ApiError> {
    fn at_most(
        name: &str,
        value: Option<u64>,
        min: u64,
        max: u64,
        unit: &str,
    ) -> Result<(), ApiError> {
        match value {
            Some(v) if v < min || v > max => Err(ApiError::invalid(format!(
                "{name} is {v}: allowed {min} to {max} {unit}{}",
                if min == 0 { " (0 turns it off)" } else { "" }
            ))),
            _ => Ok(()),
        }
    }
    at_most("batch_size", s.batch_size, 1, 1_000_000, "rows")?;
    at_most(
        "max_replica_lag_ms",
        s.max_replica_lag_ms,
        0,
        86_400_000,
        "milliseconds",
    )?;
    at_most(
        "max_replica_lag_bytes",
        s.max_replica_lag_bytes,
        0,
        1 << 40,
        "bytes",
    )?;
    at_most(
        "max_wal_bytes_per_second",
        s.max_wal_bytes_per_second,
        0,
        1 << 40,
        "bytes",
    )?;
    at_most(
        "batch_target_ms",
        s.batch_target_ms,
        0,
        3_600_000,
        "milliseconds",
    )?;
    if let Some(rate) = s.max_rows_per_second
        && !(rate.is_finite() && (0.0..=1e9).contains(&rate))
    {
        return Err(ApiError::invalid(format!(
            "max_rows_per_second is {rate}: allowed 0 (no limit) to 1000000000"
        )));
    }
    Ok(())
}

/// What a release manager sends to create a migration.
#[derive(Debug, Clone, Default)]
pub struct CreateMigrationInput {
    pub key: String,
    pub description: String,
    pub owner: String,
    pub entity_kind: String,
    pub soak_seconds: Option<u64>,
    pub expected_services: Vec<String>,
    pub has_backfill: bool,
    pub shadow_sample_bp: Option<u32>,
    pub reason: String,
    pub target_database: Option<String>,
    pub old_shape: Vec<String>,
    /// Retire before drop: the probation after `retired`, in seconds (`None`: drop directly).
    pub retire_probation_seconds: Option<u64>,
}

/// The longest retire probation: a retired shape is meant to be dropped soon, not kept.
pub const MAX_RETIRE_PROBATION_SECONDS: u64 = 90 * 24 * 3600;

/// The answer to "what do I do with this entity?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key: String,
    pub bucket: Option<u32>,
    pub plan: Plan,
    pub version: Version,
}

/// How long a mutation's response waits for the local snapshot to include it.
const READ_YOUR_WRITE_WAIT: Duration = Duration::from_secs(2);
/// What clients reported of a migration over a period: per minute, in total, and per service
/// (with the last minute each used the old shape).
pub struct TrafficView {
    pub minutes: Vec<(i64, TrafficCounts)>,
    pub total: TrafficCounts,
    pub services: Vec<(String, TrafficCounts, Option<i64>)>,
}

/// How long a replica behind a version its database has (a poller holds it from another
/// replica) waits to catch up before answering "retry shortly".
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// The largest audit page.
pub const MAX_AUDIT_PAGE: u32 = 500;
/// Instances per page of `GET /v1/clients` when the caller does not say, and at most.
pub const DEFAULT_INSTANCE_PAGE: u32 = 1000;
pub const MAX_INSTANCE_PAGE: u32 = 5000;
/// Between service and instance id in an instance page's cursor: a tab, which no label may
/// hold, so any service name (slashes included) splits back unambiguously.
const CURSOR_SEPARATOR: char = '\t';

/// A page of instances and the cursor of the next page, if the page is full.
#[derive(Debug, Clone)]
pub struct InstancePage {
    pub instances: Vec<InstanceView>,
    pub next: Option<String>,
}

/// One instance as the lists show it.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub instance: ClientInstance,
    /// Seen within the client TTL: rules 3 and 5 wait for it.
    pub live: bool,
    /// For a migration's list: whether the instance's heartbeats name the migration (it
    /// evaluates it or runs its backfill). `None` in the fleet's list.
    pub uses_migration: Option<bool>,
}
pub use switchyard_proto::limits::{
    MAX_BODY_BYTES, MAX_ENTITY_KEY_CHARS, MAX_MISMATCH_DESCRIPTION_CHARS, MAX_MISMATCH_SAMPLES,
    MAX_REPORTED_MIGRATIONS, MAX_TELEMETRY_ENTRIES,
};
/// Default age, in days at complete 100%, after which an uncontracted migration is listed.
pub const DEFAULT_COMPLETE_FOR_DAYS: u32 = 14;

impl App {
    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }

    pub async fn create_migration(
        &self,
        who: &Principal,
        input: CreateMigrationInput,
    ) -> Result<Migration, ApiError> {
        who.require(Permission::Operate)?;
        let reason = parse_reason(&input.reason)?;
        let key = MigrationKey::parse(&input.key)?;
        who.require_on(Permission::Operate, key.as_str())?;
        let text = |what: &str, raw: String, max: usize, kind| -> Result<String, ApiError> {
            if raw.len() > max {
                return Err(ApiError::invalid(format!(
                    "invalid {what}: allowed up to {max} characters of printable text"
                )));
            }
            check_text(what, &raw, kind)?;
            Ok(raw.trim().to_owned())
        };
        let soak_seconds = input.soak_seconds.unwrap_or(DEFAULT_SOAK_SECONDS);
        let floor = self.gate_policy.min_soak_seconds;
        // The gate reads the soak's client telemetry, so a soak cannot outlast its retention.
        let ceiling = self.traffic_retention.as_secs();
        if soak_seconds > ceiling || soak_seconds < floor {
            return Err(ApiError::invalid(format!(
                "soak period of {soak_seconds} s is out of range: allowed {floor} s (this \
                 server's --min-soak) to {ceiling} s (its --traffic-retention, since the gate \
                 reads the soak's telemetry)"
            )));
        }
        let mut expected_services = input
            .expected_services
            .iter()
            .map(|s| parse_label("expected service", s))
            .collect::<Result<Vec<_>, _>>()?;
        expected_services.sort();
        expected_services.dedup();
        if expected_services.len() > 64 {
            return Err(ApiError::invalid(
                "too many expected services: allowed up to 64",
            ));
        }
        let new = NewMigration {
            key,
            description: text("description", input.description, 4000, TextKind::Prose)?,
            owner: text("owner", input.owner, 200, TextKind::Line)?,
            entity_kind: text("entity kind", input.entity_kind, 200, TextKind::Line)?,
            soak_seconds,
            expected_services,
            has_backfill: input.has_backfill,
            shadow_sample: input
                .shadow_sample_bp
                .map(BasisPoints::new)
                .transpose()?
                .unwrap_or(DEFAULT_SHADOW_SAMPLE),
            database: self.database(input.target_database.as_deref(), &input.old_shape)?,
            retire_probation_seconds: input.retire_probation_seconds,
        };
        if let Some(probation) = new.retire_probation_seconds {
            if probation == 0 || probation > MAX_RETIRE_PROBATION_SECONDS {
                return Err(ApiError::invalid(format!(
                    "retire probation of {probation} s is out of range: allowed 1 to \
                     {MAX_RETIRE_PROBATION_SECONDS} s (90d)"
                )));
            }
            // The retire is checked in the database: its catalog (the names gone) and its log
            // (statements failing on them). Indexes are never named by statements, so a shape
            // of indexes alone has nothing to retire.
            let retirable = new
                .database
                .old_shape
                .iter()
                .any(|o| !matches!(o, switchyard_domain::SchemaObject::Index { .. }));
            if new.database.target.is_none() || !retirable {
                // Each field is valid; together they ask for something that cannot be done.
                return Err(ApiError::NotApplicable {
                    message: "retire before drop needs target_database and an old_shape with \
                              at least one column or table (indexes are not retired: nothing \
                              names them)"
                        .to_owned(),
                    current: None,
                });
            }
        }
        // 53 bits so the salt survives JSON numbers in every language (JavaScript included).
        let salt = rand::rng().random::<u64>() & ((1 << 53) - 1);
        let created = self
            .store
            .create_migration(new, salt, &who.actor(), &reason, self.now())
            .await?;
        self.hub
            .caught_up(created.version, READ_YOUR_WRITE_WAIT)
            .await;
        Ok(created)
    }

    /// A migration's database declaration, its target checked against this server's
    /// configuration so a misspelled name fails at creation, not at the gate.
    fn database(&self, target: Option<&str>, old_shape: &[String]) -> Result<Database, ApiError> {
        let target = target.filter(|t| !t.is_empty());
        let database = Database::new(target, old_shape)?;
        if let Some(name) = &database.target
            && !self.target_names.contains(name)
        {
            let configured: Vec<&str> = self.target_names.iter().map(TargetName::as_str).collect();
            return Err(ApiError::invalid(format!(
                "target database {name} is not configured on this server; configured: {} \
                 (serve --target-database NAME=URL)",
                if configured.is_empty() {
                    "none".to_owned()
                } else {
                    configured.join(", ")
                }
            )));
        }
        Ok(database)
    }

    pub fn get_migration(&self, who: &Principal, key: &str) -> Result<Arc<Migration>, ApiError> {
        who.require(Permission::Read)?;
        MigrationKey::check(key)?;
        who.require_on(Permission::Read, key)?;
        self.hub
            .get(key)
            .ok_or_else(|| ApiError::NotFound(format!("migration {key} does not exist")))
    }

    /// Checks a version a caller holds (a watcher's `since`, a poller's ETag): newer than
    /// anything this database ever held means the database went back in time (restored from a
    /// backup): say so at once instead of waiting for a version that will not come. A version
    /// the database has and this replica not yet is fine: the replica will soon have it.
    pub async fn check_since(&self, what: &str, since: Version) -> Result<(), ApiError> {
        if since <= self.hub.snapshot().version {
            return Ok(());
        }
        let stored = self.store.snapshot_version().await?;
        if since > stored {
            return Err(ApiError::invalid(format!(
                "{what} {since} is newer than this server's newest state ({stored}); allowed up \
                 to {stored}. Was its database restored from an older backup? A client that \
                 should accept the older state must start without its saved snapshot"
            )));
        }
        Ok(())
    }

    /// The state the caller may see: every migration, or for a scoped token those its scope
    /// covers (at the same version).
    pub fn snapshot(&self, who: &Principal) -> Result<Arc<Snapshot>, ApiError> {
        who.require(Permission::Read)?;
        Ok(visible(who, self.hub.snapshot()))
    }

    /// What a watcher authenticated as `who` is sent of `item`: for a scoped token, snapshots
    /// cut to its scope and no changes outside it.
    pub fn visible_item(&self, who: &Principal, item: WatchItem) -> Option<WatchItem> {
        match item {
            WatchItem::Snapshot(s) => Some(WatchItem::Snapshot(visible(who, s))),
            WatchItem::Change(p) => who
                .sees(p.migration.key.as_str())
                .then_some(WatchItem::Change(p)),
        }
    }

    /// The snapshot at `held` or later, for a poller that holds `held` (it polled another
    /// replica): never an older state. A version the database has is waited for briefly, as a
    /// watch's `since` is; one it never had is refused at once by the same rule.
    pub async fn snapshot_at_least(
        &self,
        who: &Principal,
        what: &str,
        held: Version,
    ) -> Result<Arc<Snapshot>, ApiError> {
        let snapshot = self.snapshot(who)?;
        if held <= snapshot.version {
            return Ok(snapshot);
        }
        self.check_since(what, held).await?;
        self.hub.caught_up(held, CATCH_UP_WAIT).await;
        let snapshot = self.snapshot(who)?;
        if snapshot.version < held {
            return Err(ApiError::Unavailable(format!(
                "this replica is at version {}, behind the version {held} you hold; retry shortly",
                snapshot.version
            )));
        }
        Ok(snapshot)
    }

    /// Applies one operation under the safety rules. A traffic change made this way is a
    /// person's: it pauses the migration's running plan, in the same transaction. A change
    /// the server has a second person approve is refused (`approval_required`) with how to
    /// ask for it.
    pub async fn mutate(
        &self,
        who: &Principal,
        key: &str,
        expected: Version,
        reason: &str,
        op: Operation,
    ) -> Result<Migration, ApiError> {
        self.change(who, key, expected, reason, op, Via::Person)
            .await
    }

    /// [`App::mutate`], or with `bypass` [`App::mutate_bypassing_approval`].
    pub async fn mutate_or_bypass(
        &self,
        who: &Principal,
        key: &str,
        expected: Version,
        reason: &str,
        op: Operation,
        bypass: bool,
    ) -> Result<Migration, ApiError> {
        if bypass {
            self.mutate_bypassing_approval(who, key, expected, reason, op)
                .await
        } else {
            self.mutate(who, key, expected, reason, op).await
        }
    }

    /// [`App::mutate`] by an admin who skips the approval the policy asks for: the audit
    /// record says so, next to the reason.
    pub async fn mutate_bypassing_approval(
        &self,
        who: &Principal,
        key: &str,
        expected: Version,
        reason: &str,
        op: Operation,
    ) -> Result<Migration, ApiError> {
        if who.role != switchyard_domain::Role::Admin {
            return Err(ApiError::PermissionDenied(format!(
                "token {:?} has role {}: only an admin may bypass an approval; ask a second \
                 operator instead (request_approval)",
                who.name,
                who.role.as_str()
            )));
        }
        // A bypass is recorded only where an approval was required (judged again, on the
        // locked state, when the change is made without one).
        let gated = self
            .hub
            .get(key)
            .is_some_and(|m| self.approval_policy.gates(&m, &op).is_some());
        let via = if gated { Via::Bypass } else { Via::Person };
        self.change(who, key, expected, reason, op, via).await
    }

    /// [`App::mutate`] for the plan driver's own steps, which leave the plan running.
    /// `approve_advance`: the plan itself has a second person approve this advance.
    pub(crate) async fn mutate_by_plan(
        &self,
        who: &Principal,
        key: &str,
        expected: Version,
        reason: &str,
        op: Operation,
        approve_advance: bool,
    ) -> Result<Migration, ApiError> {
        self.change(
            who,
            key,
            expected,
            reason,
            op,
            Via::Plan { approve_advance },
        )
        .await
    }

    /// The one way a change is made: `via` says who asks and under what approval.
    pub(crate) async fn change(
        &self,
        who: &Principal,
        key: &str,
        expected: Version,
        reason: &str,
        op: Operation,
        via: Via,
    ) -> Result<Migration, ApiError> {
        who.require(op.permission())?;
        let key = MigrationKey::parse(key)?;
        who.require_on(op.permission(), key.as_str())?;
        let now = self.now();
        let gated = matches!(
            op,
            Operation::Record(Event::Contracted) | Operation::Record(Event::Retired)
        );
        let result = if gated {
            // The database's evidence comes from the observer's tables, read just before; the
            // state, fleet and traffic are read in the transaction that records the result:
            // checking and recording are one step.
            // The database's evidence and the instances' reports are read just before the
            // transaction (as the observer and the clients write them outside it): a report
            // landing in between is judged by the next evaluation.
            let (database, reports) = match self.hub.get(key.as_str()) {
                Some(m) => (
                    self.observation(&m, now).await?,
                    self.reports(&m, now).await?,
                ),
                None => (Observation::NotDeclared, gate::Reports::default()),
            };
            self.store
                .mutate_with(
                    key.as_str(),
                    &who.actor(),
                    now,
                    self.client_ttl,
                    Alongside {
                        traffic_since_ms: Some(self.traffic_horizon(now)),
                        forget_checkpoint: false,
                        pause_plan: None,
                        approval: via.approval(who),
                        notify: Some(crate::webhooks::event_type(&op, &via)),
                    },
                    |current, fleet, traffic, next_version| {
                        let report = gate::evaluate(
                            current,
                            fleet,
                            traffic,
                            &reports,
                            &database,
                            now,
                            &self.gate_policy,
                        );
                        let decide = if op == Operation::Record(Event::Retired) {
                            rules::retire
                        } else {
                            rules::contract
                        };
                        let (next, reason) =
                            decide(current, expected, reason, &report, next_version, now)?;
                        via.admit(&self.approval_policy, current, &op)?;
                        Ok((next, reason, op.action().to_owned()))
                    },
                )
                .await
        } else {
            // While a live window is open, the change that closes it records the window's
            // shadow comparisons (read in the same transaction), so the gate's evidence
            // outlives the telemetry retention.
            // A person moving the front takes it from the plan (recorded events do not: a
            // runner's backfill-complete is what a plan waits for).
            let pause_plan = (!via.by_plan() && op.moves_front()).then(|| {
                format!(
                    "paused by a manual change: {} by {} ({reason})",
                    op.action(),
                    who.actor()
                )
            });
            let open_window = self
                .hub
                .get(key.as_str())
                .and_then(|m| m.live_window)
                .filter(|w| w.ended_at_ms.is_none())
                .map(|w| minute_of(w.started_at_ms));
            self.store
                .mutate_with(
                    key.as_str(),
                    &who.actor(),
                    now,
                    self.client_ttl,
                    Alongside {
                        traffic_since_ms: open_window,
                        // A cancelled run's position must not outlive the cancel: a new start
                        // begins at the start.
                        forget_checkpoint: op == Operation::Record(Event::BackfillCancelled),
                        pause_plan,
                        approval: via.approval(who),
                        notify: Some(crate::webhooks::event_type(&op, &via)),
                    },
                    |current, fleet, traffic, next_version| {
                        let (mut next, reason) =
                            rules::apply(current, expected, reason, &op, fleet, next_version, now)?;
                        via.admit(&self.approval_policy, current, &op)?;
                        gate::record_closed_live_window(current, &mut next, traffic);
                        Ok((next, reason, op.action().to_owned()))
                    },
                )
                .await
        };
        let result = match result {
            // Asked for what already holds: answered with the state as it is, nothing written.
            Err(crate::store::StoreError::Refused {
                error: DomainError::Unchanged(message),
                current,
            }) => {
                tracing::info!(
                    key = %key, action = op.action(), actor = %who.actor(), "{message}"
                );
                return Ok(*current);
            }
            other => other,
        };
        match result {
            Ok(done) => {
                tracing::info!(
                    key = %key, action = op.action(), version = %done.migration.version,
                    stage = %done.migration.stage, rollout = %done.migration.rollout_bp,
                    actor = %who.actor(), "migration changed"
                );
                self.hub
                    .caught_up(done.migration.version, READ_YOUR_WRITE_WAIT)
                    .await;
                Ok(done.migration)
            }
            Err(e) => {
                let e = ApiError::from(e);
                if let Some(rule) = e.rule() {
                    crate::metrics::record_refusal(rule);
                    tracing::info!(
                        key = %key, action = op.action(), rule = rule.number(),
                        actor = %who.actor(), "change refused"
                    );
                }
                Err(e)
            }
        }
    }

    pub async fn audit(
        &self,
        who: &Principal,
        key: &str,
        limit: Option<u32>,
        before_id: Option<u64>,
    ) -> Result<(Vec<AuditRecord>, Option<u64>), ApiError> {
        who.require(Permission::Read)?;
        let key = MigrationKey::parse(key)?;
        who.require_on(Permission::Read, key.as_str())?;
        if self.hub.get(key.as_str()).is_none() && self.store.get(key.as_str()).await?.is_none() {
            return Err(ApiError::NotFound(format!(
                "migration {key} does not exist"
            )));
        }
        let limit = match limit {
            None | Some(0) => 50,
            Some(n) if n <= MAX_AUDIT_PAGE => n,
            Some(n) => {
                return Err(ApiError::invalid(format!(
                    "page size {n} is too large: allowed 1 to {MAX_AUDIT_PAGE}"
                )));
            }
        };
        let entries = self.store.audit(key.as_str(), limit, before_id).await?;
        let next = (entries.len() == limit as usize)
            .then(|| entries.last().map(|e| e.id))
            .flatten();
        Ok((entries, next))
    }

    /// Server-side evaluation for apps that cannot link the client: always the current state.
    pub fn decide(
        &self,
        who: &Principal,
        key: &str,
        entity_key: Option<&str>,
    ) -> Result<Decision, ApiError> {
        let migration = self.get_migration(who, key)?;
        if entity_key.is_some_and(|k| k.len() > 1024) {
            return Err(ApiError::invalid(
                "entity key is too long: allowed up to 1024 bytes",
            ));
        }
        let bucket = entity_key.map(|k| switchyard_domain::bucket(migration.salt, k.as_bytes()));
        let stage: Stage = migration.front().stage_for(bucket);
        Ok(Decision {
            key: migration.key.to_string(),
            bucket,
            plan: stage.plan(),
            version: migration.version,
        })
    }

    pub async fn heartbeat(
        &self,
        who: &Principal,
        service: &str,
        instance_id: &str,
        applied: Version,
        migrations: &[String],
        leaving: bool,
    ) -> Result<Version, ApiError> {
        who.require(Permission::Read)?;
        let service = parse_label("service name", service)?;
        let instance_id = parse_label("instance id", instance_id)?;
        if leaving {
            // A clean shutdown: no longer live, so nothing waits for its acknowledgements. Only
            // the token that registered the instance may say goodbye for it, or an admin (to
            // remove an instance by hand), so no token can shrink the fleet the rules count.
            let any = who.role == Role::Admin;
            if let Some(owner) = self
                .store
                .forget_instance(who.token_id, any, &service, &instance_id)
                .await?
            {
                return Err(not_owner(who, &service, &instance_id, &owner, "remove"));
            }
            return Ok(self.hub.snapshot().version);
        }
        if migrations.len() > MAX_REPORTED_MIGRATIONS {
            return Err(ApiError::invalid(format!(
                "a heartbeat names at most {MAX_REPORTED_MIGRATIONS} migrations"
            )));
        }
        let migrations = migrations
            .iter()
            .map(|k| MigrationKey::parse(k).map(String::from))
            .collect::<Result<Vec<_>, _>>()?;
        // A scoped token's clients never receive migrations outside its scope, so a name
        // outside it is treated like a key that names no migration: not stored (the instance
        // is not counted for it), only counted in the metric; its other names still count.
        let outside = migrations.iter().filter(|k| !who.sees(k)).count();
        crate::metrics::record_unknown_migrations("heartbeat", outside);
        let migrations: Vec<String> = migrations.into_iter().filter(|k| who.sees(k)).collect();
        let current = self.hub.snapshot().version;
        if applied > current {
            // A client cannot have applied a version this server has not published; a replica
            // that is behind will catch up, so allow what the database has.
            let stored = self.store.snapshot_version().await?;
            if applied > stored {
                return Err(ApiError::invalid(format!(
                    "applied version {applied} is newer than the newest snapshot ({stored})"
                )));
            }
        }
        let now = self.now();
        match self
            .store
            .record_heartbeat(
                Registrant {
                    token_id: who.token_id,
                    live_after_ms: now - self.client_ttl.as_millis() as i64,
                    max_live: u64::from(self.max_instances_per_token),
                },
                &service,
                &instance_id,
                applied,
                &migrations,
                now,
            )
            .await?
        {
            HeartbeatOutcome::Recorded { unknown_migrations } => {
                crate::metrics::record_unknown_migrations("heartbeat", unknown_migrations);
            }
            HeartbeatOutcome::OwnedBy(owner) => {
                return Err(not_owner(who, &service, &instance_id, &owner, "update"));
            }
            HeartbeatOutcome::TooManyInstances => {
                return Err(ApiError::PermissionDenied(format!(
                    "token {:?} already has {} live instances, the most one token may register \
                     (--max-instances-per-token); instance {service}/{instance_id} is refused: \
                     send goodbyes on shutdown, reuse instance ids, or give each deployment its \
                     own token",
                    who.name, self.max_instances_per_token
                )));
            }
        }
        Ok(current)
    }

    /// One page of the instances seen within the last hour (optionally only those evaluating
    /// `migration`), by service and instance id after the cursor `after` (the previous page's
    /// `next`); `live` marks those within the client TTL. Paged because a fleet of thousands
    /// would otherwise be one answer of megabytes.
    pub async fn instances(
        &self,
        who: &Principal,
        migration: Option<&str>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<InstancePage, ApiError> {
        who.require(Permission::Read)?;
        let limit = match limit {
            None | Some(0) => DEFAULT_INSTANCE_PAGE,
            Some(n) if n <= MAX_INSTANCE_PAGE => n,
            Some(n) => {
                return Err(ApiError::invalid(format!(
                    "page size {n} is too large: allowed 1 to {MAX_INSTANCE_PAGE}"
                )));
            }
        };
        let after = match after.filter(|a| !a.is_empty()) {
            None => None,
            Some(cursor) => Some(cursor.split_once(CURSOR_SEPARATOR).ok_or_else(|| {
                ApiError::invalid(format!(
                    "invalid cursor {cursor:?}: pass the previous page's next_after"
                ))
            })?),
        };
        let now = self.now();
        let window = Duration::from_secs(3600).max(self.client_ttl);
        let key = migration.map(MigrationKey::parse).transpose()?;
        if let Some(key) = &key {
            who.require_on(Permission::Read, key.as_str())?;
        }
        // A migration's list is the fleet too: rules 3 and 5 wait on every live instance (any
        // may evaluate the migration: the set a client names grows as it runs), so the list
        // shows the set they count, each marked with whether it names the migration.
        let page = self
            .store
            .instances_page(
                key.as_ref().map(MigrationKey::as_str),
                now,
                window,
                after,
                limit,
            )
            .await?;
        let naming = match &key {
            Some(key) => Some(self.store.naming(key.as_str(), &page, now, window).await?),
            None => None,
        };
        let next = (page.len() == limit as usize)
            .then(|| {
                page.last()
                    .map(|i| format!("{}{CURSOR_SEPARATOR}{}", i.service, i.instance_id))
            })
            .flatten();
        let live_after = now - self.client_ttl.as_millis() as i64;
        Ok(InstancePage {
            instances: page
                .into_iter()
                .map(|instance| InstanceView {
                    live: instance.last_seen_ms >= live_after,
                    uses_migration: naming.as_ref().map(|n| {
                        n.contains(&(instance.service.clone(), instance.instance_id.clone()))
                    }),
                    instance,
                })
                .collect(),
            next,
        })
    }

    /// Adds a client's per-minute counts to the rollups.
    pub async fn report_telemetry(
        &self,
        who: &Principal,
        service: &str,
        instance_id: &str,
        entries: Vec<(String, i64, TrafficCounts)>,
        samples: Vec<(String, Vec<MismatchSample>)>,
    ) -> Result<(), ApiError> {
        who.require(Permission::Read)?;
        let service = parse_label("service name", service)?;
        parse_label("instance id", instance_id)?;
        let samples = valid_samples(samples)?;
        // Outside a scoped token's scope, as in a heartbeat: ignored and counted, so a report's
        // other entries still count (the gate waits for them).
        let samples: Vec<_> = samples.into_iter().filter(|(k, _)| who.sees(k)).collect();
        if entries.len() > MAX_TELEMETRY_ENTRIES {
            return Err(ApiError::invalid(format!(
                "{} telemetry entries in one report: allowed up to {MAX_TELEMETRY_ENTRIES}",
                entries.len()
            )));
        }
        let now = self.now();
        let oldest = minute_of(now - self.traffic_retention.as_millis() as i64);
        let newest = minute_of(now) + 60_000;
        let mut valid = Vec::with_capacity(entries.len());
        let mut outside = 0;
        for (key, minute, counts) in entries {
            let key = MigrationKey::parse(&key)?;
            if minute % 60_000 != 0 {
                return Err(ApiError::invalid(format!(
                    "minute_ms {minute} is not the start of a minute (a multiple of 60000)"
                )));
            }
            if minute > newest {
                return Err(ApiError::invalid(format!(
                    "minute_ms {minute} is in the future (server time {now}); check the clock"
                )));
            }
            if !who.sees(key.as_str()) {
                outside += 1;
                continue;
            }
            // Older than the retention: it would be pruned at once, so it is dropped here.
            if minute >= oldest && !counts.is_empty() {
                valid.push((key.to_string(), minute, counts));
            }
        }
        crate::metrics::record_unknown_migrations("telemetry", outside);
        // Most reports of an idle instance carry nothing: no transaction for them.
        if !valid.is_empty() {
            let unknown = self.store.add_traffic(&service, &valid).await?;
            crate::metrics::record_unknown_migrations("telemetry", unknown);
            // Only migrations that exist get series: a client's made-up keys must not grow
            // the metrics.
            for (key, _, counts) in valid.iter().filter(|(k, _, _)| self.hub.get(k).is_some()) {
                crate::metrics::record_client_traffic(key, counts);
            }
        }
        // Per migration: the old-shape operations of this report and the earliest minute they
        // were counted in, for the gate's exact window.
        let mut old_use: Vec<(String, u64, u64, i64)> = Vec::new();
        for (key, minute, counts) in &valid {
            if counts.old.operations() == 0 {
                continue;
            }
            match old_use.iter_mut().find(|u| &u.0 == key) {
                Some(u) => {
                    u.1 += counts.old.reads;
                    u.2 += counts.old.writes;
                    u.3 = u.3.min(*minute);
                }
                None => old_use.push((key.clone(), counts.old.reads, counts.old.writes, *minute)),
            }
        }
        self.store
            .record_report(&service, instance_id, &old_use, now)
            .await?;
        self.store
            .add_mismatch_samples(&service, instance_id, &samples, now)
            .await?;
        Ok(())
    }

    /// The entities whose shadow reads differed for a migration, most recently seen first.
    pub async fn mismatches(
        &self,
        who: &Principal,
        key: &str,
        limit: Option<u32>,
    ) -> Result<(Arc<Migration>, Vec<MismatchEntity>, u64), ApiError> {
        let migration = self.get_migration(who, key)?;
        let limit = match limit {
            None => 100,
            Some(n @ 1..=1000) => n,
            Some(n) => {
                return Err(ApiError::invalid(format!(
                    "limit {n}: allowed 1 to 1000 (default 100)"
                )));
            }
        };
        let (rows, total) = self.store.mismatches(key, limit).await?;
        Ok((migration, rows, total))
    }

    /// A migration's traffic per minute over the last `minutes` minutes, and the total.
    pub async fn traffic(
        &self,
        who: &Principal,
        key: &str,
        minutes: Option<u32>,
    ) -> Result<TrafficView, ApiError> {
        let migration = self.get_migration(who, key)?;
        let retained = (self.traffic_retention.as_secs() / 60).max(1) as u32;
        let minutes = match minutes {
            None | Some(0) => 60,
            Some(n) if n <= retained => n,
            Some(n) => {
                return Err(ApiError::invalid(format!(
                    "{n} minutes is longer than the traffic retention: allowed 1 to {retained}"
                )));
            }
        };
        let since = minute_of(self.now()) - i64::from(minutes - 1) * 60_000;
        let minutes = self.store.traffic(migration.key.as_str(), since).await?;
        let mut total = TrafficCounts::default();
        for (_, counts) in &minutes {
            total.add(counts);
        }
        let services = self
            .store
            .traffic_by_service(migration.key.as_str(), since)
            .await?;
        Ok(TrafficView {
            minutes,
            total,
            services,
        })
    }

    /// The oldest minute of traffic kept.
    fn traffic_horizon(&self, now: i64) -> i64 {
        minute_of(now - self.traffic_retention.as_millis() as i64)
    }

    /// The contract gate's answer for a migration, now.
    pub async fn gate(&self, who: &Principal, key: &str) -> Result<GateReport, ApiError> {
        let migration = self.get_migration(who, key)?;
        let now = self.now();
        let fleet = self
            .store
            .fleet(migration.key.as_str(), now, self.client_ttl)
            .await?;
        self.evaluate_gate(&migration, &fleet, now).await
    }

    /// Whether each traffic change (advance, step back, ramp to 100%, ramp to 0%) would be
    /// allowed now: the safety rules run on the current state and live fleet, nothing written.
    /// For a dashboard to disable what would be refused and say which rule; the change itself
    /// is judged again when it is made.
    pub async fn dry_run(
        &self,
        who: &Principal,
        key: &str,
    ) -> Result<(Arc<Migration>, Vec<(&'static str, Result<(), DomainError>)>), ApiError> {
        let migration = self.get_migration(who, key)?;
        let now = self.now();
        let fleet = self
            .store
            .fleet(migration.key.as_str(), now, self.client_ttl)
            .await?;
        let next = Version(migration.version.0 + 1);
        let verdicts = [
            ("advance", Operation::Advance),
            ("retreat", Operation::Retreat),
            (
                "ramp_full",
                Operation::SetRollout {
                    stage: None,
                    rollout: BasisPoints::FULL,
                },
            ),
            (
                "ramp_zero",
                Operation::SetRollout {
                    stage: None,
                    rollout: BasisPoints::ZERO,
                },
            ),
        ]
        .map(|(name, op)| {
            let verdict = rules::apply(
                &migration,
                migration.version,
                "dry run",
                &op,
                &fleet,
                next,
                now,
            );
            (name, verdict.map(|_| ()))
        })
        .into_iter()
        .collect();
        Ok((migration, verdicts))
    }

    /// What `/metrics` reports of each migration beyond its record (its fleet, gate and
    /// backfill), read now, with the time read. The gate is evaluated only at complete 100%:
    /// before that its soak check cannot pass.
    pub async fn readings(
        &self,
    ) -> Result<(Vec<(Arc<Migration>, crate::metrics::MigrationReading)>, i64), ApiError> {
        let now = self.now();
        let snapshot = self.hub.snapshot();
        let mut readings = Vec::with_capacity(snapshot.migrations.len());
        for m in snapshot.migrations.values() {
            let key = m.key.as_str();
            let fleet = self.store.fleet(key, now, self.client_ttl).await?;
            let gate_passing = m.stage == Stage::Complete
                && m.rollout_bp.is_full()
                && self.evaluate_gate(m, &fleet, now).await?.passed;
            // Every migration with a backfill has the gauges (zero before its first
            // checkpoint), so an alert on them has a series to watch from the start.
            let checkpoint = match m.backfill.status {
                BackfillStatus::Running | BackfillStatus::Complete => {
                    self.store.checkpoint(key).await?
                }
                _ => None,
            };
            let backfill = m.has_backfill.then(|| {
                checkpoint.map_or((0, 0, false, 0), |c| {
                    let holding = !c.throttle_reason.is_empty();
                    (c.rows_done, c.rows_total_estimate, holding, c.throttled_ms)
                })
            });
            let reading = crate::metrics::MigrationReading {
                live_instances: fleet.live.len(),
                instances_behind: fleet
                    .live
                    .iter()
                    .filter(|i| i.applied_version < m.version)
                    .count(),
                gate_passing,
                backfill,
            };
            readings.push((m.clone(), reading));
        }
        Ok((readings, now))
    }

    /// The contract gate for `migration` on `fleet`, reading its traffic and the database's
    /// evidence now.
    pub(crate) async fn evaluate_gate(
        &self,
        migration: &Migration,
        fleet: &rules::Fleet,
        now: i64,
    ) -> Result<GateReport, ApiError> {
        let traffic = self
            .store
            .traffic(migration.key.as_str(), self.traffic_horizon(now))
            .await?;
        let database = self.observation(migration, now).await?;
        let reports = self.reports(migration, now).await?;
        Ok(gate::evaluate(
            migration,
            fleet,
            &traffic,
            &reports,
            &database,
            now,
            &self.gate_policy,
        ))
    }

    /// The instances' reports the gate's traffic checks read: old-shape use within the soak.
    async fn reports(&self, m: &Migration, now: i64) -> Result<gate::Reports, ApiError> {
        Ok(self
            .store
            .reports(m.key.as_str(), now - self.gate_policy.soak_ms(m))
            .await?)
    }

    /// What the usage observer has seen of `m`'s database, with the evidence the gate's window
    /// can reach (the last soak period, and a minute before it).
    async fn observation(&self, m: &Migration, now: i64) -> Result<Observation, ApiError> {
        self.observation_since(m, now - self.gate_policy.soak_ms(m) - 60_000)
            .await
    }

    pub(crate) async fn observation_since(
        &self,
        m: &Migration,
        since: i64,
    ) -> Result<Observation, ApiError> {
        let Some(target) = &m.database.target else {
            return Ok(Observation::NotDeclared);
        };
        let status = self.store.observer_status(target.as_str()).await?;
        let covered_since = self.store.usage_coverage(m.key.as_str()).await?;
        let uses = self.store.usage(m.key.as_str(), since, USAGE_ROWS).await?;
        let retire = match m.retired_at_ms {
            Some(at) => self.store.retire_evidence(m.key.as_str(), at).await?,
            None => None,
        };
        let log_failing = status
            .as_ref()
            .filter(|s| m.retired_at_ms.is_some() && !s.log_error.is_empty())
            .map(|s| s.log_error.clone());
        Ok(Observation::Declared {
            target: target.to_string(),
            configured: self.target_names.contains(target),
            nothing_declared: m.database.old_shape.is_empty(),
            covered_since,
            last_pass_ms: status.as_ref().and_then(|s| s.last_pass_ms),
            failing: status.as_ref().and_then(|s| s.failing.clone()),
            stale_after_ms: self.observe.stale_after().as_millis() as i64,
            uses,
            retire,
            log_failing,
        })
    }

    /// The usage evidence of a migration's old shape since `since_ms` (default: the last day,
    /// or the soak period if longer), each statement with its verdict, and the gate's check.
    pub async fn usage(
        &self,
        who: &Principal,
        key: &str,
        since_ms: Option<i64>,
    ) -> Result<Usage, ApiError> {
        let migration = self.get_migration(who, key)?;
        let now = self.now();
        let since =
            since_ms.unwrap_or(now - self.gate_policy.soak_ms(&migration).max(24 * 3_600_000));
        let report = self.gate(who, key).await?;
        let check = report
            .checks
            .iter()
            .find(|c| c.id == gate::CheckId::DatabaseUsage)
            .cloned()
            .expect("the gate always has the database check");
        let database = self.observation_since(&migration, since).await?;
        let status = match &migration.database.target {
            Some(t) => self.store.observer_status(t.as_str()).await?,
            None => None,
        };
        // The gate's window, as the gate computes it: evidence in it blocks.
        let window_from = gate::window_from(&migration, now, &self.gate_policy);
        let fleet = self
            .store
            .fleet(migration.key.as_str(), now, self.client_ttl)
            .await?;
        let mut known: Vec<String> = fleet.live.iter().map(|i| i.service.clone()).collect();
        known.extend(migration.expected_services.iter().cloned());
        let (statements, covered, failing, last_pass) = match database {
            Observation::Declared {
                uses,
                covered_since,
                failing,
                last_pass_ms,
                ..
            } => (
                usage::summarize(&uses, window_from, &known),
                covered_since,
                failing,
                last_pass_ms,
            ),
            Observation::NotDeclared => (Vec::new(), None, None, None),
        };
        Ok(Usage {
            migration,
            since_ms: since,
            window_from_ms: window_from,
            covered_since: covered,
            last_pass_ms: last_pass,
            last_pass_duration_ms: status.as_ref().map(|s| s.pass_ms),
            statements_on_target: status.as_ref().map(|s| s.statements),
            failing,
            check,
            statements,
        })
    }

    /// Contracted migrations still evaluated by live clients, and migrations at complete 100%
    /// for longer than `complete_for` without being contracted.
    pub async fn lifecycle(
        &self,
        who: &Principal,
        complete_for: Duration,
    ) -> Result<Lifecycle, ApiError> {
        who.require(Permission::Read)?;
        let now = self.now();
        let mut view = Lifecycle::default();
        for m in self.snapshot(who)?.migrations.values() {
            match m.stage {
                Stage::Contracted => {
                    let users = self
                        .store
                        .instances_of(m.key.as_str(), now, self.client_ttl)
                        .await?;
                    if !users.is_empty() {
                        view.contracted_in_use.push((m.key.to_string(), users));
                    }
                }
                Stage::Complete => {
                    if let Some(since) = m.soak_started_at_ms {
                        if now - since >= complete_for.as_millis() as i64 {
                            view.complete_not_contracted
                                .push((m.key.to_string(), since));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(view)
    }

    /// Saves a backfill runner's position after a batch.
    pub async fn checkpoint_backfill(
        &self,
        who: &Principal,
        key: &str,
        position: RunnerPosition<'_>,
    ) -> Result<BackfillProgress, ApiError> {
        let RunnerPosition {
            cursor,
            rows_done,
            rows_total_estimate,
            runner,
            started_version,
            throttle,
        } = position;
        // A runner's own step: the backfill role's (and an operator's).
        who.require(Permission::RunBackfill)?;
        let migration = self.get_migration(who, key)?;
        if cursor.len() > 4096 {
            return Err(ApiError::invalid(
                "cursor is too long: allowed up to 4096 bytes",
            ));
        }
        // Opaque to the server, yet stored as text and shown by the CLI and the dashboard.
        check_text("cursor", cursor, TextKind::Opaque)?;
        let rows_done = check_count("rows_done", rows_done)?;
        let rows_total_estimate = check_count("rows_total_estimate", rows_total_estimate)?;
        let runner = if runner.trim().is_empty() {
            who.actor()
        } else {
            parse_label("runner", runner)?
        };
        let throttle = throttle.unwrap_or_default();
        if throttle.reason.len() > 1024 {
            return Err(ApiError::invalid(
                "throttle.reason is too long: allowed up to 1024 bytes",
            ));
        }
        check_text("throttle.reason", throttle.reason, TextKind::Opaque)?;
        let now = self.now();
        let holding = !throttle.reason.is_empty();
        // A hold that has just lasted a minute is worth telling people about (webhook event
        // `backfill`, action `backfill_held`); shorter ones (a lag spike) are routine. Once per
        // hold: the runner's previous checkpoint had held for less, or not at all.
        let held_notice = if holding && throttle.held_ms >= HELD_NOTICE_AFTER_MS {
            self.store
                .checkpoint(migration.key.as_str())
                .await?
                .is_none_or(|p| {
                    p.throttled_since_ms == 0
                        || p.updated_at_ms - p.throttled_since_ms < HELD_NOTICE_AFTER_MS as i64
                })
        } else {
            false
        };
        let saved = self
            .store
            .save_checkpoint(
                migration.key.as_str(),
                &Checkpoint {
                    cursor: cursor.to_owned(),
                    rows_done,
                    rows_total_estimate,
                    rate_rows_per_second: 0.0,
                    runner,
                    updated_at_ms: now,
                    throttle_reason: throttle.reason.to_owned(),
                    throttled_since_ms: if holding {
                        now - i64::try_from(throttle.held_ms).unwrap_or(i64::MAX).min(now)
                    } else {
                        0
                    },
                    throttled_ms: throttle.throttled_ms.min(i64::MAX as u64),
                },
                |current| checkpoint_admitted(current, started_version),
            )
            .await?;
        if held_notice {
            self.notify(
                migration.key.as_str(),
                "backfill",
                serde_json::json!({
                    "action": "backfill_held",
                    "reason": saved.throttle_reason,
                    "held_since_ms": saved.throttled_since_ms,
                    "runner": saved.runner,
                }),
            )
            .await;
        }
        let settings = self.store.backfill_settings(migration.key.as_str()).await?;
        Ok(BackfillProgress::new(&migration, Some(saved), settings))
    }

    /// Where a migration's backfill is.
    pub async fn backfill(&self, who: &Principal, key: &str) -> Result<BackfillProgress, ApiError> {
        let migration = self.get_migration(who, key)?;
        let checkpoint = match migration.backfill.status {
            BackfillStatus::Running | BackfillStatus::Complete => {
                self.store.checkpoint(migration.key.as_str()).await?
            }
            _ => None,
        };
        let settings = self.store.backfill_settings(migration.key.as_str()).await?;
        Ok(BackfillProgress::new(&migration, checkpoint, settings))
    }

    /// Changes a backfill's settings (thresholds, batch size, pace): its runner applies them
    /// at its next batch, from the answer to its next checkpoint.
    pub async fn set_backfill_settings(
        &self,
        who: &Principal,
        key: &str,
        change: &BackfillSettingsChange,
    ) -> Result<BackfillProgress, ApiError> {
        // The pace of a backfill is the operator's call, like pausing it.
        who.require(Permission::Operate)?;
        let migration = self.get_migration(who, key)?;
        if !migration.has_backfill {
            // The request is well formed; the migration's state makes it meaningless.
            return Err(ApiError::NotApplicable {
                message: format!("migration {key} has no backfill: there is nothing to set"),
                current: Some(Box::new((*migration).clone())),
            });
        }
        check_settings(&change.settings)?;
        // A change of pace is a decision like a pause: it says why (rule 9).
        let reason = parse_reason(&change.reason)?;
        let reset = change.reset;
        self.store
            .update_backfill_settings(
                migration.key.as_str(),
                &who.actor(),
                reason.as_str(),
                self.now(),
                |current| {
                    let base = if reset {
                        BackfillSettings::default()
                    } else {
                        current.clone()
                    };
                    base.merged(&change.settings)
                },
            )
            .await?;
        self.backfill(who, key).await
    }

    /// Removes telemetry older than the retention.
    pub async fn prune(&self) -> Result<u64, ApiError> {
        let before = self.now() - self.traffic_retention.as_millis() as i64;
        Ok(self.store.prune(minute_of(before)).await?)
    }

    pub async fn create_token(
        &self,
        who: &Principal,
        name: &str,
        role: Role,
        scope: &[String],
    ) -> Result<(TokenRecord, String), ApiError> {
        who.require(Permission::ManageTokens)?;
        let name = parse_label("token name", name)?;
        let scope = Scope::parse(scope)?;
        scope.check_for(role)?;
        let secret = generate_token();
        let record = self
            .store
            .create_token(&name, role, &scope, &hash_token(&secret), self.now())
            .await?;
        Ok((record, secret))
    }

    pub async fn list_tokens(&self, who: &Principal) -> Result<Vec<TokenRecord>, ApiError> {
        who.require(Permission::ManageTokens)?;
        Ok(self.store.list_tokens().await?)
    }

    pub async fn revoke_token(&self, who: &Principal, id: u64) -> Result<TokenRecord, ApiError> {
        who.require(Permission::ManageTokens)?;
        let (record, hash) = self.store.revoke_token(id, self.now()).await?;
        // At once on this replica: refused from the next request, its open streams ended.
        // Other replicas learn of it from their followers, which the revoke's notification
        // wakes.
        self.auth.revocations().revoke([record.id]);
        self.auth.forget(&hash).await;
        Ok(record)
    }

    /// On an empty token table, creates the first admin token: `preset` if given, else a new
    /// random one, which is returned so the caller can print it once.
    pub async fn bootstrap_admin(&self, preset: Option<&str>) -> Result<Option<String>, ApiError> {
        if self.store.count_tokens().await? > 0 {
            return Ok(None);
        }
        let secret = match preset {
            Some(t) if t.trim().len() >= 16 => t.trim().to_owned(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "SWITCHYARD_ADMIN_TOKEN is too short: use at least 16 characters",
                ));
            }
            None => generate_token(),
        };
        match self
            .store
            .create_token(
                "admin",
                Role::Admin,
                &Scope::all(),
                &hash_token(&secret),
                self.now(),
            )
            .await
        {
            Ok(_) => Ok(preset.is_none().then_some(secret)),
            // Another replica starting on the same database bootstrapped first.
            Err(crate::store::StoreError::AlreadyExists(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// A checkpoint moves the position of the running backfill's current run only. Judged by the
/// store on the migration as it is when the position is written, so a checkpoint racing a
/// cancel or a restart cannot bring back a cancelled run's position.
fn checkpoint_admitted(m: &Migration, run: Option<Version>) -> Result<(), DomainError> {
    let key = &m.key;
    if m.backfill.status != BackfillStatus::Running {
        return Err(DomainError::NotApplicable(format!(
            "the backfill of {key} is not running ({}); record backfill-started first",
            match m.backfill.status {
                BackfillStatus::None => "the migration has no backfill",
                BackfillStatus::Complete => "it is complete",
                _ => "it is not started, or was cancelled",
            }
        )));
    }
    if let Some(run) = run
        && m.backfill.started_version != Some(run)
    {
        // A runner that missed a cancel must not move the position of the run that replaced
        // its own.
        return Err(DomainError::NotApplicable(format!(
            "the backfill of {key} was started again (at version {}) since this runner's run \
             began (at version {run}): its position belongs to a cancelled run",
            m.backfill.started_version.map_or(0, |v| v.0)
        )));
    }
    Ok(())
}

/// The refusal of a heartbeat or goodbye for an instance another token registered: names the
/// owner by name and id (never its secret) so the operator can tell which deployment collides.
fn not_owner(
    who: &Principal,
    service: &str,
    instance_id: &str,
    owner: &InstanceOwner,
    verb: &str,
) -> ApiError {
    let owner_name = owner
        .name
        .as_deref()
        .map_or_else(|| "a deleted token".to_owned(), |n| format!("token {n:?}"));
    ApiError::PermissionDenied(format!(
        "instance {service}/{instance_id} belongs to {owner_name} (id {}), which registered it; \
         token {:?} (id {}) may not {verb} it: give each deployment its own instance ids",
        owner.token_id, who.name, who.token_id
    ))
}

/// Mismatch samples as a report carries them, checked: at most [`MAX_MISMATCH_SAMPLES`] per
/// entry, each with an entity key and a short description, no control characters.
fn valid_samples(
    entries: Vec<(String, Vec<MismatchSample>)>,
) -> Result<Vec<(String, MismatchSample)>, ApiError> {
    let mut valid = Vec::new();
    for (key, samples) in entries {
        if samples.len() > MAX_MISMATCH_SAMPLES {
            return Err(ApiError::invalid(format!(
                "{} mismatch samples in one entry for {key}: allowed up to {MAX_MISMATCH_SAMPLES}",
                samples.len()
            )));
        }
        for sample in samples {
            let chars = sample.entity_key.chars().count();
            if chars == 0 || chars > MAX_ENTITY_KEY_CHARS {
                return Err(ApiError::invalid(format!(
                    "a mismatch sample's entity_key has {chars} characters: allowed 1 to \
                     {MAX_ENTITY_KEY_CHARS}"
                )));
            }
            if sample.description.chars().count() > MAX_MISMATCH_DESCRIPTION_CHARS {
                return Err(ApiError::invalid(format!(
                    "a mismatch sample's description is longer than \
                     {MAX_MISMATCH_DESCRIPTION_CHARS} characters"
                )));
            }
            if sample.entity_key.chars().any(char::is_control)
                || sample.description.chars().any(char::is_control)
            {
                return Err(ApiError::invalid(
                    "a mismatch sample's entity_key and description may not contain control \
                     characters"
                        .to_owned(),
                ));
            }
            valid.push((key.clone(), sample));
        }
    }
    Ok(valid)
}

/// `snapshot` as `who` may see it: the same one when unscoped, else a copy with the migrations
/// outside the scope left out (at the same version: what the caller acknowledges).
fn visible(who: &Principal, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
    if who.scope.is_all() {
        return snapshot;
    }
    Arc::new(Snapshot {
        version: snapshot.version,
        migrations: snapshot
            .migrations
            .iter()
            .filter(|(key, _)| who.sees(key))
            .map(|(key, m)| (key.clone(), m.clone()))
            .collect(),
        encoded: Default::default(),
    })
}
