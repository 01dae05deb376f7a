//! The `switchyard` binary facing what it does not control: text from the server reaches the
//! terminal with its control characters escaped, `--help` never shows a secret from the
//! environment, and a refused TLS certificate is explained.

mod common;

use common::{BIN, serve_with, terminate};
use serde_json::{Value, json};
use std::process::{Command, Output};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// C0 (but the newlines output is laid out with), DEL and C1, in any encoding of them.
fn assert_no_control(what: &str, o: &Output) {
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let text = std::str::from_utf8(bytes).expect("the CLI writes UTF-8");
        let raw: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(raw.is_empty(), "{what}: raw {raw:?} on {stream}:\n{text}");
    }
}

const KEY: &str = "hostile.text";
/// Clears the screen and turns the text red; then C1's CSI, DEL, a bell and a tab.
const REASON: &str = "\u{1b}[2J\u{1b}[31mall clear\u{9b}0m\u{7f}\u{7}\tend";
/// A newline in a field: it must not start a line that passes for output of its own.
const ACTOR: &str = "ops\n#99 v9 forged entry";
const DESCRIPTION: &str = "rename\n\u{1b}]0;pwned\u{7}second line";

fn migration_json() -> Value {
    json!({
        "applicable_events": ["expand_applied"],
        "backfill": { "completed_version": null, "paused": false, "rows_done": 0,
                      "rows_total_estimate": 0, "started_version": null, "status": "none" },
        "created_at_ms": 1_796_204_251_630_i64,
        "description": DESCRIPTION,
        "entity_kind": "user\u{1b}[8m_id",
        "expand_applied": false,
        "expected_services": ["api\u{1b}[1A"],
        "full_since": { "off": 1 },
        "has_backfill": false,
        "key": KEY,
        "live_window": null,
        "old_shape_stale": false,
        "old_writes_resumed_since": null,
        "owner": "team\u{85}\u{1b}c",
        "rollout_bp": 10000,
        "salt": 1,
        "shadow_sample_bp": 10000,
        "soak_seconds": 604_800,
        "soak_started_at_ms": null,
        "stage": "off",
        "updated_at_ms": 1_796_204_251_630_i64,
        "version": 1
    })
}

fn audit_json() -> Value {
    json!({
        "entries": [{
            "action": "create", "actor": ACTOR, "after": migration_json(),
            "at_ms": 1_796_204_251_630_i64, "before": null, "id": 1,
            "migration_key": KEY, "reason": REASON, "version": 1
        }],
        "next_before_id": null
    })
}

/// A server answering with hostile text. Not the real server: its input validation may refuse
/// such text, and the CLI must not rely on it (older servers, instance names, a hostile proxy).
fn hostile_server() -> String {
    use axum::Json;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            &format!("/v1/migrations/{KEY}"),
            get(|| async { Json(migration_json()) }),
        )
        .route(
            &format!("/v1/migrations/{KEY}/audit"),
            get(|| async { Json(audit_json()) }),
        )
        .route(
            &format!("/v1/migrations/{KEY}/advance"),
            post(|| async {
                let body = json!({ "code": "stale_version", "rule": 8,
                                   "message": format!("refused: {REASON}") });
                (StatusCode::CONFLICT, Json(body))
            }),
        );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn cli_at(server: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_SERVER", server)
        .env("SWITCHYARD_TOKEN", "sy_unused_by_the_stub")
        .env_remove("SWITCHYARD_TLS_CA")
        .output()
        .expect("running the CLI")
}

