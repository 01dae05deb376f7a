//! The client crate's OpenFeature provider against a live server: through the `open-feature`
//! SDK, every entity gets the stage and plan the client crate gives it, which is also what the
//! server's OFREP endpoint answers for it; an unknown migration and a wrong type are the SDK's
//! errors, not a silent fallback.

use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason, OpenFeature};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use switchyard_client::openfeature::SwitchyardProvider;
use switchyard_client::{Client, Stage};
use switchyard_tests::{Db, TestServer, eventually};

const KEY: &str = "users.email-split";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_answers_as_the_client_and_the_ofrep_endpoint_do() {
    let srv = TestServer::start(Db::Sqlite).await;
    let at_full = srv.at_full(KEY, Stage::DualWrite).await;
    let (status, m) = srv
        .post(
            &format!("/v1/migrations/{KEY}/rollout"),
            json!({"rollout_bp": 3000, "expected_version": at_full, "reason": "30%"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let version = m["version"].as_u64().unwrap();

    let token = srv.token_with_role("api", "reader").await;
    let client = Client::builder(format!("http://{}", srv.server.grpc_addr), token, "api")
        .connect()
        .await
        .expect("connecting");
    eventually(
        Duration::from_secs(15),
        "the client to apply 30%",
        || async { client.version() >= version },
    )
    .await;
    let mut api = OpenFeature::default();
    api.set_provider(SwitchyardProvider::new(client.clone()))
        .await;
    let features = api.create_client();

    let mut seen = std::collections::BTreeSet::new();
    for i in 0..200 {
        let entity = format!("user-{i}");
        let context = EvaluationContext::default().with_targeting_key(entity.clone());
        let details = features
            .get_string_details(KEY, Some(&context), None)
            .await
            .expect("an evaluation");
        let stage = client.stage(KEY, &entity);
        assert_eq!(details.value, stage.as_str(), "{entity}");
        assert_eq!(details.variant.as_deref(), Some(stage.as_str()));
        assert_eq!(details.reason, Some(EvaluationReason::Split));

        let (status, ofrep) = srv
            .post(
                &format!("/ofrep/v1/evaluate/flags/{KEY}"),
                json!({"context": {"targetingKey": entity}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{ofrep}");
        assert_eq!(ofrep["variant"], stage.as_str(), "{entity}: {ofrep}");

        // The plan, field for field as OFREP's value.
        let plan = features
            .get_struct_details::<open_feature::StructValue>(KEY, Some(&context), None)
            .await
            .expect("a plan")
            .value;
        for (field, value) in ofrep["value"].as_object().unwrap() {
            let ours = &plan.fields[field];
            let ours = match ours {
                open_feature::Value::String(s) => json!(s),
                open_feature::Value::Bool(b) => json!(b),
                other => panic!("{field}: {other:?}"),
            };
            assert_eq!(&ours, value, "{entity}: {field}");
        }
        seen.insert(stage);
    }
    assert_eq!(seen.len(), 2, "both sides of the front: {seen:?}");

    // No entity: the trailing stage, every entity alike.
    let details = features
        .get_string_details(KEY, None, None)
        .await
        .expect("an evaluation");
    assert_eq!(details.value, "off");
    assert_eq!(details.reason, Some(EvaluationReason::Static));

    // Unknown to every snapshot: FLAG_NOT_FOUND, so the application's default applies.
    let missing = features
        .get_string_value("users.no-such", None, None)
        .await
        .unwrap_err();
    assert_eq!(missing.code, EvaluationErrorCode::FlagNotFound);
    assert!(missing.message.unwrap().contains("fallback"));
    // A stage is not a boolean.
    let wrong = features.get_bool_value(KEY, None, None).await.unwrap_err();
    assert_eq!(wrong.code, EvaluationErrorCode::TypeMismatch);
    client.shutdown().await;
    srv.stop().await;
}
