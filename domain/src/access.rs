//! Who may do what: the roles a token carries and the permission each operation needs.
//!
//! The server's auth layer checks tokens against these; the store keeps a token's role by its
//! name; the CLI offers the same names. None of them defines its own copy.

use crate::event::EventKind;
use crate::rules::Operation;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Application clients: read state, watch, decide, report heartbeats.
    Reader,
    /// Release managers: everything a reader can, plus every migration change.
    Operator,
    /// Deploy pipelines: read, and record schema events (expand applied, contracted).
    Gate,
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
    ManageTokens,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Operator, Role::Gate, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Gate => "gate",
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
            Role::Operator => matches!(permission, Read | RecordSchema | Operate),
            Role::Gate => matches!(permission, Read | RecordSchema),
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
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::RecordSchema,
        Permission::Operate,
        Permission::ManageTokens,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::RecordSchema => "record_schema",
            Permission::Operate => "operate",
            Permission::ManageTokens => "manage_tokens",
        }
    }

    /// What a refusal says the caller may not do, and which roles may.
    pub fn describe(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::RecordSchema => "record schema events (needs gate or operator)",
            Permission::Operate => "change migrations (needs operator or admin)",
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
    /// Pipelines record what they applied (expand, retire, restore, contract); every other
    /// event is a release manager's.
    pub fn permission(self) -> Permission {
        match self {
            EventKind::ExpandApplied
            | EventKind::Retired
            | EventKind::Restored
            | EventKind::Contracted => Permission::RecordSchema,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_design_says() {
        use Permission::*;
        let grants = |r: Role| {
            [Read, RecordSchema, Operate, ManageTokens]
                .into_iter()
                .filter(|p| r.allows(*p))
                .collect::<Vec<_>>()
        };
        assert_eq!(grants(Role::Reader), [Read]);
        assert_eq!(grants(Role::Gate), [Read, RecordSchema]);
        assert_eq!(grants(Role::Operator), [Read, RecordSchema, Operate]);
        assert_eq!(
            grants(Role::Admin),
            [Read, RecordSchema, Operate, ManageTokens]
        );
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!(
            Role::parse("root")
                .unwrap_err()
                .contains("reader, operator, gate, admin")
        );
    }
}
