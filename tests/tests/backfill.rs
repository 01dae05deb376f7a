//! Backfill control on the server: checkpoints (cursor, rows, rate, ETA) written by a runner,
//! pause / resume / cancel recorded by release managers, over HTTP, gRPC and the CLI.

use clap::Parser;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use switchyard_proto::v1 as pb;
use switchyard_tests::{Db, TestServer, both_databases};

const KEY: &str = "users.backfilled";

async fn event(srv: &TestServer, event: &str) -> (StatusCode, Value) {
    let version = srv.version_of(KEY).await;
    srv.post(
        &format!("/v1/migrations/{KEY}/events"),
        json!({ "event": event, "expected_version": version, "reason": "test" }),
    )
    .await
}

async fn checkpoint(srv: &TestServer, cursor: &str, done: u64, total: u64) -> (StatusCode, Value) {
    srv.call(
        reqwest::Method::PUT,
        &format!("/v1/migrations/{KEY}/backfill/checkpoint"),
        Some(
            json!({ "cursor": cursor, "rows_done": done, "rows_total_estimate": total,
                     "runner": "api/worker-1" }),
        ),
    )
    .await
}

async fn progress(srv: &TestServer) -> Value {
    let (status, body) = srv.get(&format!("/v1/migrations/{KEY}/backfill")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn checkpoints_pause_resume_and_cancel(db: Db) {
    let srv = TestServer::start(db).await;
    srv.ready_for_backfill(KEY).await;

    // Not started: nothing to checkpoint.
    let (status, body) = checkpoint(&srv, "0", 0, 1000).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("record backfill-started first"),
        "{body}"
    );

    assert_eq!(event(&srv, "backfill_started").await.0, StatusCode::OK);
    let (status, p) = checkpoint(&srv, "100", 100, 1000).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["cursor"], "100");
    assert_eq!(
        p["rate_rows_per_second"], 0.0,
        "one checkpoint has no rate yet"
    );
    assert_eq!(p["eta_seconds"], Value::Null);

    // A second checkpoint 2 s later (server clock): 400 rows in 2 s = 200 rows/s, 500 left: 3 s.
    srv.clock.advance(Duration::from_secs(2));
    let (_, p) = checkpoint(&srv, "500", 500, 1000).await;
    assert_eq!(p["rate_rows_per_second"], 200.0);
    assert_eq!(p["eta_seconds"], 3, "{p}");
    assert_eq!(p["runner"], "api/worker-1");
    assert_eq!(progress(&srv).await, p);

    // gRPC sees the same.
    let g = srv
        .grpc
        .clone()
        .get_backfill(srv.req(pb::GetBackfillRequest { key: KEY.into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (g.rows_done, g.rows_total_estimate, g.eta_seconds),
        (500, 1000, 3)
    );
    assert_eq!(g.cursor, "500");

    // A reader (an application's token) may not move the cursor.
    let reader = srv.token_with_role("app", "reader").await;
    let (status, _) = srv
        .call_as(
            &reader,
            reqwest::Method::PUT,
            &format!("/v1/migrations/{KEY}/backfill/checkpoint"),
            Some(json!({ "cursor": "999", "rows_done": 999 })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Pause: runners see `paused` in the snapshot; a batch in flight may still checkpoint.
    assert_eq!(event(&srv, "backfill_paused").await.0, StatusCode::OK);
    assert_eq!(srv.migration(KEY).await["backfill"]["paused"], true);
    assert_eq!(progress(&srv).await["paused"], true);
    assert_eq!(checkpoint(&srv, "600", 600, 1000).await.0, StatusCode::OK);
    let (status, body) = event(&srv, "backfill_paused").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(event(&srv, "backfill_resumed").await.0, StatusCode::OK);
    assert_eq!(progress(&srv).await["paused"], false);

    // While it runs, dual_write may not drop below 100% (rule 3).
    let version = srv.version_of(KEY).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{KEY}/rollout"),
            json!({ "rollout_bp": 5000, "expected_version": version, "reason": "oops" }),
        )
        .await;
    assert_eq!(
        (status, body["rule"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(3)),
        "{body}"
    );

    // Cancel forgets the position: a new start begins at the start.
    let first_run = srv.migration(KEY).await["backfill"]["started_version"].clone();
    assert!(first_run.as_u64().is_some(), "{first_run}");
    assert_eq!(event(&srv, "backfill_cancelled").await.0, StatusCode::OK);
    let p = progress(&srv).await;
    assert_eq!(
        (
            p["status"].as_str(),
            p["cursor"].as_str(),
            p["rows_done"].as_u64()
        ),
        (Some("not_started"), Some(""), Some(0))
    );
    assert_eq!(event(&srv, "backfill_started").await.0, StatusCode::OK);
    assert_eq!(progress(&srv).await["cursor"], "");
    // A runner of the cancelled run that missed the cancel may not move the new run's position.
    let second_run = srv.migration(KEY).await["backfill"]["started_version"].clone();
    assert_ne!(first_run, second_run);
    let path = format!("/v1/migrations/{KEY}/backfill/checkpoint");
    let run_checkpoint = |run: Value| {
        srv.call(
            reqwest::Method::PUT,
            &path,
            Some(json!({ "cursor": "900", "rows_done": 900, "started_version": run })),
        )
    };
    let (status, body) = run_checkpoint(first_run).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("was started again")),
        "{body}"
    );
    assert_eq!(
        (
            progress(&srv).await["cursor"].as_str(),
            progress(&srv).await["rows_done"].as_u64()
        ),
        (Some(""), Some(0)),
        "a refused checkpoint changes nothing"
    );
    let (status, body) = run_checkpoint(second_run).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(checkpoint(&srv, "1000", 1000, 1000).await.0, StatusCode::OK);
    assert_eq!(event(&srv, "backfill_complete").await.0, StatusCode::OK);
    let p = progress(&srv).await;
    assert_eq!(
        (p["status"].as_str(), p["rows_done"].as_u64()),
        (Some("complete"), Some(1000))
    );
    srv.stop().await;
}

both_databases!(checkpoints_pause_resume_and_cancel);

/// What the store keeps of a migration: its state, its audit log's length, the snapshot version
/// and the backfill's progress.
async fn stored(srv: &TestServer) -> (Value, usize, u64, Value) {
    let (status, audit) = srv
        .get(&format!("/v1/migrations/{KEY}/audit?limit=500"))
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    (
        srv.migration(KEY).await,
        audit["entries"].as_array().expect("entries").len(),
        srv.snapshot_version().await,
        progress(srv).await,
    )
}

/// Counts above 2^63 - 1 were stored wrapped and read back as 0, and a NUL in a cursor was an
/// internal error on PostgreSQL: both are refused over HTTP and gRPC, saying what is allowed,
/// before anything is written.
async fn checkpoints_and_progress_refuse_what_cannot_be_stored(db: Db) {
    let srv = TestServer::start(db).await;
    srv.ready_for_backfill(KEY).await;
    assert_eq!(event(&srv, "backfill_started").await.0, StatusCode::OK);
    // A cursor is the last key a runner processed: a text key may hold a tab or a line break.
    assert_eq!(
        checkpoint(&srv, "1\t0\n0", 100, 1000).await.0,
        StatusCode::OK
    );
    assert_eq!(checkpoint(&srv, "100", 100, 1000).await.0, StatusCode::OK);
    let before = stored(&srv).await;
    let max = i64::MAX as u64;
    let range = "is out of range: allowed 0 to 9223372036854775807";

    // Checkpoints, over HTTP.
    for (cursor, done, total, phrase) in [
        (
            "1\u{0}0",
            200,
            1000,
            "invalid cursor: control character U+0000 at character 2",
        ),
        ("200", max + 1, 1000, "rows_done 9223372036854775808"),
        (
            "200",
            200,
            u64::MAX,
            "rows_total_estimate 18446744073709551615",
        ),
    ] {
        let (status, body) = checkpoint(&srv, cursor, done, total).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(phrase), "{message}");
        assert!(message.contains("allowed"), "{message}");
        if done > max || total > max {
            assert!(message.contains(range), "{message}");
        }
    }

    // Checkpoints, over gRPC.
    for (cursor, done, total, phrase) in [
        (
            "1\u{0}0",
            200,
            1000,
            "invalid cursor: control character U+0000",
        ),
        (
            "200",
            max + 1,
            1000,
            "rows_done 9223372036854775808 is out of range",
        ),
        (
            "200",
            200,
            u64::MAX,
            "rows_total_estimate 18446744073709551615 is out of range",
        ),
    ] {
        let request = pb::BackfillCheckpointRequest {
            key: KEY.into(),
            cursor: cursor.into(),
            rows_done: done,
            rows_total_estimate: total,
            runner: "api/worker-1".into(),
            started_version: 0,
            throttle: None,
        };
        let status = srv
            .grpc
            .clone()
            .checkpoint_backfill(srv.req(request))
            .await
            .expect_err("an unstorable checkpoint");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(phrase), "{status:?}");
    }

    // Progress events, over both.
    let version = srv.version_of(KEY).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{KEY}/events"),
            json!({ "event": "backfill_progress", "expected_version": version,
                    "reason": "test", "rows_done": max + 1, "rows_total_estimate": 10 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("rows_done 9223372036854775808 {range}")),
        "{body}"
    );
    let status = srv
        .grpc
        .clone()
        .record_event(srv.req(pb::RecordEventRequest {
            key: KEY.into(),
            event: pb::EventKind::BackfillProgress as i32,
            expected_version: version,
            reason: "test".into(),
            rows_done: 10,
            rows_total_estimate: u64::MAX,
            ..Default::default()
        }))
        .await
        .expect_err("an unstorable progress event");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("rows_total_estimate 18446744073709551615 is out of range"),
        "{status:?}"
    );
    assert_eq!(stored(&srv).await, before, "refusals change nothing");

    // The largest storable count is kept exactly.
    let (status, p) = checkpoint(&srv, "max", max, max).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let p = progress(&srv).await;
    assert_eq!(
        (p["rows_done"].as_u64(), p["rows_total_estimate"].as_u64()),
        (Some(max), Some(max)),
        "{p}"
    );
    srv.stop().await;
}

