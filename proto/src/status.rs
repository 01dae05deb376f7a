//! gRPC errors in the standard rich error model: the `grpc-status-details-bin` trailer holds a
//! `google.rpc.Status` (the code and message again, and `Any`-packed details), which every gRPC
//! library knows how to read (grpcurl prints it, Python's `grpc_status.rpc_status.from_call`
//! returns it, Go's `status.FromError` and tonic-types decode it).
//!
//! The details, in order:
//! - `switchyard.v1.ErrorDetail`: the machine-readable code, the safety rule that refused the
//!   request, and the migration's current state on a refused or stale change;
//! - `google.rpc.ErrorInfo`: the code as the reason (`RULE_REFUSED`), the domain
//!   `switchyard.dev`, and as metadata the rule, the migration key and its current version when
//!   there is one;
//! - `google.rpc.PreconditionFailure`, when a safety rule refused the change: one violation
//!   whose type is the rule (`RULE_5`), whose subject is the migration and whose description is
//!   the message.

use crate::v1 as pb;
use prost::Message;
use prost_types::Any;
use std::collections::HashMap;
use tonic_types::pb::{ErrorInfo, PreconditionFailure, precondition_failure::Violation};

/// The `Any` type URL of Switchyard's own detail.
pub const ERROR_DETAIL_TYPE: &str = "type.googleapis.com/switchyard.v1.ErrorDetail";
const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const PRECONDITION_FAILURE_TYPE: &str = "type.googleapis.com/google.rpc.PreconditionFailure";
/// `ErrorInfo.domain`: who defines the reasons.
pub const ERROR_DOMAIN: &str = "switchyard.dev";

fn any(type_url: &str, message: &impl Message) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: message.encode_to_vec(),
    }
}

/// A `Status` whose details are the encoded `google.rpc.Status` described above.
pub fn rich_status(code: tonic::Code, message: String, detail: &pb::ErrorDetail) -> tonic::Status {
    let mut metadata = HashMap::new();
    if detail.rule != 0 {
        metadata.insert("rule".to_owned(), detail.rule.to_string());
    }
    if let Some(current) = &detail.current {
        metadata.insert("migration".to_owned(), current.key.clone());
        metadata.insert("version".to_owned(), current.version.to_string());
    }
    let mut details = vec![
        any(ERROR_DETAIL_TYPE, detail),
        any(
            ERROR_INFO_TYPE,
            &ErrorInfo {
                reason: detail.code.to_ascii_uppercase(),
                domain: ERROR_DOMAIN.to_owned(),
                metadata,
            },
        ),
    ];
    if detail.rule != 0 {
        let subject = detail
            .current
            .as_ref()
            .map_or_else(String::new, |m| format!("migrations/{}", m.key));
        details.push(any(
            PRECONDITION_FAILURE_TYPE,
            &PreconditionFailure {
                violations: vec![Violation {
                    r#type: format!("RULE_{}", detail.rule),
                    subject,
                    description: message.clone(),
                }],
            },
        ));
    }
    let status = tonic_types::pb::Status {
        code: code as i32,
        message: message.clone(),
        details,
    };
    tonic::Status::with_details(code, message, status.encode_to_vec().into())
}

/// Switchyard's detail of a failed call: from the `google.rpc.Status` in its details, or, from
/// a server older than the rich error model, the bare `ErrorDetail` it sent there. `None` when
/// the status carries neither (a transport failure, or an answer from a proxy in between).
pub fn error_detail(status: &tonic::Status) -> Option<pb::ErrorDetail> {
    let bytes = status.details();
    if bytes.is_empty() {
        return None;
    }
    if let Ok(rich) = tonic_types::pb::Status::decode(bytes) {
        if let Some(found) = rich
            .details
            .iter()
            .find(|d| d.type_url == ERROR_DETAIL_TYPE)
            .and_then(|d| pb::ErrorDetail::decode(d.value.as_slice()).ok())
        {
            return Some(found);
        }
    }
    pb::ErrorDetail::decode(bytes)
        .ok()
        .filter(|d| !d.code.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_the_standard_details_and_ours() {
        let detail = pb::ErrorDetail {
            code: "rule_refused".to_owned(),
            rule: 5,
            current: Some(pb::Migration {
                key: "users.email".to_owned(),
                version: 12,
                ..Default::default()
            }),
        };
        let status = rich_status(
            tonic::Code::FailedPrecondition,
            "rule 5: 1 of 2 instances applied".to_owned(),
            &detail,
        );
        assert_eq!(error_detail(&status), Some(detail));

        let rich = tonic_types::pb::Status::decode(status.details()).unwrap();
        assert_eq!(rich.code, tonic::Code::FailedPrecondition as i32);
        assert_eq!(rich.message, "rule 5: 1 of 2 instances applied");
        let types: Vec<&str> = rich.details.iter().map(|d| d.type_url.as_str()).collect();
        assert_eq!(
            types,
            [
                ERROR_DETAIL_TYPE,
                ERROR_INFO_TYPE,
                PRECONDITION_FAILURE_TYPE
            ]
        );
        let info = ErrorInfo::decode(rich.details[1].value.as_slice()).unwrap();
        assert_eq!(info.reason, "RULE_REFUSED");
        assert_eq!(info.domain, "switchyard.dev");
        assert_eq!(info.metadata["rule"], "5");
        assert_eq!(info.metadata["migration"], "users.email");
        assert_eq!(info.metadata["version"], "12");
        let failure = PreconditionFailure::decode(rich.details[2].value.as_slice()).unwrap();
        assert_eq!(failure.violations[0].r#type, "RULE_5");
        assert_eq!(failure.violations[0].subject, "migrations/users.email");
    }

    #[test]
    fn an_older_servers_bare_detail_and_no_detail_are_read() {
        let detail = pb::ErrorDetail {
            code: "stale_version".to_owned(),
            rule: 8,
            current: None,
        };
        let bare = tonic::Status::with_details(
            tonic::Code::Aborted,
            "stale",
            detail.encode_to_vec().into(),
        );
        assert_eq!(error_detail(&bare), Some(detail));
        assert_eq!(error_detail(&tonic::Status::unavailable("down")), None);
        // A proxy's own rich status, without our detail.
        let foreign = tonic_types::pb::Status {
            code: 14,
            message: "upstream".into(),
            details: vec![],
        };
        let foreign = tonic::Status::with_details(
            tonic::Code::Unavailable,
            "upstream",
            foreign.encode_to_vec().into(),
        );
        assert_eq!(error_detail(&foreign), None);
    }
}
