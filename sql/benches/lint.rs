//! Files linted per second over a generated folder of 1,000 migration files (read from disk and
//! linted, as `switchyard lint DIR` does).
//!
//! `cargo bench -p switchyard-sql --bench lint`

use divan::counter::ItemsCount;
use std::path::PathBuf;

const FILES: usize = 1_000;

fn main() {
    divan::main();
}

/// A folder of files shaped like real expand/contract migrations: a header, lock_timeout,
/// a few ALTER TABLEs, an index, a constraint added NOT VALID and validated, a function body,
/// and, in every third file, hazards.
fn folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-lint-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..FILES {
        let phase = if i % 2 == 0 { "expand" } else { "contract" };
        let mut sql = format!(
            "-- Migration {i}: generated for the benchmark.\n-- switchyard: {phase} t{i}.change\n\
             SET lock_timeout = '5s';\n\
             ALTER TABLE t{i} ADD COLUMN handle text, ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();\n\
             ALTER TABLE t{i} ADD CONSTRAINT t{i}_fk FOREIGN KEY (owner_id) REFERENCES owners (id) NOT VALID;\n\
             ALTER TABLE t{i} VALIDATE CONSTRAINT t{i}_fk;\n\
             CREATE INDEX CONCURRENTLY t{i}_handle ON t{i} (lower(handle)) WHERE handle IS NOT NULL;\n\
             CREATE FUNCTION t{i}_sync() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  \
             NEW.handle := coalesce(NEW.handle, NEW.username);\n  RETURN NEW;\nEND;\n$$;\n\
             UPDATE t{i} SET handle = username WHERE id >= 1 AND id < 1000 AND handle IS NULL;\n"
        );
        if i % 3 == 0 {
            sql.push_str(&format!(
                "CREATE INDEX t{i}_plain ON t{i} (created_at);\n\
                 ALTER TABLE t{i} ALTER COLUMN amount TYPE numeric(12, 2);\n\
                 -- switchyard: allow SY009 because the benchmark says so\n\
                 ALTER TABLE t{i} DROP COLUMN legacy;\n"
            ));
        }
        std::fs::write(dir.join(format!("{i:05}_m.sql")), sql).unwrap();
    }
    dir
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn lint_1000_files(bencher: divan::Bencher) {
    let dir = folder();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    bencher.counter(ItemsCount::new(FILES)).bench(|| {
        let mut findings = 0;
        for path in &paths {
            let text = std::fs::read_to_string(path).unwrap();
            findings += switchyard_sql::lint(&path.to_string_lossy(), &text).len();
        }
        assert!(findings > 0);
        findings
    });
    let _ = std::fs::remove_dir_all(&dir);
}
