use super::*;

fn codes(sql: &str) -> Vec<(u32, &'static str)> {
    lint("t.sql", sql)
        .iter()
        .map(|f| (f.line, f.code))
        .collect()
}

#[test]
fn garbage_never_panics_and_yields_findings_with_lines() {
    let samples = [
        "",
        ";;;;",
        "'unterminated",
        "$$ never closed",
        "\"unterminated ident",
        "ALTER TABLE",
        "ALTER TABLE t ALTER COLUMN",
        "CREATE INDEX ON",
        "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((",
        "SELECT ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((1",
        "\u{0}\u{1}\u{7f}ÿ€ DROP",
        "/* unterminated block comment",
        "-- only a comment",
        "BEGIN; BEGIN; COMMIT; COMMIT; END; ROLLBACK",
        "SET lock_timeout",
        "SET LOCAL",
        "-- switchyard: allow\nSELECT 1",
        "-- switchyard: allow because\nSELECT 1",
    ];
    for sample in samples {
        let _ = lint("g.sql", sample);
        let _ = contract_drops(sample);
        let _ = references(sample, &[]);
    }
    // A deterministic pseudo-random soup of SQL fragments and bytes.
    let words = [
        "ALTER",
        "TABLE",
        "t",
        "ADD",
        "COLUMN",
        "DROP",
        "INDEX",
        "CONCURRENTLY",
        "(",
        ")",
        ";",
        "'",
        "$$",
        "--",
        "/*",
        "*/",
        "NOT",
        "NULL",
        "DEFAULT",
        "random()",
        "\n",
        "CHECK",
        "\"",
        "BEGIN",
        "COMMIT",
        "SET",
        "lock_timeout",
        "=",
        "0",
        "CASCADE",
        "TYPE",
        "USING",
        ",",
        "é",
        "\\",
        "E'",
        "::",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..2000 {
        let mut text = String::new();
        for _ in 0..(seed % 24) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.push_str(words[(seed % words.len() as u64) as usize]);
            text.push(' ');
        }
        for f in lint("g.sql", &text) {
            assert!(f.line >= 1, "{text:?}: {f:?}");
        }
        let _ = contract_drops(&text);
    }
}

#[test]
fn unparseable_statements_are_findings_at_their_line_and_the_rest_is_checked() {
    let sql = "SET lock_timeout = '5s';\nALTER TABLE t ADD COLUMN a text;\n\nALTER TABLE t\n  FROBNICATE;\nCREATE INDEX i ON t (a);\n";
    assert_eq!(codes(sql), vec![(4, "SY000"), (6, "SY001")]);
    assert_eq!(codes("SELECT 'unterminated"), vec![(1, "SY000")]);
}

#[test]
fn allow_needs_a_reason_and_covers_only_the_next_statement() {
    let sql = "SET lock_timeout = '5s';\n-- switchyard: allow SY001 because tiny\nCREATE INDEX a ON t (x);\nCREATE INDEX b ON t (x);\n";
    assert_eq!(codes(sql), vec![(4, "SY001")]);
    let sql = "SET lock_timeout = '5s';\n-- switchyard: allow SY001\nCREATE INDEX a ON t (x);\n";
    assert_eq!(codes(sql), vec![(2, "SY015"), (3, "SY001")]);
    // A blank line breaks "directly before".
    let sql = "SET lock_timeout = '5s';\n-- switchyard: allow SY001 because tiny\n\nCREATE INDEX a ON t (x);\n";
    assert_eq!(codes(sql), vec![(4, "SY001")]);
    // A trailing comment belongs to the statement it follows, not to the next one.
    let sql = "SET lock_timeout = '5s'; -- switchyard: allow SY001 because tiny\nCREATE INDEX a ON t (x);\n";
    assert_eq!(codes(sql), vec![(2, "SY001")]);
}

#[test]
fn set_local_lock_timeout_ends_with_its_transaction() {
    let sql = "BEGIN;\nSET LOCAL lock_timeout = '5s';\nALTER TABLE t ADD COLUMN a text;\nCOMMIT;\nALTER TABLE t ADD COLUMN b text;\n";
    assert_eq!(codes(sql), vec![(5, "SY011")]);
}

#[test]
fn findings_carry_the_rule_text() {
    let f = &lint("m.sql", "CREATE INDEX i ON users (a);")[0];
    assert_eq!(f.code, "SY001");
    assert_eq!(f.file, "m.sql");
    assert!(f.message.contains("users"), "{}", f.message);
    assert!(f.message.contains(rules::INDEX_NOT_CONCURRENT.why));
    assert_eq!(f.safe, rules::INDEX_NOT_CONCURRENT.safe);
}

