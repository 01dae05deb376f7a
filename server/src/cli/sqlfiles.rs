//! Reads a folder of SQL migration files for `switchyard gate --migrations-dir` and
//! `switchyard record --sql-file`: which files name a Switchyard migration in their header
//! (`-- switchyard: contract users.username-to-handle`, or `expand`, `retire`, `restore`), and
//! which of them the target database has already applied, according to the migration tool's
//! own table.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a file's header says it does to a Switchyard migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Expand,
    /// Drops the old shape: the whole contract gate.
    Contract,
    /// Renames the old shape out of use (`switchyard retire-sql`): the gate but its retire
    /// probation, which only starts with the retire.
    Retire,
    /// Gives the retired old shape its names back (`switchyard restore-sql`): always allowed.
    Restore,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Expand,
        Phase::Contract,
        Phase::Retire,
        Phase::Restore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Expand => "expand",
            Phase::Contract => "contract",
            Phase::Retire => "retire",
            Phase::Restore => "restore",
        }
    }

    /// What a file of this phase does to its migration, for the gate's lines ("contracts KEY").
    pub fn verb(self) -> &'static str {
        match self {
            Phase::Expand => "expands",
            Phase::Contract => "contracts",
            Phase::Retire => "retires",
            Phase::Restore => "restores",
        }
    }
}

/// One SQL file and the migrations its header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFile {
    pub path: PathBuf,
    pub name: String,
    pub tags: Vec<(Phase, String)>,
}

/// Which tool's bookkeeping says what is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    /// sqlx-cli: files `<version>_<name>.sql` (or `.up.sql`), table `_sqlx_migrations`.
    Sqlx,
    /// golang-migrate: files `<version>_<name>.up.sql`, table `schema_migrations`.
    GolangMigrate,
    /// Flyway: files `V<version>__<name>.sql`, table `flyway_schema_history`.
    Flyway,
}

/// The header tags of a file: leading comment lines of the form
/// `-- switchyard: expand|contract|retire|restore KEY`. Reading stops at the first statement.
pub fn parse_header(text: &str) -> Result<Vec<(Phase, String)>, String> {
    let mut tags = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("--") else {
            break;
        };
        let comment = comment.trim();
        let Some(rest) = comment
            .strip_prefix("switchyard:")
            .or_else(|| comment.strip_prefix("Switchyard:"))
        else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let word = words.next();
        // `switchyard lint`'s allow comments may stand in the header too.
        if word == Some("allow") {
            continue;
        }
        let Some(phase) = Phase::ALL.into_iter().find(|p| Some(p.as_str()) == word) else {
            return Err(format!(
                "unknown switchyard header {:?}: allowed `-- switchyard: PHASE KEY` with PHASE \
                 one of {}",
                word.unwrap_or(""),
                Phase::ALL.map(Phase::as_str).join(", ")
            ));
        };
        let key = words
            .next()
            .ok_or_else(|| format!("`-- switchyard: {}` names no migration", phase.as_str()))?;
        switchyard_domain::MigrationKey::parse(key).map_err(|e| e.0)?;
        tags.push((phase, key.to_owned()));
    }
    Ok(tags)
}

/// Every `.sql` file of `dir`, sorted by name, with its header tags. golang-migrate's
/// `.down.sql` files are skipped (they undo; they are not what a pipeline applies).
pub fn scan(dir: &Path) -> Result<Vec<SqlFile>, String> {
    scan_paths(dir)?.iter().map(|path| read(path)).collect()
}

/// The paths `scan` reads, sorted by file name.
pub fn scan_paths(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the migrations folder {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".sql") || name.ends_with(".down.sql") {
            continue;
        }
        files.push(path);
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

pub fn read(path: &Path) -> Result<SqlFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tags = parse_header(&text).map_err(|e| format!("{name}: {e}"))?;
    Ok(SqlFile {
        path: path.to_owned(),
        name,
        tags,
    })
}

/// The version a tool reads from a file name (e.g. `20261121_add_handle.sql` → 20261121 for
/// sqlx; `V2_1__drop.sql` → `2.1` for Flyway), as text.
pub fn version_of(tool: Tool, name: &str) -> Option<String> {
    match tool {
        Tool::Sqlx | Tool::GolangMigrate => {
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            let follows = name[digits.len()..].starts_with('_');
            (!digits.is_empty() && follows)
                .then(|| digits.trim_start_matches('0').to_owned())
                .map(|d| if d.is_empty() { "0".to_owned() } else { d })
        }
        Tool::Flyway => {
            let rest = name.strip_prefix('V')?;
            let (version, _) = rest.split_once("__")?;
            Some(version.replace('_', "."))
        }
    }
}

/// Which files are applied.
pub enum Applied {
    /// File names listed in a file, one per line.
    Listed(HashSet<String>),
    /// Versions the tool's table records as applied (successfully).
    Versions {
        tool: Tool,
        versions: HashSet<String>,
    },
    /// golang-migrate keeps only the current version (and whether it is dirty).
    UpTo { version: i64, dirty: bool },
}

