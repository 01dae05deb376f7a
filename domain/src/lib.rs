//! Switchyard's shared domain: what a migration is, how its traffic front moves, how an entity is
//! bucketed, and the safety rules that every change must pass.
//!
//! Pure by design: no I/O, no clocks, no randomness. The server calls [`rules::apply`] with the
//! current state, the operation, what it knows of the client fleet and the version the change
//! will get; clients call [`bucket::bucket`] and [`Front::stage_for`] to evaluate locally. Both
//! sides therefore bucket every entity identically.
//!
//! # Layout
//! - [`types`]: validated newtypes (migration key, basis points, version, reason).
//! - [`access`]: token roles and the permission each operation needs.
//! - [`approval`]: which changes a second person must approve (four eyes).
//! - [`event`]: the facts recorded about a migration, and their names.
//! - [`stage`]: the six stages plus `contracted`, and what each means for reads and writes.
//! - [`front`]: the rollout front `(stage, rollout)` and which stage an entity is at.
//! - [`bucket`]: the portable bucketing hash (xxh3-64 with the migration's salt as seed).
//! - [`migration`]: the migration record and its backfill state.
//! - [`rules`]: safety rules 1–9 as pure functions over a migration and the fleet.
//! - [`plan`]: the steps a migration takes by itself, and which one follows its front now.
//! - [`guardrail`]: what halts a plan (mismatches, new-shape errors and latency, lagging
//!   instances).
//! - [`schema`]: the database a migration migrates and the old-shape objects its contract drops.
//! - [`gate`]: the contract gate's checks (rule 7), with evidence and remedies.
//! - [`time`]: UTC minute and span formatting for messages.
//! - [`traffic`]: the counts clients report (per side, latency histogram) and how they add up.
//! - [`usage`]: what the target database's statistics show of the old shape's callers, and the
//!   gate's reading of it.

pub mod access;
pub mod approval;
pub mod bucket;
pub mod event;
pub mod front;
pub mod gate;
pub mod guardrail;
pub mod migration;
pub mod plan;
pub mod rules;
pub mod schema;
pub mod stage;
pub mod time;
pub mod traffic;
pub mod types;
pub mod usage;

pub use access::{KeyPattern, Permission, Role, Scope};
pub use bucket::bucket;
pub use event::{Event, EventKind};
pub use front::Front;
pub use migration::{Backfill, BackfillStatus, Migration, NewMigration};
pub use rules::{DomainError, Fleet, LiveInstance, Operation, Rule};
pub use schema::{Database, SchemaObject, TargetName};
pub use stage::{Plan, Side, Stage};
pub use types::{BasisPoints, InvalidInput, MigrationKey, Reason, Version};
