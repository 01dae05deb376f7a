//! What a client holding a newer version than a server sees: a lagging replica catches up before
//! answering an ETag poll, and a server whose database is older than the client's version says
//! so instead of waiting forever.

use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use std::time::Duration;
use switchyard_proto::v1 as pb;
use switchyard_tests::{Db, TestClock, TestServer, both_databases, eventually, grpc_detail};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_answers_an_etag_poll_with_the_pollers_version_or_newer() {
    let a = TestServer::start(Db::Postgres).await;
    // B hears of changes made through A only when asked to catch up.
    let b = TestServer::start_configured(a.db.clone(), TestClock::new(), |c| {
        c.change_notifications = false;
        c.change_poll_interval = Duration::from_secs(3600);
    })
    .await;
    // Its follower reads once at start-up; only after that read does it stop learning.
    eventually(Duration::from_secs(10), "B's first read", || async {
        b.server.app.hub.refreshes() > 0
    })
    .await;
    a.create("replicas.etag", false, &[]).await;
    let held = a.snapshot_version().await;
    assert!(b.snapshot_version().await < held, "B lags");

    let response = b
        .http
        .get(format!("{}/v1/snapshot", b.base))
        .bearer_auth(&b.token)
        .header(IF_NONE_MATCH, format!("W/\"v{held}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()[ETAG], format!("\"v{held}\"").as_str());
    assert_eq!(b.snapshot_version().await, held, "B caught up to answer");
}

async fn a_version_from_the_future_is_refused(db: Db) {
    let srv = TestServer::start(db).await;
    srv.create("replicas.future", false, &[]).await;
    let future = srv.snapshot_version().await + 100;

    let (status, body) = srv.get(&format!("/v1/watch?since={future}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("restored from an older backup"),
        "{body}"
    );

    let err = srv
        .grpc
        .clone()
        .watch(srv.req(pb::WatchRequest {
            since_version: future,
        }))
        .await
        .expect_err("a version the database never held");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(grpc_detail(&err).code, "invalid_argument");
    srv.stop().await;
}

both_databases!(a_version_from_the_future_is_refused);
