//! The `switchyard` binary as a user runs it: `serve` on a fresh SQLite file, then the CLI
//! against it, checking output and the documented exit codes; SIGTERM shuts down cleanly and a
//! restart on the same file keeps everything.

mod common;

use common::{BIN, Served, serve, terminate};
use std::process::{Command, Output};

fn cli(served: &Served, token: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_SERVER", &served.http)
        .env("SWITCHYARD_TOKEN", token)
        .output()
        .expect("running the CLI")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_release_manager_session_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("switchyard.db");
    let served = serve(&format!("sqlite://{}", db.display()), None);
    let token = served
        .token
        .clone()
        .expect("the first start prints an admin token");
    let key = "users.username-to-handle";

    let o = cli(
        &served,
        &token,
        &[
            "migration",
            "create",
            key,
            "--entity-kind",
            "user_id",
            "--backfill",
            "--description",
            "rename username to handle",
            "--reason",
            "ticket 42",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("created users.username-to-handle"),
        "{}",
        stdout(&o)
    );

    // Refused by rule 2 (exit 1), with the rule's message.
    let o = cli(
        &served,
        &token,
        &["advance", key, "--latest", "--reason", "too early"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("rule 2") && stderr(&o).contains("expand-applied"),
        "{}",
        stderr(&o)
    );

    for args in [
        &["record", key, "expand-applied", "--reason", "DDL applied"][..],
        &["advance", key, "--latest", "--reason", "start dual writes"],
        &[
            "ramp",
            key,
            "--percent",
            "12.5",
            "--latest",
            "--reason",
            "first slice",
        ],
    ] {
        let o = cli(&served, &token, args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }
    let o = cli(&served, &token, &["migration", "show", key, "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["stage"], "dual_write");
    assert_eq!(shown["rollout_bp"], 1250);

    let o = cli(&served, &token, &["migration", "list"]);
    assert!(stdout(&o).contains("dual_write at 12.5%"), "{}", stdout(&o));

    // A ramp to the front it is at changes nothing (no version, no audit record) and says so.
    let audited = |served: &Served| {
        let o = cli(served, &token, &["--json", "audit", key]);
        let audit: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        audit["entries"].as_array().map(Vec::len)
    };
    let before = (shown["version"].clone(), audited(&served));
    let o = cli(
        &served,
        &token,
        &[
            "ramp",
            key,
            "--percent",
            "12.50",
            "--latest",
            "--reason",
            "again",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("already there, nothing changed: users.username-to-handle"),
        "{}",
        stdout(&o)
    );
    let o = cli(&served, &token, &["migration", "show", key, "--json"]);
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((again["version"].clone(), audited(&served)), before);
    assert!(before.1.is_some_and(|n| n >= 3), "{before:?}");

    // A plan, scheduled far ahead so that it only waits: set, shown, paused, with usage
    // errors that say what to write.
    let o = cli(
        &served,
        &token,
        &[
            "plan",
            "set",
            key,
            "--stage",
            "dual_write=25,100",
            "--stage",
            "shadow=100",
            "--hold",
            "30m",
            "--at",
            "2099-01-01T09:00:00Z",
            "--reason",
            "scheduled ramp",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = stdout(&o);
    for line in [
        "plan of users.username-to-handle set: now running",
        "starts           2099-01-01T09:00Z",
        "dual_write       25% (hold 30m) → 100% (hold 30m), then advance",
        "shadow           100% (hold 30m), then stop",
        "next             wait: scheduled to start at 2099-01-01T09:00Z",
    ] {
        assert!(shown.contains(line), "{line:?} in:\n{shown}");
    }
    let o = cli(
        &served,
        &token,
        &["plan", "pause", key, "--reason", "not yet"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("plan of users.username-to-handle paused: now paused"),
        "{}",
        stdout(&o)
    );
    let o = cli(
        &served,
        &token,
        &["plan", "pause", key, "--reason", "again"],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "pausing a paused plan is refused: {}",
        stderr(&o)
    );
    for (args, says) in [
        (
            &["plan", "set", key, "--stage", "live", "--reason", "x"][..],
            "STAGE=PERCENT",
        ),
        (
            &[
                "plan", "set", key, "--stage", "live=50", "--at", "tomorrow", "--reason", "x",
            ],
            "UTC time",
        ),
        (
            &[
                "plan",
                "set",
                key,
                "--stage",
                "live=100",
                "--stage",
                "shadow=100",
                "--reason",
                "x",
            ],
            "stage order",
        ),
    ] {
        let o = cli(&served, &token, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }

    // Usage errors exit 2: a bad percentage, a missing reason, an unknown migration.
    for args in [
        &["ramp", key, "--percent", "101", "--latest", "--reason", "x"][..],
        // A traffic change names the version it expects (or --latest).
        &["ramp", key, "--percent", "20", "--reason", "x"],
        &["ramp", key, "--percent", "5"],
        &["migration", "show", "no.such-migration"],
    ] {
        let o = cli(&served, &token, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    // A stale expected version is refused (exit 1).
    let o = cli(
        &served,
        &token,
        &[
            "ramp",
            key,
            "--percent",
            "20",
            "--expected-version",
            "1",
            "--reason",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("rule 8"), "{}", stderr(&o));

    // Authentication problems exit 3, and so does an unreachable server.
    let o = cli(&served, "sy_not-a-real-token", &["migration", "list"]);
    assert_eq!(o.status.code(), Some(3));
    let reader = cli(
        &served,
        &token,
        &["token", "create", "app", "--role", "reader", "--json"],
    );
    let reader: serde_json::Value = serde_json::from_slice(&reader.stdout).unwrap();
    let o = cli(
        &served,
        reader["token"].as_str().unwrap(),
        &["ramp", key, "--percent", "50", "--latest", "--reason", "x"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    let o = cli(&served, &token, &["audit", key]);
    assert!(
        stdout(&o).contains("first slice") && stdout(&o).contains("ticket 42"),
        "{}",
        stdout(&o)
    );

    terminate(served);
    let o = Command::new(BIN)
        .args(["migration", "list"])
        .env("SWITCHYARD_SERVER", "http://127.0.0.1:9")
        .env("SWITCHYARD_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));

    // A restart on the same file keeps the state and the token, and prints no new token.
    let served = serve(&format!("sqlite://{}", db.display()), None);
    assert_eq!(served.token, None);
    let o = cli(&served, &token, &["migration", "show", key, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["rollout_bp"], 1250);
    terminate(served);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server answers instance lists in pages of 1,000; the CLI follows them to the last, so
/// a large fleet is never silently cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_lists_every_page_of_a_large_fleet() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = "cli-pages-admin-token-0123456789";
    let served = common::serve_with(
        &format!("sqlite://{}", dir.join("switchyard.db").display()),
        Some(token),
        &["--max-instances-per-token", "2000"],
    );
    let key = "fleet.pages";
    let o = cli(
        &served,
        token,
        &["migration", "create", key, "--reason", "paging"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    const FLEET: usize = 1_050;
    let http = reqwest::Client::new();
    let beats = futures::stream::iter(0..FLEET).map(|i| {
        let (http, base) = (http.clone(), served.http.clone());
        async move {
            let response = http
                .post(format!("{base}/v1/clients/heartbeat"))
                .bearer_auth(token)
                .json(
                    &serde_json::json!({"service": "api", "instance_id": format!("i-{i:05}"),
                    "applied_version": 0, "migrations": [key]}),
                )
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        }
    });
    use futures::StreamExt;
    beats.buffer_unordered(16).collect::<Vec<()>>().await;

    for args in [
        &["--json", "instances"][..],
        &["--json", "instances", "--migration", key],
    ] {
        let o = tokio::task::block_in_place(|| cli(&served, token, args));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let instances = listed["instances"].as_array().unwrap();
        assert_eq!(instances.len(), FLEET, "{args:?}");
        assert!(
            listed.get("next_after").is_none(),
            "{args:?}: one whole list"
        );
        assert_eq!(
            instances[FLEET - 1]["instance_id"],
            format!("i-{:05}", FLEET - 1)
        );
    }
    terminate(served);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The exit-code contract holds where a first run goes wrong: an `https://` URL against the
/// plaintext port (the server closes the TLS handshake; once, the CLI died of SIGPIPE, 141)
/// exits 3 every time; a URL without a scheme and a missing token say what to do.
#[test]
fn first_run_mistakes_exit_with_their_code_and_say_what_to_do() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-mistakes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("switchyard.db");
    let served = serve(
        &format!("sqlite://{}", db.display()),
        Some("sy_mistakes-admin-0123456789"),
    );
    let tls = served.http.replacen("http://", "https://", 1);
    for _ in 0..30 {
        let o = Command::new(BIN)
            .args(["migration", "list", "--server", &tls, "--token", "sy_x"])
            .env_remove("SWITCHYARD_SERVER")
            .output()
            .expect("running the CLI");
        assert_eq!(o.status.code(), Some(3), "{:?}: {}", o.status, stderr(&o));
    }

    let bare = served.http.trim_start_matches("http://").to_owned();
    let o = Command::new(BIN)
        .args(["migration", "list", "--server", &bare, "--token", "sy_x"])
        .output()
        .expect("running the CLI");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has no scheme: use http://"),
        "{}",
        stderr(&o)
    );

    // Unset, or set but empty.
    for token in [None, Some("")] {
        let mut command = Command::new(BIN);
        command.args(["migration", "list", "--server", &served.http]);
        match token {
            None => command.env_remove("SWITCHYARD_TOKEN"),
            Some(t) => command.env("SWITCHYARD_TOKEN", t),
        };
        let o = command.output().expect("running the CLI");
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("no token: set SWITCHYARD_TOKEN or pass --token"),
            "{token:?}: {}",
            stderr(&o)
        );
    }
    terminate(served);
    let _ = std::fs::remove_dir_all(&dir);
}
