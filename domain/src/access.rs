//! Who may do what: the roles a token carries and the permission each operation needs.
//!
//! The server's auth layer checks tokens against these; the store keeps a token's role by its
//! name; the CLI offers the same names. None of them defines its own copy.

use crate::event::EventKind;
use crate::rules::Operation;
use crate::types::{InvalidInput, MigrationKey};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Application clients: read state, watch, decide, report heartbeats.
    Reader,
    /// Release managers: everything a reader can, plus every migration change.
    Operator,
    /// Deploy pipelines: read, and record schema events (expand applied, contracted).
    Gate,
    /// Backfill runners: read, heartbeat, save checkpoints, record `backfill-started` and
    /// `backfill-complete`; nothing that moves a front or pauses a backfill.
    Backfill,
    /// Token management, plus everything an operator can.
    Admin,
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    /// Record a schema event a pipeline observes (expand applied, contracted).
    RecordSchema,
    Operate,
    /// Run a backfill: save its checkpoints, record its start and completion.
    RunBackfill,
    ManageTokens,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Reader,
        Role::Operator,
        Role::Gate,
        Role::Backfill,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Gate => "gate",
            Role::Backfill => "backfill",
            Role::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Result<Role, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| {
                let allowed: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role {raw:?}: allowed {}", allowed.join(", "))
            })
    }

    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(permission, Read | RecordSchema | Operate | RunBackfill),
            Role::Gate => matches!(permission, Read | RecordSchema),
            Role::Backfill => matches!(permission, Read | RunBackfill),
            Role::Reader => matches!(permission, Read),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        Role::parse(raw)
    }
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::RecordSchema,
        Permission::Operate,
        Permission::RunBackfill,
        Permission::ManageTokens,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::RecordSchema => "record_schema",
            Permission::Operate => "operate",
            Permission::RunBackfill => "run_backfill",
            Permission::ManageTokens => "manage_tokens",
        }
    }

    /// What a refusal says the caller may not do, and which roles may.
    pub fn describe(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::RecordSchema => "record schema events (needs gate or operator)",
            Permission::Operate => "change migrations (needs operator or admin)",
            Permission::RunBackfill => {
                "run a backfill: checkpoint it, record its start and completion (needs backfill \
                 or operator)"
            }
            Permission::ManageTokens => "manage tokens (needs admin)",
        }
    }
}

impl Role {
    /// Every permission the role grants.
    pub fn permissions(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.into_iter().filter(move |p| self.allows(*p))
    }
}

impl EventKind {
    /// Pipelines record what they applied (expand, retire, restore, contract), backfill runners
    /// their backfill's start and completion; every other event is a release manager's.
    pub fn permission(self) -> Permission {
        match self {
            EventKind::ExpandApplied
            | EventKind::Retired
            | EventKind::Restored
            | EventKind::Contracted => Permission::RecordSchema,
            // A runner's own steps; pausing, resuming and cancelling stay a release manager's.
            EventKind::BackfillStarted | EventKind::BackfillComplete => Permission::RunBackfill,
            _ => Permission::Operate,
        }
    }
}

impl Operation {
    pub fn permission(&self) -> Permission {
        match self {
            Operation::Record(event) => event.kind().permission(),
            _ => Permission::Operate,
        }
    }
}

/// The migrations a token may see and act on: every one (unscoped), or those matching one of
/// its patterns. A pattern is a migration key (`orders.split-shipments`) or a key prefix ending
/// in `*` (`orders.*`: every key that starts with `orders.`). Admin tokens are never scoped:
/// they manage the tokens that scopes restrict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope(Arc<[KeyPattern]>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPattern {
    /// Exactly this key.
    Key(String),
    /// Every key starting with this text (the pattern without its `*`).
    Prefix(String),
}

impl KeyPattern {
    pub fn parse(raw: &str) -> Result<KeyPattern, InvalidInput> {
        let allowed = "a scope pattern is a migration key (orders.split-shipments) or a key prefix \
                       followed by one '*' at the end (orders.*)";
        let raw = raw.trim();
        match raw.strip_suffix('*') {
            // The prefix must itself be a key's start: checked as a key (a prefix is one too).
            Some(prefix) if !prefix.contains('*') && MigrationKey::parse(prefix).is_ok() => {
                Ok(KeyPattern::Prefix(prefix.to_owned()))
            }
            Some(_) => Err(InvalidInput(format!(
                "invalid scope pattern {raw:?}: {allowed}"
            ))),
            None => MigrationKey::parse(raw)
                .map(|key| KeyPattern::Key(key.as_str().to_owned()))
                .map_err(|e| {
                    InvalidInput(format!("invalid scope pattern {raw:?}: {allowed} ({e})"))
                }),
        }
    }

    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyPattern::Key(k) => k == key,
            KeyPattern::Prefix(p) => key.starts_with(p.as_str()),
        }
    }

    /// The stored and displayed form: the key, or the prefix and `*`.
    pub fn text(&self) -> String {
        match self {
            KeyPattern::Key(k) => k.clone(),
            KeyPattern::Prefix(p) => format!("{p}*"),
        }
    }
}

