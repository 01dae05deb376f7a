//! The example migrations a user copies from must themselves pass the lint: every `.sql` file
//! under `examples/*/migrations` (the rollback `.down.sql` files aside, as `lint` and the gate
//! read them) has no finding.

use std::path::Path;

#[test]
fn the_examples_sql_files_pass_the_lint() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut linted = Vec::new();
    for example in std::fs::read_dir(&examples).unwrap() {
        let migrations = example.unwrap().path().join("migrations");
        let Ok(files) = std::fs::read_dir(&migrations) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            let name = path.display().to_string();
            if !name.ends_with(".sql") || name.ends_with(".down.sql") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let findings = switchyard_sql::lint(&name, &text);
            assert!(findings.is_empty(), "{name}: {findings:#?}");
            linted.push(name);
        }
    }
    // The table split and the required column are among them (and the lint read something).
    for example in ["split-shipments", "locale-required", "username-to-handle"] {
        assert!(
            linted.iter().any(|f| f.contains(example)),
            "{example} not linted: {linted:?}"
        );
    }
}