both_databases!(checkpoints_and_progress_refuse_what_cannot_be_stored);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_and_steers_a_backfill() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    assert_eq!(event(&srv, "backfill_started").await.0, StatusCode::OK);
    assert_eq!(checkpoint(&srv, "10", 10, 40).await.0, StatusCode::OK);
    let run = |args: &[&str]| {
        let mut all = vec!["switchyard", "--server", &srv.base, "--token", &srv.token];
        all.extend_from_slice(args);
        let cli = switchyard_server::cli::Cli::try_parse_from(all).unwrap();
        switchyard_server::cli::run(cli.remote, cli.command)
    };
    assert_eq!(run(&["backfill", "status", KEY, "--json"]).await, 0);
    assert_eq!(
        run(&["backfill", "pause", KEY, "--reason", "peak hours"]).await,
        0
    );
    assert_eq!(progress(&srv).await["paused"], true);
    // Pausing twice is refused (exit 1), resuming works.
    assert_eq!(
        run(&["backfill", "pause", KEY, "--reason", "again"]).await,
        1
    );
    assert_eq!(
        run(&["backfill", "resume", KEY, "--reason", "quiet now"]).await,
        0
    );
    assert_eq!(
        run(&["backfill", "cancel", KEY, "--reason", "wrong SET"]).await,
        0
    );
    assert_eq!(progress(&srv).await["status"], "not_started");
    assert_eq!(run(&["backfill", "status", "no.such"]).await, 2);
    srv.stop().await;
}