impl Scope {
    /// At most this many patterns per token: a scope is meant to be read at a glance.
    pub const MAX_PATTERNS: usize = 32;

    /// Every migration.
    pub fn all() -> Scope {
        Scope::default()
    }

    /// A scope from its patterns; none means every migration.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Scope, InvalidInput> {
        if patterns.len() > Self::MAX_PATTERNS {
            return Err(InvalidInput(format!(
                "a scope of {} patterns is too long: allowed up to {}",
                patterns.len(),
                Self::MAX_PATTERNS
            )));
        }
        let mut parsed = patterns
            .iter()
            .map(|p| KeyPattern::parse(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        parsed.sort_by_key(KeyPattern::text);
        parsed.dedup();
        Ok(Scope(parsed.into()))
    }

    /// Whether the token may see and act on migration `key`.
    pub fn covers(&self, key: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.matches(key))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    pub fn patterns(&self) -> &[KeyPattern] {
        &self.0
    }

    /// The patterns as text (`orders.*`), empty for every migration.
    pub fn texts(&self) -> Vec<String> {
        self.0.iter().map(KeyPattern::text).collect()
    }

    /// Admin tokens manage the tokens scopes restrict, so they cannot be scoped.
    pub fn check_for(&self, role: Role) -> Result<(), InvalidInput> {
        if role == Role::Admin && !self.is_all() {
            return Err(InvalidInput(format!(
                "an admin token cannot be scoped (asked for {self}): scope a reader, operator, \
                 gate or backfill token instead"
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("every migration");
        }
        f.write_str(&self.texts().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_design_says() {
        use Permission::*;
        let grants = |r: Role| r.permissions().collect::<Vec<_>>();
        assert_eq!(grants(Role::Reader), [Read]);
        assert_eq!(grants(Role::Gate), [Read, RecordSchema]);
        assert_eq!(grants(Role::Backfill), [Read, RunBackfill]);
        assert_eq!(
            grants(Role::Operator),
            [Read, RecordSchema, Operate, RunBackfill]
        );
        assert_eq!(
            grants(Role::Admin),
            [Read, RecordSchema, Operate, RunBackfill, ManageTokens]
        );
        // A runner records its own steps and nothing else.
        let events = |p: Permission| {
            EventKind::ALL
                .into_iter()
                .filter(|e| e.permission() == p)
                .map(EventKind::as_str)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            events(RunBackfill),
            ["backfill_started", "backfill_complete"]
        );
    }

    #[test]
    fn scopes_cover_their_keys_and_prefixes_only() {
        let scope = Scope::parse(&["orders.*", "users.email", "orders.*"]).unwrap();
        assert_eq!(scope.texts(), ["orders.*", "users.email"]);
        assert!(scope.covers("orders.split"));
        assert!(scope.covers("users.email"));
        assert!(!scope.covers("users.email-2"));
        assert!(!scope.covers("order.x"));
        assert!(!scope.covers("ordersx"));
        assert!(Scope::parse::<&str>(&[]).unwrap().covers("anything"));
        assert_eq!(scope.to_string(), "orders.*, users.email");

        for bad in ["", "*", "Orders.*", "orders.*.x", "orders**", "a b"] {
            let e = Scope::parse(&[bad]).unwrap_err();
            assert!(e.0.contains("invalid scope pattern"), "{bad:?}: {e:?}");
            assert!(
                e.0.contains("orders.*"),
                "{bad:?}: says what is allowed: {e:?}"
            );
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}")).collect();
        assert!(
            Scope::parse(&many)
                .unwrap_err()
                .0
                .contains("allowed up to 32")
        );

        assert!(scope.check_for(Role::Operator).is_ok());
        assert!(
            scope
                .check_for(Role::Admin)
                .unwrap_err()
                .0
                .contains("cannot be scoped")
        );
        assert!(Scope::all().check_for(Role::Admin).is_ok());
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!(
            Role::parse("root")
                .unwrap_err()
                .contains("reader, operator, gate, backfill, admin")
        );
    }
}
