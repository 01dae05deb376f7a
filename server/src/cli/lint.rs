//! `lint`: the lock and compatibility hazards of migration SQL files (the rules live in
//! `switchyard-sql`), printed for people, as JSON, or as SARIF for code-scanning tools. It reads
//! files only: no server, no database.

use super::sqlfiles;
use super::{Failure, Output, render};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use switchyard_sql::{Finding, RULES};

/// The `.sql` files named, folders expanded as `gate --migrations-dir` reads them (sorted,
/// `.down.sql` skipped), each with its text.
pub(super) fn read(paths: &[PathBuf]) -> Result<Vec<(String, String)>, Failure> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            for file in sqlfiles::scan_paths(path).map_err(Failure::usage)? {
                files.push(read_one(&file)?);
            }
        } else {
            files.push(read_one(path)?);
        }
    }
    Ok(files)
}

fn read_one(path: &Path) -> Result<(String, String), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok((path.display().to_string(), text))
}

pub(super) fn lint_all(files: &[(String, String)]) -> Vec<Finding> {
    files
        .iter()
        .flat_map(|(name, text)| switchyard_sql::lint(name, text))
        .collect()
}

/// Exit 0 when nothing is found, 1 when something is.
pub(super) fn run(paths: &[PathBuf], sarif_output: bool) -> Result<Output, Failure> {
    let files = read(paths)?;
    let findings = lint_all(&files);
    let mut human = human(&findings);
    human.push_str(&format!(
        "{} finding(s) in {} file(s)",
        findings.len(),
        files.len()
    ));
    Ok(Output {
        json: if sarif_output {
            sarif(&findings)
        } else {
            json!(findings)
        },
        human,
        code: if findings.is_empty() { 0 } else { 1 },
    })
}

/// One finding per line, `file:line: CODE message`, the safe form indented under it.
pub(super) fn human(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{}:{}: {} {}\n    safe: {}\n",
            f.file, f.line, f.code, f.message, f.safe
        ));
    }
    out
}

/// One SARIF 2.1.0 run: the rule table as the tool's rules, each finding a result.
pub(super) fn sarif(findings: &[Finding]) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.code,
                "name": r.title,
                "shortDescription": { "text": r.title },
                "fullDescription": { "text": r.why },
                "help": { "text": format!("{} Safe form: {}", r.why, r.safe) },
                "defaultConfiguration": { "level": "warning" },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.code,
                "ruleIndex": RULES.iter().position(|r| r.code == f.code).unwrap_or(0),
                "level": "warning",
                "message": { "text": format!("{} Safe form: {}", f.message, f.safe) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.file) },
                        "region": { "startLine": f.line },
                    }
                }],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "switchyard lint",
                "informationUri": "https://example.invalid/switchyard",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

/// A relative URI as code-scanning tools resolve it against the repository root: forward
/// slashes, no leading `./`, and the few characters a URI cannot hold escaped.
fn uri(file: &str) -> String {
    let path = file.replace('\\', "/");
    let path = path.trim_start_matches("./");
    let mut out = String::new();
    for c in path.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '%' => out.push_str("%25"),
            '#' => out.push_str("%23"),
            '?' => out.push_str("%3F"),
            c => out.push(c),
        }
    }
    out
}

/// For a human reading the gate's output.
pub(super) fn human_block(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "lint: no hazard in the pending files\n".to_owned();
    }
    format!(
        "lint: {} finding(s) in the pending files\n{}",
        findings.len(),
        render::indent(human(findings).trim_end())
    )
}
