//! OFREP, the OpenFeature Remote Evaluation Protocol: any OpenFeature SDK's stock OFREP provider
//! asks which stage an entity is at.
//!
//! - The flag key is the migration key; the context's `targetingKey` is the entity key, bucketed
//!   exactly as the client crate buckets it (no targeting key: the operation has no entity and
//!   gets the trailing stage, as in the client).
//! - The variant is the stage (`dual_write`); the value is the read/write plan as an object
//!   (`stage`, `write`, `authoritative_write`, `read`, `return_value`, `shadow_compare`), read with
//!   the SDK's object evaluation; the metadata holds the migration's `version`, its front
//!   (`front_stage`, `rollout_bp`) and the entity's `bucket`.
//! - The reason is `SPLIT` when the entity's bucket decided between two stages (a front strictly
//!   between 0 and 100%), else `STATIC` (every entity gets the same stage).
//! - Tokens and scopes are the API's: a Bearer token (or `X-API-Key`) with read permission; a
//!   scoped token's bulk evaluation holds only its migrations.

use super::{App, Caller};
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::ETAG;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use switchyard_domain::{Migration, bucket};
use switchyard_proto::json as wire;

/// The longest targeting key taken, in characters (as the document's `maxLength` counts).
const MAX_TARGETING_KEY_CHARS: usize = 1024;

/// The caller: a Bearer token, or the same token in `X-API-Key` (OFREP's other scheme).
pub(super) struct OfrepCaller(crate::auth::Principal);

impl FromRequestParts<Arc<App>> for OfrepCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            if let Some(key) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
                let header = format!("Bearer {key}");
                return Ok(OfrepCaller(app.auth.authenticate(Some(&header)).await?));
            }
        }
        let Caller(who) = Caller::from_request_parts(parts, app).await?;
        Ok(OfrepCaller(who))
    }
}

/// An OFREP failure body: `{key?, errorCode, errorDetails}` with its status.
fn failure(status: StatusCode, key: Option<&str>, code: &str, details: String) -> Response {
    let mut body = json!({ "errorCode": code, "errorDetails": details });
    if let Some(key) = key {
        body["key"] = json!(key);
    }
    (status, axum::Json(body)).into_response()
}

/// Why a request body was refused: an OFREP error code and what to fix.
#[derive(Debug)]
struct BadRequest(&'static str, String);

impl BadRequest {
    fn response(self, key: Option<&str>) -> Response {
        failure(StatusCode::BAD_REQUEST, key, self.0, self.1)
    }
}

/// The targeting key of a request body `{"context": {...}}`. The context may be absent (the
/// stock providers send `{}` when there is none); the body may not, as the protocol requires
/// one; anything else malformed is refused.
fn targeting_key(body: &Bytes) -> Result<Option<String>, BadRequest> {
    let bad = |code: &'static str, details: String| BadRequest(code, details);
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        bad(
            "PARSE_ERROR",
            format!("the body is not JSON ({e}): send {{\"context\": {{\"targetingKey\": \"…\"}}}} or {{}}"),
        )
    })?;
    let Some(object) = parsed.as_object() else {
        return Err(bad(
            "PARSE_ERROR",
            "the body must be a JSON object: {\"context\": {\"targetingKey\": \"…\"}}".to_owned(),
        ));
    };
    let context = match object.get("context") {
        None => return Ok(None),
        Some(Value::Object(context)) => context,
        Some(_) => {
            return Err(bad(
                "INVALID_CONTEXT",
                "context must be an object, e.g. {\"targetingKey\": \"user-123\"}".to_owned(),
            ));
        }
    };
    match context.get("targetingKey") {
        None => Ok(None),
        Some(Value::String(k)) if k.chars().count() <= MAX_TARGETING_KEY_CHARS => {
            Ok(Some(k.clone()))
        }
        Some(Value::String(_)) => Err(bad(
            "INVALID_CONTEXT",
            format!("targetingKey is too long: allowed up to {MAX_TARGETING_KEY_CHARS} characters"),
        )),
        Some(_) => Err(bad(
            "INVALID_CONTEXT",
            "targetingKey must be a string: the entity key (e.g. a user id)".to_owned(),
        )),
    }
}

