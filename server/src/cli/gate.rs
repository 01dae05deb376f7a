//! `gate`: may the old shape be dropped now, for one migration or every pending contract file;
//! and for a folder's retire and restore files, may the old shape be renamed out of use (or
//! back) now.

use super::api::{Client, Failure, path_segment};
use super::sqlfiles::{self, Phase, Tool};
use super::{Output, lint, render};
use serde_json::json;
use std::path::Path;
use switchyard_domain::gate::CheckId;
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

/// Checks every pending contract, retire and restore file of `dir`.
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
        for &(phase, ref key) in &file.tags {
            // An expand only adds: nothing to hold back.
            if phase == Phase::Expand {
                continue;
            }
            let (verb, ph) = (phase.verb(), phase.as_str());
            if !pending {
                human.push_str(&format!("  applied  {}: {verb} {key}\n", file.name));
                results.push(json!({ "file": file.name, "key": key, "phase": ph,
                                     "pending": false }));
                continue;
            }
            let answer = match client
                .get::<json::GateReport>(&format!("/v1/migrations/{}/gate", path_segment(key)?))
                .await
            {
                Ok(report) => Ok(report),
                Err(f) if f.code == 2 => Err(f),
                Err(f) => return Err(f),
            };
            // A retire of a migration that did not choose one (or is retired already) could be
            // applied but never recorded: the server refuses `retired` then.
            let migration = match (&answer, phase) {
                (Ok(_), Phase::Retire) => Some(client.migration(key).await?.body),
                _ => None,
            };
            match answer {
                Ok(report) => {
                    let v = verdict(phase, &report.body, migration.as_ref());
                    all_pass &= v.passed;
                    human.push_str(&format!(
                        "{} {}: {verb} {key}{}\n",
                        if v.passed { "  PASS   " } else { "  FAIL   " },
                        file.name,
                        v.note
                            .as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    ));
                    if v.show_gate {
                        human.push_str(&render::indent(&render::gate(&report.body)));
                        human.push('\n');
                    }
                    results.push(json!({ "file": file.name, "key": key, "phase": ph,
                                         "pending": true, "passed": v.passed, "needs": v.needs,
                                         "note": v.note, "gate": report.json }));
                }
                Err(f) => {
                    all_pass = false;
                    human.push_str(&format!(
                        "  FAIL    {}: {verb} {key}, which the server does not know ({})\n",
                        file.name,
                        render::cell(&f.message)
                    ));
                    results.push(json!({ "file": file.name, "key": key, "phase": ph,
                                         "pending": true, "passed": false, "error": f.message }));
                }
            }
        }
    }
    if results.is_empty() {
        human.push_str(&format!(
            "no file in {} is headed `-- switchyard: contract|retire|restore KEY`\n",
            dir.display()
        ));
    }
    if applied.is_none() {
        human.push_str(
            "(no --target-database-url or --applied-list: every contract, retire and restore file \
             counted as pending)\n",
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
        "gate FAILS: do not apply the contract or retire migrations"
    });
    Ok(Output {
        json: json!({ "passed": all_pass, "files": results, "lint": findings }),
        human,
        code: if all_pass { 0 } else { 1 },
    })
}

/// What a pending file needs of its migration's gate, and whether it has it.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    passed: bool,
    /// `gate`, `gate_but_retire_probation` or `nothing` (for the JSON answer).
    needs: &'static str,
    /// Said after the file's line, when the verdict is not simply the gate's.
    note: Option<String>,
    /// Whether the gate's checklist explains the verdict.
    show_gate: bool,
}

