//! `switchyard lint` as a pipeline runs it: findings for people, JSON and SARIF, and the exit
//! codes (0 clean, 1 findings, 2 unreadable path or bad arguments). No server is started: lint
//! reads files only.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn lint(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("lint")
        .args(args)
        // Unreachable on purpose: lint must not need a server.
        .env("SWITCHYARD_SERVER", "http://127.0.0.1:9")
        .output()
        .expect("running the CLI")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn folder(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-lint-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const HAZARD: (&str, &str) = (
    "0002_index.sql",
    "-- switchyard: expand users.handle\nSET lock_timeout = '5s';\n\nCREATE INDEX users_handle ON users (handle);\n",
);
const CLEAN: (&str, &str) = (
    "0001_add.sql",
    "SET lock_timeout = '5s';\nALTER TABLE users ADD COLUMN handle text;\n",
);
/// Skipped in a folder, as `gate --migrations-dir` skips it.
const DOWN: (&str, &str) = ("0002_index.down.sql", "DROP INDEX users_handle;\n");

#[test]
fn lint_prints_findings_for_people_with_the_documented_exit_codes() {
    let dir = folder("human", &[CLEAN, HAZARD, DOWN]);
    let o = lint(&[path(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = stdout(&o);
    let file = dir.join(HAZARD.0);
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "{}:4: SY001 CREATE INDEX on users without CONCURRENTLY.",
            file.display()
        )),
        "{out}"
    );
    assert_eq!(
        out.lines().nth(1).unwrap(),
        "    safe: CREATE INDEX CONCURRENTLY, outside any transaction block."
    );
    assert!(
        out.trim_end().ends_with("1 finding(s) in 2 file(s)"),
        "{out}"
    );
    assert!(!out.contains("down.sql"), "{out}");

    let clean = dir.join(CLEAN.0);
    let o = lint(&[path(&clean)]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).contains("0 finding(s) in 1 file(s)"));

    // The repository's own examples are clean.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for sub in ["username-to-handle", "amount-to-numeric", "pipeline"] {
        let o = lint(&[path(&examples.join(sub).join("migrations"))]);
        assert_eq!(o.status.code(), Some(0), "{sub}: {}", stdout(&o));
    }
}

#[test]
fn lint_refuses_what_it_cannot_read_with_exit_2() {
    let o = lint(&["/nonexistent/switchyard/migrations"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot read /nonexistent/switchyard/migrations"),
        "{err}"
    );
    // No path at all is a usage error.
    assert_eq!(lint(&[]).status.code(), Some(2));
    // --json and --sarif do not go together.
    assert_eq!(lint(&["--json", "--sarif", "."]).status.code(), Some(2));
}

#[test]
fn lint_json_is_an_array_of_findings() {
    let dir = folder("json", &[HAZARD]);
    let o = lint(&["--json", path(&dir.join(HAZARD.0))]);
    assert_eq!(o.status.code(), Some(1));
    let findings: Value = serde_json::from_slice(&o.stdout).unwrap();
    let findings = findings.as_array().unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0]["code"], "SY001");
    assert_eq!(findings[0]["line"], 4);
    assert_eq!(findings[0]["file"], path(&dir.join(HAZARD.0)));
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap()
            .contains("SHARE lock")
    );
    assert!(
        findings[0]["safe"]
            .as_str()
            .unwrap()
            .contains("CONCURRENTLY")
    );

    let o = lint(&["--json", path(&folder("json-clean", &[CLEAN]))]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn lint_sarif_is_one_run_with_rules_and_located_results() {
    let dir = folder("sarif", &[HAZARD]);
    let o = lint(&["--sarif", path(&dir)]);
    assert_eq!(o.status.code(), Some(1));
    let sarif: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let runs = sarif["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let rules = runs[0]["tool"]["driver"]["rules"].as_array().unwrap();
    let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.first(), Some(&"SY000"));
    assert!(ids.contains(&"SY015"), "{ids:?}");
    assert!(
        rules[1]["help"]["text"]
            .as_str()
            .unwrap()
            .contains("CONCURRENTLY")
    );
    let results = runs[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let result = &results[0];
    assert_eq!(result["ruleId"], "SY001");
    assert_eq!(
        rules[result["ruleIndex"].as_u64().unwrap() as usize]["id"],
        "SY001"
    );
    let location = &result["locations"][0]["physicalLocation"];
    assert_eq!(location["region"]["startLine"], 4);
    assert!(
        location["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("/0002_index.sql")
    );
}