impl Applied {
    pub fn contains(&self, file: &SqlFile) -> bool {
        match self {
            Applied::Listed(names) => names.contains(&file.name),
            Applied::Versions { tool, versions } => {
                version_of(*tool, &file.name).is_some_and(|v| versions.contains(&v))
            }
            Applied::UpTo { version, dirty } => version_of(Tool::GolangMigrate, &file.name)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *version || (v == *version && !dirty)),
        }
    }
}

pub fn read_list(path: &Path) -> Result<Applied, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the applied list {}: {e}", path.display()))?;
    Ok(Applied::Listed(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                Path::new(l)
                    .file_name()
                    .map_or(l.to_owned(), |n| n.to_string_lossy().into_owned())
            })
            .collect(),
    ))
}

/// Reads the tool's table in the target database (SQLite or PostgreSQL URL).
pub async fn read_database(url: &str, tool: Tool) -> Result<Applied, String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect to the target database: {e}"))?;
    let missing = |table: &str, e: sqlx::Error| {
        format!(
            "cannot read {table} in the target database ({e}); is this the right database and \
             tool? (--tool sqlx|golang-migrate|flyway, or --applied-list FILE)"
        )
    };
    let applied = match tool {
        Tool::Sqlx => {
            let rows: Vec<(i64,)> = sqlx::query_as(
                "SELECT CAST(version AS BIGINT) FROM _sqlx_migrations WHERE success",
            )
            .fetch_all(&mut conn)
            .await
            .map_err(|e| missing("_sqlx_migrations", e))?;
            Applied::Versions {
                tool,
                versions: rows.into_iter().map(|(v,)| v.to_string()).collect(),
            }
        }
        Tool::Flyway => {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT CAST(version AS TEXT) FROM flyway_schema_history \
                 WHERE success AND version IS NOT NULL",
            )
            .fetch_all(&mut conn)
            .await
            .map_err(|e| missing("flyway_schema_history", e))?;
            Applied::Versions {
                tool,
                versions: rows.into_iter().map(|(v,)| v).collect(),
            }
        }
        Tool::GolangMigrate => {
            let row: Option<(i64, i64)> = sqlx::query_as(
                "SELECT CAST(version AS BIGINT), CAST(CASE WHEN dirty THEN 1 ELSE 0 END AS BIGINT) \
                 FROM schema_migrations",
            )
            .fetch_optional(&mut conn)
            .await
            .map_err(|e| missing("schema_migrations", e))?;
            match row {
                Some((version, dirty)) => Applied::UpTo {
                    version,
                    dirty: dirty != 0,
                },
                None => Applied::UpTo {
                    version: -1,
                    dirty: false,
                },
            }
        }
    };
    let _ = conn.close().await;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_phases_and_keys() {
        let text = "-- Add the handle column.\n-- switchyard: expand users.username-to-handle\n\n\
                    -- switchyard: contract orders.amount\nALTER TABLE users ADD handle text;\n\
                    -- switchyard: contract not.in-header\n";
        assert_eq!(
            parse_header(text).unwrap(),
            vec![
                (Phase::Expand, "users.username-to-handle".to_owned()),
                (Phase::Contract, "orders.amount".to_owned()),
            ]
        );
        assert!(
            parse_header("-- switchyard: drop x")
                .unwrap_err()
                .contains("allowed")
        );
        assert_eq!(
            parse_header(
                "-- switchyard: retire users.username-to-handle\n\
                 -- switchyard: restore orders.amount\nBEGIN;"
            )
            .unwrap(),
            vec![
                (Phase::Retire, "users.username-to-handle".to_owned()),
                (Phase::Restore, "orders.amount".to_owned()),
            ]
        );
        assert!(parse_header("-- switchyard: contract Bad_Key").is_err());
        assert!(parse_header("-- switchyard: contract").is_err());
        assert_eq!(
            parse_header("-- switchyard: allow SY001 because tiny\nCREATE INDEX i ON t (a);"),
            Ok(vec![])
        );
    }

    #[test]
    fn versions_follow_each_tool() {
        assert_eq!(
            version_of(Tool::Sqlx, "20261121093000_add_handle.sql").as_deref(),
            Some("20261121093000")
        );
        assert_eq!(
            version_of(Tool::Sqlx, "0003_drop.up.sql").as_deref(),
            Some("3")
        );
        assert_eq!(version_of(Tool::Sqlx, "notes.sql"), None);
        assert_eq!(
            version_of(Tool::Flyway, "V2_1__drop_username.sql").as_deref(),
            Some("2.1")
        );
        assert_eq!(version_of(Tool::Flyway, "R__views.sql"), None);
        let up_to = Applied::UpTo {
            version: 3,
            dirty: true,
        };
        let file = |name: &str| SqlFile {
            path: name.into(),
            name: name.into(),
            tags: vec![],
        };
        assert!(up_to.contains(&file("2_a.up.sql")));
        assert!(
            !up_to.contains(&file("3_b.up.sql")),
            "dirty: not cleanly applied"
        );
        assert!(!up_to.contains(&file("4_c.up.sql")));
    }
}