/// One migration evaluated for an entity, as an OFREP success.
fn evaluate(m: &Migration, targeting: Option<&str>) -> Value {
    let bucket = targeting.map(|k| bucket(m.salt, k.as_bytes()));
    let front = m.front();
    let stage = front.stage_for(bucket);
    let split = targeting.is_some() && m.rollout_bp.get() > 0 && m.rollout_bp.get() < 10_000;
    let decision = wire::Decision::new(m.key.to_string(), bucket, stage.plan(), m.version);
    let mut value = serde_json::to_value(&decision).expect("a decision serializes");
    let plan: Map<String, Value> = value
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default()
        .into_iter()
        .filter(|(field, _)| !matches!(field.as_str(), "key" | "bucket" | "version"))
        .collect();
    let mut metadata = json!({
        "version": m.version.0,
        "front_stage": m.stage.as_str(),
        "rollout_bp": m.rollout_bp.get(),
    });
    if let Some(bucket) = bucket {
        metadata["bucket"] = json!(bucket);
    }
    json!({
        "key": m.key.as_str(),
        "value": plan,
        "variant": stage.as_str(),
        "reason": if split { "SPLIT" } else { "STATIC" },
        "metadata": metadata,
    })
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub(super) async fn evaluate_flag(
    State(app): State<Arc<App>>,
    OfrepCaller(who): OfrepCaller,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let targeting = match targeting_key(&body) {
        Ok(t) => t,
        Err(bad) => return Ok(bad.response(Some(&key))),
    };
    match app.get_migration(&who, &key) {
        Ok(m) => Ok(axum::Json(evaluate(&m, targeting.as_deref())).into_response()),
        // An invalid key names no flag there could be.
        Err(
            ApiError::NotFound(details)
            | ApiError::InvalidArgument {
                message: details, ..
            },
        ) => Ok(failure(
            StatusCode::NOT_FOUND,
            Some(&key),
            "FLAG_NOT_FOUND",
            details,
        )),
        Err(e) => Err(e),
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every migration the token may see, with an ETag of the
/// state version, the token and the targeting key (the evaluation depends on all three).
pub(super) async fn evaluate_flags(
    State(app): State<Arc<App>>,
    OfrepCaller(who): OfrepCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let targeting = match targeting_key(&body) {
        Ok(t) => t,
        Err(bad) => return Ok(bad.response(None)),
    };
    let snapshot = app.snapshot(&who)?;
    let mut hash = Sha256::new();
    hash.update(who.token_id.to_be_bytes());
    hash.update(targeting.as_deref().unwrap_or("").as_bytes());
    // Whether there is a targeting key at all changes the answer too.
    hash.update([u8::from(targeting.is_some())]);
    let etag = format!(
        "\"v{}-{}\"",
        snapshot.version,
        hex::encode(&hash.finalize()[..8])
    );
    if super::none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    let flags: Vec<Value> = snapshot
        .migrations
        .values()
        .map(|m| evaluate(m, targeting.as_deref()))
        .collect();
    let body = json!({ "flags": flags, "metadata": { "version": snapshot.version.0 } });
    Ok(([(ETAG, etag)], axum::Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_is_optional_and_its_targeting_key_a_bounded_string() {
        let read = |body: &str| targeting_key(&Bytes::from(body.to_owned()));
        assert_eq!(read("{}").ok(), Some(None));
        assert_eq!(read(r#"{"context": {}}"#).ok(), Some(None));
        assert_eq!(
            read(r#"{"context": {"targetingKey": "u-1", "plan": "pro"}}"#).ok(),
            Some(Some("u-1".to_owned()))
        );
        for bad in [
            "",
            "{",
            "[]",
            r#"{"context": 3}"#,
            r#"{"context": null}"#,
            r#"{"context": {"targetingKey": null}}"#,
            r#"{"context": {"targetingKey": 7}}"#,
        ] {
            let refused = read(bad).unwrap_err();
            let expected = if bad.starts_with(r#"{"context""#) {
                "INVALID_CONTEXT"
            } else {
                "PARSE_ERROR"
            };
            assert_eq!(refused.0, expected, "{bad}: {refused:?}");
        }
        let long = format!(
            r#"{{"context": {{"targetingKey": "{}"}}}}"#,
            "x".repeat(1025)
        );
        assert!(read(&long).is_err());
    }
}