#[test]
fn the_readme_lists_every_rule() {
    let readme = include_str!("../../README.md");
    for rule in RULES {
        assert!(
            readme.contains(&format!(
                "| {} | {} | {} | {} |",
                rule.code, rule.title, rule.why, rule.safe
            )),
            "README.md's lint table lacks or misstates {}",
            rule.code
        );
    }
}

fn table(name: &str) -> SchemaObject {
    SchemaObject::Table {
        table: Name {
            schema: None,
            name: name.into(),
        },
    }
}

fn column(table: &str, column: &str) -> SchemaObject {
    SchemaObject::Column {
        table: Name {
            schema: None,
            name: table.into(),
        },
        column: column.into(),
    }
}

#[test]
fn contract_drops_lists_tables_indexes_and_columns() {
    let sql = "-- switchyard: contract users.username-to-handle\nSET lock_timeout = '5s';\n\
               ALTER TABLE app.users DROP COLUMN username, DROP COLUMN \"Legacy\";\n\
               DROP TABLE old_users, app.older;\nDROP INDEX CONCURRENTLY app.users_username;\n\
               ALTER TABLE users DROP COLUMN username;\n";
    let drops = contract_drops(sql).unwrap();
    let shown: Vec<String> = drops.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "column app.users.username",
            "column app.users.Legacy",
            "table old_users",
            "table app.older",
            "index app.users_username",
            "column users.username",
        ]
    );
    let err = contract_drops("DROP TABLE a;\nALTER TABLE x FROBNICATE;").unwrap_err();
    assert_eq!(err.line, 2);
}

fn refs(statement: &str, objects: &[SchemaObject]) -> Vec<(String, String)> {
    references(statement, objects)
        .into_iter()
        .map(|r| {
            let c = match r.certainty {
                Certainty::Definite => "definite".to_owned(),
                Certainty::Possible { why } => format!("possible: {why}"),
            };
            (r.object.to_string(), c)
        })
        .collect()
}

#[test]
fn references_resolve_aliases_and_single_table_columns() {
    let objects = [column("users", "username"), table("old_users")];
    assert_eq!(
        refs("SELECT id, username FROM users WHERE id = $1", &objects),
        [("column users.username".into(), "definite".into())]
    );
    assert_eq!(
        refs(
            "SELECT u.username FROM users u JOIN orders o ON o.user_id = u.id WHERE o.id = $1",
            &objects
        ),
        [("column users.username".into(), "definite".into())]
    );
    // The alias is someone else's: orders.username is not users.username.
    assert!(
        refs(
            "SELECT o.username FROM users u JOIN orders o ON o.user_id = u.id",
            &objects
        )
        .is_empty()
    );
    assert!(refs("SELECT id FROM users WHERE id = $1", &objects).is_empty());
    assert!(refs("SELECT username FROM accounts WHERE id = $1", &objects).is_empty());
    let r = refs(
        "SELECT username FROM users u JOIN orders o ON o.user_id = u.id",
        &objects,
    );
    assert!(
        r[0].1.starts_with("possible: unqualified username"),
        "{r:?}"
    );
    let r = refs(
        "SELECT u.* FROM users u JOIN orders o ON o.user_id = u.id",
        &objects,
    );
    assert!(
        r[0].1.starts_with("possible: * reads every column"),
        "{r:?}"
    );
    assert!(
        refs(
            "SELECT o.* FROM users u JOIN orders o ON o.user_id = u.id",
            &objects
        )
        .is_empty()
    );
    let r = refs("SELECT * FROM users WHERE id = $1", &objects);
    assert!(
        r[0].1.starts_with("possible: * reads every column"),
        "{r:?}"
    );
    assert_eq!(
        refs("UPDATE users SET username = $1 WHERE id = $2", &objects),
        [("column users.username".into(), "definite".into())]
    );
    assert_eq!(
        refs("INSERT INTO users (id, username) VALUES ($1, $2)", &objects),
        [("column users.username".into(), "definite".into())]
    );
    assert_eq!(
        refs(
            "INSERT INTO users AS u (id, username) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            &objects
        ),
        [("column users.username".into(), "definite".into())]
    );
    let r = refs("INSERT INTO users VALUES ($1, $2)", &objects);
    assert!(r[0].1.contains("without a column list"), "{r:?}");
    assert_eq!(
        refs("DELETE FROM old_users WHERE id = $1", &objects),
        [("table old_users".into(), "definite".into())]
    );
    // A CTE named like the table is not the table.
    assert!(
        refs(
            "WITH users AS (SELECT 1 AS username) SELECT username FROM users",
            &objects
        )
        .is_empty()
    );
    let r = refs(
        "SELECT username FROM users WHERE x ~~~ $1 LATERAL",
        &objects,
    );
    assert!(r[0].1.contains("cannot be parsed"), "{r:?}");
    // Schema-qualified objects.
    let qualified = [SchemaObject::Column {
        table: Name {
            schema: Some("app".into()),
            name: "users".into(),
        },
        column: "username".into(),
    }];
    assert_eq!(
        refs("SELECT username FROM app.users", &qualified)[0].1,
        "definite"
    );
    assert!(refs("SELECT username FROM other.users", &qualified).is_empty());
    assert!(
        refs("SELECT username FROM users", &qualified)[0]
            .1
            .contains("search_path")
    );
}

