//! `--tls-cert` / `--tls-key`: both listeners speak TLS, plaintext is refused, and the CLI
//! reaches an HTTPS server with `--tls-ca`.

use clap::Parser;
use reqwest::StatusCode;
use std::sync::Arc;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::switchyard_client::SwitchyardClient;
use switchyard_server::startup::{ServeConfig, Server};
use switchyard_tests::{ADMIN_TOKEN, Db, TempDir, TestDb, request_as};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_serve_tls() {
    let dir = TempDir::new(&format!("switchyard-tls-{}", std::process::id()));
    let issued =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert_pem, key_pem) = (issued.cert.pem(), issued.signing_key.serialize_pem());
    let (cert_path, key_path) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, &key_pem).unwrap();

    let db = Arc::new(TestDb::new(Db::Sqlite).await);
    let server = Server::start(
        ServeConfig {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone(),
            client_ttl: switchyard_tests::CLIENT_TTL,
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            tls_cert: Some(cert_path.clone()),
            tls_key: Some(key_path),
            ..Default::default()
        },
        switchyard_server::app::system_clock(),
    )
    .await
    .unwrap();
    assert!(server.tls);

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", server.http_addr.port());
    let response = https
        .get(format!("{base}/v1/snapshot"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Plaintext HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::get(format!("http://{}/healthz", server.http_addr)).await;
    assert!(plain.is_err(), "plaintext was answered: {plain:?}");
    // An untrusted client refuses the self-signed certificate.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", server.grpc_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let snapshot = SwitchyardClient::new(channel)
        .get_snapshot(request_as(ADMIN_TOKEN, pb::GetSnapshotRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snapshot.version, 0);

    // The CLI, trusting the certificate with --tls-ca.
    let cli = switchyard_server::cli::Cli::try_parse_from([
        "switchyard",
        "--server",
        &base,
        "--token",
        ADMIN_TOKEN,
        "--tls-ca",
        cert_path.to_str().unwrap(),
        "migration",
        "create",
        "tls.works",
        "--reason",
        "over https",
    ])
    .unwrap();
    assert_eq!(
        switchyard_server::cli::run(cli.remote, cli.command).await,
        0
    );
    let response = https
        .get(format!("{base}/v1/migrations/tls.works"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    server.shutdown().await.unwrap();
}
