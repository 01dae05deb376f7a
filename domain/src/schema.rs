//! What a migration changes in its database: which database it migrates (a name the server
//! maps to a connection it observes) and the old shape its contract drops — the objects that
//! must see no use before the drop.

use crate::types::InvalidInput;
use std::fmt;
use std::str::FromStr;

/// The most objects one migration may declare: a contract drops a handful; a list in the
/// hundreds is a mistake, and each object costs every observation pass.
pub const MAX_OLD_SHAPE: usize = 64;

/// PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1): a longer name can never
/// match the catalog.
const MAX_IDENTIFIER: usize = 63;

/// The database a migration migrates, by the name the server is configured with
/// (`--target-database NAME=URL`); the URL never leaves the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetName(String);

impl TargetName {
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput(format!(
                "target database name {raw:?} is invalid: allowed 1 to {} characters of a-z, 0-9, \
                 '_' and '-', starting with a letter or digit",
                Self::MAX_LEN
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A database object of the old shape, named as PostgreSQL stores it (unquoted identifiers
/// fold to lower case there; these are compared as given). Written `column:[schema.]table.column`,
/// `table:[schema.]table` or `index:[schema.]index` — the kind is spelled out because
/// `a.b` alone could be a schema's table or a table's column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SchemaObject {
    Column {
        schema: Option<String>,
        table: String,
        column: String,
    },
    // Variants in alphabetical order, so the derived order sorts as the written forms do.
    Index {
        schema: Option<String>,
        index: String,
    },
    Table {
        schema: Option<String>,
        table: String,
    },
}

impl SchemaObject {
    /// The table this object belongs to (an index's table is not known from its name).
    pub fn table(&self) -> Option<&str> {
        match self {
            SchemaObject::Column { table, .. } | SchemaObject::Table { table, .. } => Some(table),
            SchemaObject::Index { .. } => None,
        }
    }

    pub fn schema(&self) -> Option<&str> {
        match self {
            SchemaObject::Column { schema, .. }
            | SchemaObject::Table { schema, .. }
            | SchemaObject::Index { schema, .. } => schema.as_deref(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SchemaObject::Column { .. } => "column",
            SchemaObject::Table { .. } => "table",
            SchemaObject::Index { .. } => "index",
        }
    }

    /// The name a retire gives it (`username` → `username__retired`), within PostgreSQL's 63
    /// bytes; `None` for an index, which no statement names and so is never retired.
    pub fn retired_name(&self) -> Option<String> {
        let name = match self {
            SchemaObject::Column { column, .. } => column,
            SchemaObject::Table { table, .. } => table,
            SchemaObject::Index { .. } => return None,
        };
        let keep = MAX_IDENTIFIER - RETIRED_SUFFIX.len();
        let base: String = name.chars().take(keep).collect();
        Some(format!("{base}{RETIRED_SUFFIX}"))
    }
}

/// What a retire appends to a name: the old shape stays, unusable under its name.
pub const RETIRED_SUFFIX: &str = "__retired";

/// The SQL that retires `objects` (renames each column and table to its retired name), headed
/// for the deploy pipeline. Columns of a table retired with them are left to the table's
/// rename. Unqualified names are as the application writes them (resolved by `search_path`).
pub fn retire_sql(key: &str, objects: &[SchemaObject]) -> String {
    rename_sql(key, "retire", objects, true)
}

/// The SQL that undoes [`retire_sql`], in reverse order.
pub fn restore_sql(key: &str, objects: &[SchemaObject]) -> String {
    rename_sql(key, "restore", objects, false)
}

fn rename_sql(key: &str, phase: &str, objects: &[SchemaObject], retire: bool) -> String {
    let qualified = |schema: &Option<String>, name: &str| match schema {
        Some(s) => format!("{s}.{name}"),
        None => name.to_owned(),
    };
    let retired_tables: Vec<(&Option<String>, &str)> = objects
        .iter()
        .filter_map(|o| match o {
            SchemaObject::Table { schema, table } => Some((schema, table.as_str())),
            _ => None,
        })
        .collect();
    let mut statements = Vec::new();
    for o in objects {
        let Some(retired) = o.retired_name() else {
            continue;
        };
        match o {
            SchemaObject::Column {
                schema,
                table,
                column,
            } => {
                if retired_tables.contains(&(schema, table.as_str())) {
                    continue;
                }
                let (from, to) = if retire {
                    (column.as_str(), retired.as_str())
                } else {
                    (retired.as_str(), column.as_str())
                };
                statements.push(format!(
                    "ALTER TABLE {} RENAME COLUMN {from} TO {to};",
                    qualified(schema, table)
                ));
            }
            SchemaObject::Table { schema, table } => {
                let (from, to) = if retire {
                    (table.as_str(), retired.as_str())
                } else {
                    (retired.as_str(), table.as_str())
                };
                statements.push(format!(
                    "ALTER TABLE {} RENAME TO {to};",
                    qualified(schema, from)
                ));
            }
            SchemaObject::Index { .. } => {}
        }
    }
    if !retire {
        statements.reverse();
    }
    let why = if retire {
        "makes the old shape unusable under its names, keeping its data: a caller still using it \
         fails, and `restore` brings it back at once"
    } else {
        "gives the retired old shape its names back"
    };
    format!(
        "-- switchyard: {phase} {key}\n-- {why}.\n-- A rename takes a brief ACCESS EXCLUSIVE \
         lock: wait at most 2 s for it rather than queue the application behind it.\n\
         SET lock_timeout = '2s';\nBEGIN;\n{}\nCOMMIT;\n",
        statements.join("\n")
    )
}

fn identifier(part: &str, whole: &str) -> Result<String, InvalidInput> {
    let ok = !part.is_empty()
        && part.len() <= MAX_IDENTIFIER
        && part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ok {
        Ok(part.to_owned())
    } else {
        Err(InvalidInput(format!(
            "{whole:?}: {part:?} is not a plain identifier (allowed: a letter or '_', then \
             letters, digits, '_' or '$', up to {MAX_IDENTIFIER} bytes; quoted names are not \
             supported)"
        )))
    }
}

impl FromStr for SchemaObject {
    type Err = InvalidInput;

    fn from_str(raw: &str) -> Result<Self, InvalidInput> {
        let usage = || {
            InvalidInput(format!(
                "old-shape object {raw:?} is invalid: write column:[schema.]table.column, \
                 table:[schema.]table or index:[schema.]index"
            ))
        };
        let (kind, path) = raw.split_once(':').ok_or_else(usage)?;
        let parts = path
            .split('.')
            .map(|p| identifier(p, raw))
            .collect::<Result<Vec<_>, _>>()?;
        let mut parts = parts.into_iter();
        let (a, b, c) = (parts.next(), parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(usage());
        }
        match (kind, a, b, c) {
            ("column", Some(table), Some(column), None) => Ok(SchemaObject::Column {
                schema: None,
                table,
                column,
            }),
            ("column", Some(schema), Some(table), Some(column)) => Ok(SchemaObject::Column {
                schema: Some(schema),
                table,
                column,
            }),
            ("table", Some(table), None, None) => Ok(SchemaObject::Table {
                schema: None,
                table,
            }),
            ("table", Some(schema), Some(table), None) => Ok(SchemaObject::Table {
                schema: Some(schema),
                table,
            }),
            ("index", Some(index), None, None) => Ok(SchemaObject::Index {
                schema: None,
                index,
            }),
            ("index", Some(schema), Some(index), None) => Ok(SchemaObject::Index {
                schema: Some(schema),
                index,
            }),
            _ => Err(usage()),
        }
    }
}

impl fmt::Display for SchemaObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schema = |s: &Option<String>| s.as_ref().map(|s| format!("{s}.")).unwrap_or_default();
        match self {
            SchemaObject::Column {
                schema: s,
                table,
                column,
            } => write!(f, "column:{}{table}.{column}", schema(s)),
            SchemaObject::Table { schema: s, table } => write!(f, "table:{}{table}", schema(s)),
            SchemaObject::Index { schema: s, index } => write!(f, "index:{}{index}", schema(s)),
        }
    }
}

/// A migration's database: where it runs and what its contract drops. Both optional: without
/// them the gate relies on client telemetry alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Database {
    pub target: Option<TargetName>,
    /// Sorted, without duplicates.
    pub old_shape: Vec<SchemaObject>,
}

impl Database {
    /// Validates and normalizes (sorted, deduplicated) a declaration.
    pub fn new(
        target: Option<&str>,
        old_shape: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, InvalidInput> {
        let target = target.map(TargetName::parse).transpose()?;
        let mut objects = old_shape
            .into_iter()
            .map(|o| o.as_ref().parse::<SchemaObject>())
            .collect::<Result<Vec<_>, _>>()?;
        objects.sort();
        objects.dedup();
        if objects.len() > MAX_OLD_SHAPE {
            return Err(InvalidInput(format!(
                "{} old-shape objects declared: allowed up to {MAX_OLD_SHAPE}",
                objects.len()
            )));
        }
        Ok(Self {
            target,
            old_shape: objects,
        })
    }
}

impl Database {
    /// A declaration as a server sent it, kept as far as this build understands it: a newer
    /// server may know object kinds this client does not, and a client has no use for the
    /// declaration beyond showing it, so an unknown entry must not make the whole migration
    /// unreadable.
    pub fn from_wire(target: &str, old_shape: &[String]) -> Self {
        let mut objects: Vec<SchemaObject> =
            old_shape.iter().filter_map(|o| o.parse().ok()).collect();
        objects.sort();
        objects.dedup();
        Self {
            target: TargetName::parse(target).ok(),
            old_shape: objects,
        }
    }