#[test]
fn the_retire_and_restore_sql_switchyard_writes_lint_clean() {
    use switchyard_domain::schema::{restore_sql, retire_sql};
    let one: Vec<switchyard_domain::SchemaObject> = ["column:users.username", "index:users_u"]
        .iter()
        .map(|o| o.parse().unwrap())
        .collect();
    for sql in [
        retire_sql("users.handle", &one),
        restore_sql("users.handle", &one),
    ] {
        assert_eq!(codes(&sql), [], "{sql}");
    }
    // The corpus's safe twins are this output, kept in step with it.
    let key = "users.username-to-handle";
    assert_eq!(
        include_str!("../tests/corpus/sy008_retire_rename_safe.sql"),
        retire_sql(key, &one)
    );
    assert_eq!(
        include_str!("../tests/corpus/sy008_restore_rename_safe.sql"),
        restore_sql(key, &one)
    );
    // A long name is cut to fit 63 bytes: its rename is still the gated one.
    let long = format!("column:users.{}", "c".repeat(63));
    let long = [long.parse().unwrap()];
    assert_eq!(codes(&retire_sql("users.handle", &long)), []);
    assert_eq!(codes(&restore_sql("users.handle", &long)), []);
    // A table, quoted or schema-qualified.
    let table = ["table:billing.legacy_orders".parse().unwrap()];
    assert_eq!(codes(&retire_sql("billing.legacy", &table)), []);
    assert_eq!(codes(&restore_sql("billing.legacy", &table)), []);
    // Several objects: their renames share one transaction (half a retire would be an
    // inconsistent shape) without counting as several lock-taking statements.
    let several: Vec<switchyard_domain::SchemaObject> = [
        "column:users.username",
        "column:orders.amount",
        "table:billing.legacy_orders",
    ]
    .iter()
    .map(|o| o.parse().unwrap())
    .collect();
    assert_eq!(codes(&retire_sql("split", &several)), []);
    assert_eq!(codes(&restore_sql("split", &several)), []);
    // Any other lock-taking statement beside them still counts.
    let mixed = retire_sql("split", &several).replace(
        "COMMIT;",
        "ALTER TABLE users ADD COLUMN note text;\nALTER TABLE orders ADD COLUMN note text;\nCOMMIT;",
    );
    assert!(codes(&mixed).iter().any(|(_, c)| *c == "SY013"), "{mixed}");
}

#[test]
fn only_the_retired_rename_is_allowed_and_only_under_its_header() {
    let retire = "-- switchyard: retire users.handle\nSET lock_timeout = '2s';\n";
    // Any other rename in a retire file is a rename like any other.
    for other in [
        "ALTER TABLE users RENAME COLUMN username TO handle;",
        "ALTER TABLE users RENAME COLUMN username TO other__retired;",
        "ALTER TABLE users RENAME COLUMN a__retired TO b__retired;",
        "ALTER TABLE users RENAME COLUMN username TO user__retired;",
        "ALTER TABLE users RENAME COLUMN username__retired TO username__retired__retired;",
        "ALTER TABLE users RENAME TO accounts;",
    ] {
        assert_eq!(
            codes(&format!("{retire}{other}")),
            [(3, "SY008")],
            "{other}"
        );
    }
    // The retired rename outside a retire or restore file (here an expand) is reported.
    let expand = "-- switchyard: expand users.handle\nSET lock_timeout = '2s';\n\
                  ALTER TABLE users RENAME COLUMN username TO username__retired;";
    assert_eq!(codes(expand), [(3, "SY008")]);
    assert!(is_retire_or_restore(retire));
    assert!(is_retire_or_restore(
        "-- switchyard: restore users.handle\nBEGIN;"
    ));
    assert!(!is_retire_or_restore(
        "-- switchyard: contract users.handle\nBEGIN;"
    ));
    assert!(!is_retire_or_restore(
        "BEGIN;\n-- switchyard: retire users.handle"
    ));
}
