//! The API error: one enum for both transports, with exactly one mapping to an HTTP response
//! (in `http`) and one to a `tonic::Status` (in `grpc`). Internal errors are logged where they
//! are mapped and never leak their text.

use crate::store::StoreError;
use switchyard_domain::rules::DomainError;
use switchyard_domain::{InvalidInput, Migration, Rule};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidArgument { message: String, rule: Option<Rule> },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Rule 8: the expected version is stale.
    #[error("{message}")]
    Stale {
        message: String,
        current: Box<Migration>,
    },
    /// A safety rule refused the change.
    #[error("{message}")]
    Refused {
        rule: Rule,
        message: String,
        current: Box<Migration>,
    },
    /// The operation does not apply to the current state (or, with no migration yet, the
    /// request's fields do not apply together).
    #[error("{message}")]
    NotApplicable {
        message: String,
        current: Option<Box<Migration>>,
    },
    /// The rules allow the change but a second person must approve it first (four eyes).
    #[error("{message}")]
    ApprovalRequired {
        message: String,
        current: Box<Migration>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// HTTP only: the route exists but not with this method; the message names the allowed ones.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// HTTP only: the request body did not arrive within the server's body timeout.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Every code [`ApiError::code`] can answer (the OpenAPI document's enum).
    pub const CODES: [&'static str; 14] = [
        "invalid_argument",
        "not_found",
        "already_exists",
        "stale_version",
        "rule_refused",
        "not_applicable",
        "approval_required",
        "unauthenticated",
        "permission_denied",
        "payload_too_large",
        "method_not_allowed",
        "request_timeout",
        "unavailable",
        "internal",
    ];

    /// The stable machine-readable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument { .. } => "invalid_argument",
            ApiError::NotFound(_) => "not_found",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::Stale { .. } => "stale_version",
            ApiError::Refused { .. } => "rule_refused",
            ApiError::NotApplicable { .. } => "not_applicable",
            ApiError::ApprovalRequired { .. } => "approval_required",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn rule(&self) -> Option<Rule> {
        match self {
            ApiError::InvalidArgument { rule, .. } => *rule,
            ApiError::Refused { rule, .. } => Some(*rule),
            ApiError::Stale { .. } => Some(Rule::ExpectedVersion),
            _ => None,
        }
    }

    pub fn current(&self) -> Option<&Migration> {
        match self {
            ApiError::Stale { current, .. }
            | ApiError::Refused { current, .. }
            | ApiError::ApprovalRequired { current, .. } => Some(current),
            ApiError::NotApplicable { current, .. } => current.as_deref(),
            _ => None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            message: message.into(),
            rule: None,
        }
    }

    /// The message safe to show a caller: internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; the server log has the details".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<crate::hub::WatchesFull> for ApiError {
    fn from(e: crate::hub::WatchesFull) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::invalid(e.0)
    }
}

impl From<DomainError> for ApiError {
    /// For refusals that happen before any migration is loaded (e.g. a create's reason).
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(e) => e.into(),
            DomainError::Refused { rule, .. } => ApiError::InvalidArgument {
                message: e.to_string(),
                rule: Some(rule),
            },
            other => ApiError::invalid(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} does not exist")),
            StoreError::AlreadyExists(what) => {
                ApiError::AlreadyExists(format!("{what} already exists; pick another name"))
            }
            StoreError::Refused { error, current } => match error {
                DomainError::Stale { .. } => ApiError::Stale {
                    message: error.to_string(),
                    current,
                },
                // A missing reason is bad input, not a state conflict.
                DomainError::Refused {
                    rule: Rule::Reason, ..
                } => ApiError::InvalidArgument {
                    message: error.to_string(),
                    rule: Some(Rule::Reason),
                },
                DomainError::Refused { rule, .. } => ApiError::Refused {
                    rule,
                    message: error.to_string(),
                    current,
                },
                // `App::mutate` answers these with the current state; anywhere else they are
                // still not a change.
                DomainError::NotApplicable(message) | DomainError::Unchanged(message) => {
                    ApiError::NotApplicable {
                        message,
                        current: Some(current),
                    }
                }
                DomainError::NeedsApproval { message, .. } => {
                    ApiError::ApprovalRequired { message, current }
                }
                DomainError::Invalid(e) => e.into(),
            },
            unavailable if unavailable.is_unavailable() => {
                ApiError::Unavailable("the database is not answering; retry shortly".to_owned())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ApiError;

    #[test]
    fn codes_lists_every_code_once() {
        use switchyard_domain::{Migration, MigrationKey, NewMigration, Version};
        let new = NewMigration::with_key(MigrationKey::parse("a.b").unwrap());
        let m = || Box::new(Migration::create(new.clone(), 0, Version(1), 0));
        let every = [
            ApiError::invalid("x"),
            ApiError::NotFound(String::new()),
            ApiError::AlreadyExists(String::new()),
            ApiError::Stale {
                message: String::new(),
                current: m(),
            },
            ApiError::Refused {
                rule: switchyard_domain::Rule::Reason,
                message: String::new(),
                current: m(),
            },
            ApiError::NotApplicable {
                message: String::new(),
                current: Some(m()),
            },
            ApiError::ApprovalRequired {
                message: String::new(),
                current: m(),
            },
            ApiError::Unauthenticated(String::new()),
            ApiError::PermissionDenied(String::new()),
            ApiError::PayloadTooLarge(String::new()),
            ApiError::MethodNotAllowed(String::new()),
            ApiError::RequestTimeout(String::new()),
            ApiError::Unavailable(String::new()),
            ApiError::Internal(String::new()),
        ];
        let codes: Vec<&str> = every.iter().map(ApiError::code).collect();
        assert_eq!(codes, ApiError::CODES);
    }
}