    /// The written forms of the old-shape objects, as the wire carries them.
    pub fn old_shape_strings(&self) -> Vec<String> {
        self.old_shape.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_through_their_written_form() {
        for written in [
            "column:users.username",
            "column:public.users.username",
            "table:legacy_orders",
            "table:billing.legacy_orders",
            "index:users_username_idx",
            "index:public.users_username_idx",
        ] {
            let parsed: SchemaObject = written.parse().unwrap();
            assert_eq!(parsed.to_string(), written);
        }
    }

    #[test]
    fn ambiguous_or_malformed_objects_are_refused_with_the_forms_allowed() {
        for bad in [
            "users.username",
            "column:users",
            "column:a.b.c.d",
            "table:",
            "index:a.b.c",
            "view:v",
            "column:users.user name",
            "column:\"Users\".x",
        ] {
            let e = bad.parse::<SchemaObject>().unwrap_err();
            assert!(
                e.0.contains("column:[schema.]table.column") || e.0.contains("plain identifier"),
                "{bad}: {e:?}"
            );
        }
        let long = format!("table:{}", "x".repeat(64));
        assert!(long.parse::<SchemaObject>().is_err());
    }

    #[test]
    fn retire_and_restore_rename_columns_and_tables_and_undo_each_other() {
        let objects: Vec<SchemaObject> = [
            "column:users.username",
            "table:billing.legacy_orders",
            "column:billing.legacy_orders.total",
            "index:users_username_idx",
        ]
        .iter()
        .map(|o| o.parse().unwrap())
        .collect();
        let retire = retire_sql("users.handle", &objects);
        assert!(
            retire.starts_with("-- switchyard: retire users.handle\n"),
            "{retire}"
        );
        assert!(retire.contains("ALTER TABLE users RENAME COLUMN username TO username__retired;"));
        assert!(
            retire.contains("ALTER TABLE billing.legacy_orders RENAME TO legacy_orders__retired;")
        );
        // The column of a retired table goes with it; an index is never retired.
        assert!(!retire.contains("total"), "{retire}");
        assert!(!retire.contains("idx"), "{retire}");
        let restore = restore_sql("users.handle", &objects);
        assert!(
            restore.starts_with("-- switchyard: restore users.handle\n"),
            "{restore}"
        );
        assert!(restore.contains("ALTER TABLE users RENAME COLUMN username__retired TO username;"));
        assert!(
            restore.contains("ALTER TABLE billing.legacy_orders__retired RENAME TO legacy_orders;")
        );
        let long = SchemaObject::Column {
            schema: None,
            table: "t".into(),
            column: "c".repeat(63),
        };
        assert_eq!(long.retired_name().unwrap().len(), 63);
    }

    #[test]
    fn a_declaration_is_sorted_deduplicated_and_bounded() {
        let d =
            Database::new(Some("main-db"), ["table:b", "column:a.x", "table:b"].iter()).unwrap();
        assert_eq!(d.target.unwrap().as_str(), "main-db");
        assert_eq!(
            d.old_shape
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>(),
            ["column:a.x", "table:b"]
        );
        let many: Vec<String> = (0..=MAX_OLD_SHAPE).map(|i| format!("table:t{i}")).collect();
        assert!(Database::new(None, many).is_err());
        assert!(Database::new(Some("Main DB"), Vec::<String>::new()).is_err());
    }
}
