//! The web dashboard. Without a browser: the page and assets are served with their content
//! types and security headers, `GET /v1/whoami` names each token's role and permissions, and
//! `GET /v1/vocabulary` answers. In a real browser: starts `switchyard serve`, seeds
//! migrations, tokens, client heartbeats and telemetry through the CLI and the HTTP API, then
//! runs `tests/dashboard/dashboard.test.mjs` (headless Chromium driven by playwright-core),
//! which signs in, ramps, gets refused, watches CLI changes arrive live, checks the reader's
//! read-only view, stops and restarts the server, checks that latency labels are the server's,
//! and saves screenshots under `target/dashboard-screenshots/`.
//!
//! The browser test needs `node`, Chromium at `/usr/bin/chromium` (Debian: `apt-get install
//! chromium`) and `npm ci` in `server/tests/dashboard/`; `bash scripts/test` provides them.
//! Without them it fails and says what is missing.

mod common;

use common::{BIN, Served, serve_with, terminate};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};

const CHROMIUM: &str = "/usr/bin/chromium";

fn cli(served: &Served, token: &str, args: &[&str]) -> Output {
    let o = Command::new(BIN)
        .args(args)
        .env("SWITCHYARD_SERVER", &served.http)
        .env("SWITCHYARD_TOKEN", token)
        .output()
        .expect("running the CLI");
    assert!(
        o.status.success(),
        "switchyard {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn cli_json(served: &Served, token: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_slice(&cli(served, token, &args).stdout).expect("CLI --json output")
}

/// What the browser test needs, or why it cannot run.
fn prerequisites(dir: &Path) -> Result<String, String> {
    let chromium = std::env::var("SWITCHYARD_TEST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    if !Path::new(&chromium).exists() {
        return Err(format!(
            "no Chromium at {chromium}: install it with \
             `DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver` \
             (or point SWITCHYARD_TEST_CHROMIUM at one)"
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err("no `node` on PATH: install Node.js 18 or later".into()),
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            dir.display()
        ));
    }
    Ok(chromium)
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest.join("tests/dashboard");
    // A browser test that cannot run fails: counted as passed, it would hide that the
    // dashboard was never tried. `bash scripts/test` installs what it needs.
    let chromium = prerequisites(&dir).unwrap_or_else(|why| {
        panic!("the dashboard browser test cannot run: {why} (`bash scripts/test` sets it up)")
    });

    let tmp = std::env::temp_dir().join(format!("switchyard-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let db = tmp.join("switchyard.db");
    let database_url = format!("sqlite://{}", db.display());
    let guard = Guard(Some(serve_with(
        &database_url,
        None,
        &["--min-soak", "0s", "--require-approval", "contract"],
    )));
    let served = guard.0.as_ref().unwrap();
    let admin = served
        .token
        .clone()
        .expect("the first start prints a token");
    let base = format!("http://{}", served.http.trim_start_matches("http://"));

    let token = |name: &str, role: &str| -> String {
        cli_json(served, &admin, &["token", "create", name, "--role", role])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let operator = token("alice", "operator");
    let reader = token("viewer", "reader");
    let second = token("bob", "operator");

    runtime().block_on(seed(served, &base, &operator, &reader));

    let screenshots = manifest
        .parent()
        .unwrap()
        .join("target/dashboard-screenshots");
    // Only this run's screenshots (and no stale failure.png) are left to look at.
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new("node")
        .arg("dashboard.test.mjs")
        .current_dir(&dir)
        .env("DASHBOARD_URL", &base)
        .env("OPERATOR_TOKEN", &operator)
        .env("READER_TOKEN", &reader)
        .env("SECOND_OPERATOR_TOKEN", &second)
        .env("SWITCHYARD_BIN", BIN)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", &screenshots)
        .env("USER_DATA_DIR", tmp.join("chromium-profile"))
        // The test stops this server to check the "cannot reach the server" banner, then starts
        // another on the same address and database.
        .env("SERVER_PID", served.child.id().to_string())
        .env("DATABASE_URL", &database_url)
        .output()
        .expect("running node");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "browser test took {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        screenshots.display()
    );
    assert!(out.status.success(), "the browser test failed: {out:?}");

    // Stopped by the browser test with SIGTERM, which must have been a clean shutdown.
    let exit = guard.take().child.wait().unwrap();
    assert!(exit.success(), "serve exited with {exit:?} after SIGTERM");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Kills the server if the test fails before terminating it, so no process outlives the test.
struct Guard(Option<Served>);

impl Guard {
    fn take(mut self) -> Served {
        self.0.take().unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(served) = self.0.as_mut() {
            let _ = served.child.kill();
            let _ = served.child.wait();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What the page relies on from the server, checked without a browser (so a failure here is
/// told apart from a browser that cannot start): the page and its assets with their content
/// types and security headers, `whoami` per token, and the vocabulary the page draws with.
#[test]
fn the_dashboard_is_served_with_its_headers_and_whoami() {
    let tmp =
        std::env::temp_dir().join(format!("switchyard-dashboard-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let guard = Guard(Some(serve_with(
        &format!("sqlite://{}", tmp.join("switchyard.db").display()),
        None,
        &[],
    )));
    let served = guard.0.as_ref().unwrap();
    let admin = served
        .token
        .clone()
        .expect("the first start prints a token");
    let token = |name: &str, role: &str| -> String {
        cli_json(served, &admin, &["token", "create", name, "--role", role])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (operator, reader) = (token("alice", "operator"), token("viewer", "reader"));
    let base = format!("http://{}", served.http.trim_start_matches("http://"));
    runtime().block_on(check_server_side(&base, &operator, &reader));
    terminate(guard.take());
    let _ = std::fs::remove_dir_all(&tmp);
}

async fn check_server_side(base: &str, operator: &str, reader: &str) {
    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let etag = page.headers()["etag"].to_str().unwrap().to_owned();
    let again = http
        .get(format!("{base}/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    for (path, kind) in [
        ("/assets/js/main.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap();
        assert!(ct.starts_with(kind), "{path}: {ct}");
    }
    let missing = http
        .get(format!("{base}/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    for (token, name, role, permissions) in [
        (
            operator,
            "alice",
            "operator",
            json!(["read", "record_schema", "operate", "run_backfill"]),
        ),
        (reader, "viewer", "reader", json!(["read"])),
    ] {
        let me = get_json(&http, &format!("{base}/v1/whoami"), token).await;
        assert_eq!(me["name"], name);
        assert_eq!(me["role"], role);
        assert_eq!(me["permissions"], permissions);
    }
    // The page keeps no copy of the server's names: it draws with these.
    let vocabulary = get_json(&http, &format!("{base}/v1/vocabulary"), reader).await;
    for part in ["stages", "events", "latency_buckets"] {
        assert!(
            vocabulary[part].as_array().is_some_and(|a| !a.is_empty()),
            "{vocabulary}"
        );
    }
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/whoami"]["get"].is_object());
    assert!(doc["components"]["schemas"]["WhoAmI"].is_object());
    let refused = http
        .get(format!("{base}/v1/whoami"))
        .bearer_auth("sy_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

/// Four migrations at different points, with clients and traffic, so every part of the page
/// has something to show (and the screenshots are worth looking at).
async fn seed(served: &Served, base: &str, operator: &str, reader: &str) {
    let http = reqwest::Client::new();
    let run = |args: &[&str]| {
        cli(served, operator, args);
    };
    // Moves a migration along with `--latest`: "advance", or a percentage to ramp to.
    let drive = |key: &str, steps: &[&str]| {
        for step in steps {
            let args = match *step {
                "advance" => vec!["advance", key, "--latest", "--reason", "seed"],
                percent => vec![
                    "ramp",
                    key,
                    "--percent",
                    percent,
                    "--latest",
                    "--reason",
                    "seed",
                ],
            };
            run(&args);
        }
    };
    let users = "users.username-to-handle";
    let orders = "orders.split-address";
    let sessions = "sessions.token-hash";
    let billing = "billing.invoice-currency";
    // Every live instance reports that it applied the current snapshot version, except those
    // left out (to leave one behind).
    let heartbeats = |skip: &'static [&'static str]| {
        let http = http.clone();
        let base = base.to_owned();
        let reader = reader.to_owned();
        async move {
            let snapshot: Value = http
                .get(format!("{base}/v1/snapshot"))
                .bearer_auth(&reader)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for (service, instance, keys) in [
                ("api", "api-7f9c", &[users, sessions][..]),
                ("api", "api-2b1d", &[users, sessions]),
                ("worker", "worker-1", &[users, sessions]),
                ("checkout", "checkout-1", &[orders]),
                ("checkout", "checkout-2", &[orders]),
            ] {
                if skip.contains(&instance) {
                    continue;
                }
                let r = http
                    .post(format!("{base}/v1/clients/heartbeat"))
                    .bearer_auth(&reader)
                    .json(&json!({ "service": service, "instance_id": instance,
                        "applied_version": snapshot["version"], "migrations": keys }))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "heartbeat: {}", r.status());
                // And its telemetry reports, empty as a running client's are when idle: the
                // gate waits for every live instance to report since complete reached 100%.
                for _ in 0..2 {
                    let r = http
                        .post(format!("{base}/v1/clients/telemetry"))
                        .bearer_auth(&reader)
                        .json(&json!({ "service": service, "instance_id": instance,
                            "entries": [] }))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "telemetry: {}", r.status());
                }
            }
        }
    };

    for (key, extra) in [
        (
            users,
            &[
                "--entity-kind",
                "user_id",
                "--backfill",
                "--owner",
                "identity-team",
                "--description",
                "Rename users.username to users.handle",
                "--expected-service",
                "api",
                "--expected-service",
                "worker",
            ][..],
        ),
        (
            orders,
            &[
                "--entity-kind",
                "order_id",
                "--owner",
                "checkout",
                "--description",
                "Split orders.address into structured columns",
            ],
        ),
        (
            sessions,
            &[
                "--entity-kind",
                "session_id",
                "--owner",
                "identity-team",
                "--soak",
                "1h",
                "--description",
                "Store only a hash of session tokens",
            ],
        ),
        (
            billing,
            &[
                "--entity-kind",
                "account_id",
                "--owner",
                "billing",
                "--description",
                "Move invoices.currency to a <currency> lookup table & back-fill",
            ],
        ),
    ] {
        let mut args = vec!["migration", "create", key, "--reason", "JIRA-90"];
        args.extend(extra);
        run(&args);
    }
    for key in [users, orders, sessions] {
        run(&[
            "record",
            key,
            "expand-applied",
            "--reason",
            "expand DDL applied",
        ]);
    }
    drive(users, &["advance", "100"]);
    drive(
        orders,
        &["advance", "100", "advance", "100", "advance", "25"],
    );
    drive(
        sessions,
        &[
            "advance", "100", "advance", "100", "advance", "100", "advance", "100",
        ],
    );
    // Rules 3 and 5 wait for every live client to apply dual_write / rampdown at 100%.
    heartbeats(&[]).await;
    run(&[
        "record",
        users,
        "backfill-started",
        "--reason",
        "runner deployed",
    ]);
    let r = http
        .put(format!("{base}/v1/migrations/{users}/backfill/checkpoint"))
        .bearer_auth(operator)
        .json(&json!({ "cursor": "user_id>420000", "rows_done": 420_000,
            "rows_total_estimate": 1_200_000, "runner": "backfill-1",
            "throttle": { "reason": "replica 10.0.0.7:5432 replay lag 3.2 s > 2 s",
                "held_ms": 12_000, "throttled_ms": 95_000 } }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "checkpoint: {}", r.status());
    run(&[
        "backfill",
        "set",
        users,
        "--max-replica-lag",
        "2s",
        "--batch-size",
        "500",
        "--reason",
        "reports replica lagging",
    ]);
    drive(sessions, &["advance", "100"]);
    heartbeats(&[]).await;
    // A change one checkout instance has not applied yet.
    drive(orders, &["25.5"]);
    heartbeats(&["checkout-2"]).await;

    let now_minute = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        now - now % 60_000
    };
    let side = |ops: u64, errors: u64, fast: bool| {
        let mut latency = [0u64; 16];
        latency[if fast { 3 } else { 5 }] = ops * 9 / 10;
        latency[if fast { 5 } else { 7 }] = ops - ops * 9 / 10;
        json!({ "reads": ops * 3 / 4, "writes": ops / 4, "errors": errors, "latency": latency })
    };
    let mut entries = Vec::new();
    for i in 0..40u64 {
        let minute = now_minute - (39 - i as i64) * 60_000;
        let total = 1200 + (i * 37) % 300;
        let new_users = total * i.min(30) / 30;
        entries.push(json!({ "key": users, "minute_ms": minute,
            "old": side(total, 0, true), "new": side(new_users, u64::from(i == 33), false),
            "comparisons": 0, "mismatches": 0, "evaluations_without_entity": 0,
            "fallback_evaluations": 0 }));
        let new_orders = total / 4;
        entries.push(json!({ "key": orders, "minute_ms": minute,
            "old": side(total, 0, false), "new": side(new_orders, 0, true),
            "comparisons": new_orders, "mismatches": u64::from(i % 13 == 5) * 3,
            "evaluations_without_entity": 0, "fallback_evaluations": 0 }));
    }
    let r = http
        .post(format!("{base}/v1/clients/telemetry"))
        .bearer_auth(reader)
        .json(&json!({ "service": "api", "instance_id": "api-7f9c", "entries": entries }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "telemetry: {}", r.status());
    // A second service that read the old shape for a few minutes half an hour ago, then
    // stopped: the per-service view names it with when it last did.
    let entries: Vec<_> = (8..11i64)
        .map(|i| {
            json!({ "key": users, "minute_ms": now_minute - (39 - i) * 60_000,
                "old": side(40, 0, true), "new": side(0, 0, true), "comparisons": 0,
                "mismatches": 0, "evaluations_without_entity": 0, "fallback_evaluations": 0 })
        })
        .collect();
    let r = http
        .post(format!("{base}/v1/clients/telemetry"))
        .bearer_auth(reader)
        .json(
            &json!({ "service": "nightly-report", "instance_id": "report-1", "entries": entries }),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "telemetry: {}", r.status());
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