#[test]
fn server_text_reaches_the_terminal_escaped() {
    let server = hostile_server();

    let o = cli_at(&server, &["audit", KEY]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_no_control("audit", &o);
    let out = stdout(&o);
    assert!(
        out.contains(r"\u{1b}[2J\u{1b}[31mall clear\u{9b}0m\u{7f}\u{7}\u{9}end"),
        "{out}"
    );
    // The actor's newline is escaped: the entry stays two lines, no forged third.
    assert!(out.contains(r"by ops\u{a}#99 v9 forged entry: "), "{out}");
    assert_eq!(out.trim_end().lines().count(), 2, "{out}");

    let o = cli_at(&server, &["migration", "show", KEY]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_no_control("migration show", &o);
    let out = stdout(&o);
    // A multi-line description keeps its lines, each indented under its field.
    assert!(
        out.contains(&format!(
            "  description      rename\n{:19}\\u{{1b}}]0;pwned\\u{{7}}second line\n",
            ""
        )),
        "{out}"
    );
    for escaped in [r"user\u{1b}[8m_id", r"api\u{1b}[1A", r"team\u{85}\u{1b}c"] {
        assert!(out.contains(escaped), "{escaped} in {out}");
    }

    // The server's error message, on stderr.
    let o = cli_at(
        &server,
        &["advance", KEY, "--expected-version", "1", "--reason", "r"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_no_control("refused advance", &o);
    assert!(stderr(&o).contains(r"\u{1b}[2J"), "{}", stderr(&o));

    // --json stays exact: JSON's escaping carries the text unchanged.
    let o = cli_at(&server, &["--json", "audit", KEY]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answer, audit_json());
    let o = cli_at(&server, &["--json", "migration", "show", KEY]);
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answer["description"], DESCRIPTION);
}

#[test]
fn help_never_prints_secret_values() {
    let secrets = [
        (
            "SWITCHYARD_DATABASE_URL",
            "postgres://app:MARK-db-password@db/app",
        ),
        (
            "SWITCHYARD_TARGET_DATABASE_URL",
            "postgres://app:MARK-target-password@db/app",
        ),
        (
            "SWITCHYARD_TARGET_DATABASES",
            "main=postgres://observer:MARK-observer-password@db/app",
        ),
        ("SWITCHYARD_TOKEN", "sy_MARK-token"),
        ("SWITCHYARD_ADMIN_TOKEN", "sy_MARK-admin-token"),
        ("SWITCHYARD_SERVER", "https://user:MARK-basic-password@host"),
    ];
    let help = |args: &[&str]| {
        let o = Command::new(BIN)
            .args(args)
            .envs(secrets)
            .output()
            .expect("running the CLI");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!text.contains("MARK"), "{args:?} shows a secret:\n{text}");
        text
    };
    let serve = help(&["serve", "--help"]);
    for name in [
        "SWITCHYARD_DATABASE_URL",
        "SWITCHYARD_ADMIN_TOKEN",
        "SWITCHYARD_TARGET_DATABASES",
    ] {
        assert!(serve.contains(name), "serve --help lacks {name}:\n{serve}");
    }
    let gate = help(&["gate", "--help"]);
    for name in ["SWITCHYARD_TARGET_DATABASE_URL", "SWITCHYARD_TOKEN"] {
        assert!(gate.contains(name), "gate --help lacks {name}:\n{gate}");
    }
    for args in [
        &["audit", "--help"][..],
        &["token", "create", "--help"],
        &["--help"],
    ] {
        let text = help(args);
        assert!(text.contains("SWITCHYARD_TOKEN"), "{args:?}:\n{text}");
    }
}

/// Serves over TLS with `cert` (PEM) and its key; returns the server and the CA file path.
fn serve_tls(dir: &std::path::Path, name: &str, cert: &str, key: &str) -> common::Served {
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let db = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
    serve_with(
        &db,
        Some("sy_admin_token_for_tls_tests"),
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    )
}

/// Kills the server if the test fails before terminating it (it would outlive the test).
struct Running(Option<common::Served>);

impl Running {
    fn terminate(mut self) {
        terminate(self.0.take().unwrap());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(served) = &mut self.0 {
            let _ = served.child.kill();
            let _ = served.child.wait();
        }
    }
}

fn list_over_tls(server: &str, ca: &std::path::Path) -> Output {
    Command::new(BIN)
        .args(["--tls-ca", ca.to_str().unwrap(), "migration", "list"])
        .env("SWITCHYARD_SERVER", server)
        .env("SWITCHYARD_TOKEN", "sy_admin_token_for_tls_tests")
        .output()
        .expect("running the CLI")
}

#[test]
fn tls_failures_name_the_cause_and_the_fix() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Issued for localhost only, reached as 127.0.0.1.
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let served = Running(Some(serve_tls(
        &dir,
        "localhost",
        &issued.cert.pem(),
        &issued.signing_key.serialize_pem(),
    )));
    let http = served.0.as_ref().unwrap().http.clone();
    let ca = dir.join("localhost.pem");
    assert!(http.starts_with("https://127.0.0.1:"), "{http}");
    let o = list_over_tls(&http, &ca);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("certificate"), "{err}");
    assert!(
        err.contains("NotValidForName") || err.contains("not valid for name"),
        "{err}"
    );
    assert!(
        err.contains("hint: ") && err.contains("127.0.0.1") && err.contains("subjectAltName"),
        "{err}"
    );
    // The same server by the name its certificate holds: the name was the only problem.
    let by_name = http.replace("127.0.0.1", "localhost");
    let o = list_over_tls(&by_name, &ca);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    served.terminate();

    // `openssl req -x509` makes a CA certificate (CA:TRUE); webpki refuses it as the leaf.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let served = Running(Some(serve_tls(
        &dir,
        "ca-as-leaf",
        &cert.pem(),
        &key.serialize_pem(),
    )));
    let http = served.0.as_ref().unwrap().http.clone();
    let o = list_over_tls(&http, &dir.join("ca-as-leaf.pem"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("CaUsedAsEndEntity") && err.contains("hint: ") && err.contains("CA:FALSE"),
        "{err}"
    );
    served.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}
