//! Every file of `tests/corpus/` lints to exactly the findings its comments expect:
//! `-- expect: SY001 SY011` on a statement's first line, or `-- expect-at: LINE CODES` anywhere.
//! Files ending `_safe.sql` are the safe twins and expect nothing.

use std::collections::BTreeSet;
use std::path::Path;

fn expected(text: &str) -> BTreeSet<(u32, String)> {
    let mut out = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if let Some((_, codes)) = line.split_once("-- expect: ") {
            for code in codes.split([',', ' ']).filter(|c| !c.is_empty()) {
                out.insert((i as u32 + 1, code.to_owned()));
            }
        }
        if let Some((_, rest)) = line.split_once("-- expect-at: ") {
            let mut words = rest.split_whitespace();
            let at: u32 = words.next().unwrap().parse().unwrap();
            for code in words {
                out.insert((at, code.trim_matches(',').to_owned()));
            }
        }
    }
    out
}

#[test]
fn corpus_files_lint_to_their_expected_findings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    names.sort();
    assert!(names.len() >= 30, "the corpus is there");
    let mut failures = Vec::new();
    for path in &names {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let want = expected(&text);
        if name.ends_with("_safe.sql") {
            assert!(want.is_empty(), "{name}: a safe twin expects nothing");
        } else {
            assert!(!want.is_empty(), "{name}: a hazard file expects something");
        }
        let findings = switchyard_sql::lint(&name, &text);
        let got: BTreeSet<(u32, String)> = findings
            .iter()
            .map(|f| (f.line, f.code.to_owned()))
            .collect();
        if got != want {
            failures.push(format!(
                "{name}: expected {want:?}, got {got:?}\n{}",
                findings
                    .iter()
                    .map(|f| format!("  {}:{} {} {}", f.file, f.line, f.code, f.message))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every rule has a hazard file named after its code, and a safe twin.
#[test]
fn every_rule_has_a_hazard_file_and_a_safe_twin() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for rule in switchyard_sql::RULES {
        let prefix = rule.code.to_lowercase();
        let hazard = names
            .iter()
            .find(|n| n.starts_with(&prefix) && !n.ends_with("_safe.sql"))
            .unwrap_or_else(|| panic!("no corpus file for {}", rule.code));
        let twin = hazard.replace(".sql", "_safe.sql");
        assert!(names.contains(&twin), "{hazard} has no safe twin {twin}");
    }
}