/// A contract needs the whole gate. A retire needs every check but `retire_probation`: that
/// probation is counted from the retire itself, so it cannot have passed before it; and the
/// migration must have chosen to retire (`migration` as the server has it) and not be retired
/// already, or the server would refuse to record it once the rename is applied. A restore
/// needs nothing: giving the old shape its names back only undoes a retire.
fn verdict(
    phase: Phase,
    report: &json::GateReport,
    migration: Option<&json::Migration>,
) -> Verdict {
    let probation = CheckId::RetireProbation.as_str();
    match phase {
        Phase::Expand | Phase::Contract => Verdict {
            passed: report.passed,
            needs: "gate",
            note: None,
            show_gate: true,
        },
        Phase::Retire => {
            let record = migration.map(|m| &m.record);
            let refusal = match record {
                Some(m) if m.retire_probation_seconds.is_none() => Some(
                    "the migration was created without --retire-probation, so `retired` cannot \
                     be recorded: drop the old shape with a contract file instead",
                ),
                Some(m) if m.retired_at_ms.is_some() => Some("the old shape is already retired"),
                _ => None,
            };
            if let Some(refusal) = refusal {
                return Verdict {
                    passed: false,
                    needs: "gate_but_retire_probation",
                    note: Some(refusal.to_owned()),
                    show_gate: false,
                };
            }
            let passed = report.checks.iter().all(|c| c.passed || c.id == probation);
            Verdict {
                passed,
                needs: "gate_but_retire_probation",
                note: Some(format!(
                    "a retire needs every check but {probation}, which starts with the retire"
                )),
                show_gate: true,
            }
        }
        Phase::Restore => Verdict {
            passed: true,
            needs: "nothing",
            note: Some(
                "restoring the retired names is always allowed: the gate is not needed".to_owned(),
            ),
            show_gate: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: CheckId, passed: bool) -> json::GateCheck {
        json::GateCheck {
            id: id.as_str().to_owned(),
            passed,
            evidence: String::new(),
            remedy: String::new(),
        }
    }

    /// A gate where every check passes but `failing`.
    fn report(failing: &[CheckId]) -> json::GateReport {
        let checks: Vec<_> = CheckId::ALL
            .into_iter()
            .map(|id| check(id, !failing.contains(&id)))
            .collect();
        json::GateReport {
            key: "users.username-to-handle".to_owned(),
            passed: checks.iter().all(|c| c.passed),
            checks,
            soak_ends_at_ms: None,
            evaluated_at_ms: 0,
        }
    }

    fn migration(probation: Option<u64>, retired_at_ms: Option<i64>) -> json::Migration {
        let body = serde_json::json!({
            "key": "users.username-to-handle", "description": "", "owner": "",
            "entity_kind": "", "soak_seconds": 60, "expected_services": [],
            "has_backfill": false, "salt": 1, "shadow_sample_bp": 0, "stage": "complete",
            "rollout_bp": 10000, "version": 9, "created_at_ms": 0, "updated_at_ms": 0,
            "expand_applied": true,
            "backfill": { "status": "none", "rows_done": 0, "rows_total_estimate": 0,
                          "started_version": null, "completed_version": null, "paused": false },
            "old_shape_stale": false, "full_since": {},
            "target_database": "main", "old_shape": ["column:users.username"],
            "retire_probation_seconds": probation, "retired_at_ms": retired_at_ms,
        });
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_retire_passes_when_only_the_retire_probation_fails_and_a_contract_does_not() {
        let waiting = report(&[CheckId::RetireProbation]);
        let chose = migration(Some(3 * 86_400), None);
        let retire = verdict(Phase::Retire, &waiting, Some(&chose));
        assert!(retire.passed, "{retire:?}");
        assert!(retire.note.unwrap().contains("retire_probation"));
        let contract = verdict(Phase::Contract, &waiting, None);
        assert!(!contract.passed, "{contract:?}");

        // Any other failing check holds the retire back too.
        let soaking = report(&[CheckId::RetireProbation, CheckId::DatabaseUsage]);
        assert!(!verdict(Phase::Retire, &soaking, Some(&chose)).passed);
        assert!(!verdict(Phase::Contract, &soaking, None).passed);

        // A restore always passes, and says why.
        let restore = verdict(Phase::Restore, &soaking, None);
        assert!(restore.passed && restore.note.unwrap().contains("always allowed"));
    }

    #[test]
    fn a_retire_needs_a_migration_that_chose_it_and_is_not_retired() {
        let waiting = report(&[CheckId::RetireProbation]);
        let direct = verdict(Phase::Retire, &waiting, Some(&migration(None, None)));
        assert!(!direct.passed);
        assert!(direct.note.unwrap().contains("--retire-probation"));
        let again = verdict(Phase::Retire, &waiting, Some(&migration(Some(60), Some(1))));
        assert!(!again.passed);
        assert!(again.note.unwrap().contains("already retired"));
    }
}
