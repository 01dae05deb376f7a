//! `gate`: may the old shape be dropped now, for one migration or every pending contract file.

use super::api::{Client, Failure, path_segment};
use super::sqlfiles::{self, Phase, Tool};
use super::{Output, lint, render};
use serde_json::json;
use std::path::Path;
use switchyard_proto::json;

/// Exit 0 if the gate passes, 1 if not.
pub(super) async fn one(client: &Client, key: &str) -> Result<Output, Failure> {
    let report = client
        .get::<json::GateReport>(&format!("/v1/migrations/{}/gate", path_segment(key)?))
        .await?;
    Ok(Output {
        human: render::gate(&report.body),
        code: if report.body.passed { 0 } else { 1 },
        json: report.json,
    })
}

/// Checks every pending contract file of `dir`.
pub(super) async fn dir(
    client: &Client,
    dir: &Path,
    target: Option<&str>,
    tool: Tool,
    applied_list: Option<&Path>,
    lint_fails: bool,
) -> Result<Output, Failure> {
    let files = sqlfiles::scan(dir).map_err(Failure::usage)?;
    let applied = match (target, applied_list) {
        (Some(url), _) => Some(
            sqlfiles::read_database(url, tool)
                .await
                .map_err(|e| Failure {
                    code: 3,
                    message: e,
                    body: None,
                })?,
        ),
        (None, Some(list)) => Some(sqlfiles::read_list(list).map_err(Failure::usage)?),
        (None, None) => None,
    };
    let mut results = Vec::new();
    let mut human = String::new();
    let mut all_pass = true;
    let mut pending_texts = Vec::new();
    for file in &files {
        let pending = applied.as_ref().is_none_or(|a| !a.contains(file));
        if pending {
            let path = file.path.clone();
            pending_texts.extend(lint::read(&[path])?);
        }
        for (phase, key) in &file.tags {
            if *phase != Phase::Contract {
                continue;
            }
            if !pending {
                human.push_str(&format!("  applied  {}: contracts {key}\n", file.name));
                results.push(json!({ "file": file.name, "key": key, "pending": false }));
                continue;
            }
            match client
                .get::<json::GateReport>(&format!("/v1/migrations/{}/gate", path_segment(key)?))
                .await
            {
                Ok(report) => {
                    let passed = report.body.passed;
                    all_pass &= passed;
                    human.push_str(&format!(
                        "{} {}: contracts {key}\n{}\n",
                        if passed { "  PASS   " } else { "  FAIL   " },
                        file.name,
                        render::indent(&render::gate(&report.body))
                    ));
                    results.push(json!({ "file": file.name, "key": key, "pending": true,
                                         "passed": passed, "gate": report.json }));
                }
                Err(f) if f.code == 2 => {
                    all_pass = false;
                    human.push_str(&format!(
                        "  FAIL    {}: contracts {key}, which the server does not know ({})\n",
                        file.name,
                        render::cell(&f.message)
                    ));
                    results.push(json!({ "file": file.name, "key": key, "pending": true,
                                         "passed": false, "error": f.message }));
                }
                Err(f) => return Err(f),
            }
        }
    }
    if results.is_empty() {
        human.push_str(&format!(
            "no file in {} is headed `-- switchyard: contract KEY`\n",
            dir.display()
        ));
    }
    if applied.is_none() {
        human.push_str(
            "(no --target-database-url or --applied-list: every contract file counted as pending)\n",
        );
    }
    // Every pending file, expand or contract: a lock hazard is one whichever phase it is in.
    let findings = lint::lint_all(&pending_texts);
    human.push_str(&lint::human_block(&findings));
    if lint_fails && !findings.is_empty() {
        all_pass = false;
        human.push_str("(--lint-fails: the findings fail the gate)\n");
    }
    human.push_str(if all_pass {
        "gate passes"
    } else {
        "gate FAILS: do not apply the contract migrations"
    });
    Ok(Output {
        json: json!({ "passed": all_pass, "files": results, "lint": findings }),
        human,
        code: if all_pass { 0 } else { 1 },
    })
}
