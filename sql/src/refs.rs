//! The objects a contract file drops, and which of them a statement references: the input of a
//! usage observer that watches normalized statements (pg_stat_statements' `$1` form) before a
//! contract is applied.

use crate::lint::{norm, parts};
use crate::split;
use serde::Serialize;
use sqlparser::ast::{
    AlterTableOperation, AssignmentTarget, ObjectType, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, Statement, TableFactor, TableObject, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;

/// A possibly schema-qualified name, folded as PostgreSQL folds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Name {
    pub schema: Option<String>,
    pub name: String,
}

impl Name {
    fn from_parts(mut parts: Vec<String>) -> Self {
        let name = parts.pop().unwrap_or_default();
        Self {
            schema: parts.pop(),
            name,
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// Something a contract file drops.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SchemaObject {
    Table { table: Name },
    Column { table: Name, column: String },
    Index { index: Name },
}

impl fmt::Display for SchemaObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaObject::Table { table } => write!(f, "table {table}"),
            SchemaObject::Column { table, column } => write!(f, "column {table}.{column}"),
            SchemaObject::Index { index } => write!(f, "index {index}"),
        }
    }
}

/// The parser's view of an object (a schema-qualified `Name` it can match against the
/// statement's own names) and the domain's (what a migration declares and the API carries) are
/// the same objects: these convert between them.
impl From<&SchemaObject> for switchyard_domain::SchemaObject {
    fn from(o: &SchemaObject) -> Self {
        match o {
            SchemaObject::Table { table } => switchyard_domain::SchemaObject::Table {
                schema: table.schema.clone(),
                table: table.name.clone(),
            },
            SchemaObject::Column { table, column } => switchyard_domain::SchemaObject::Column {
                schema: table.schema.clone(),
                table: table.name.clone(),
                column: column.clone(),
            },
            SchemaObject::Index { index } => switchyard_domain::SchemaObject::Index {
                schema: index.schema.clone(),
                index: index.name.clone(),
            },
        }
    }
}

impl From<&switchyard_domain::SchemaObject> for SchemaObject {
    fn from(o: &switchyard_domain::SchemaObject) -> Self {
        use switchyard_domain::SchemaObject as D;
        let name = |schema: &Option<String>, name: &str| Name {
            schema: schema.clone(),
            name: name.to_owned(),
        };
        match o {
            D::Table { schema, table } => SchemaObject::Table {
                table: name(schema, table),
            },
            D::Column {
                schema,
                table,
                column,
            } => SchemaObject::Column {
                table: name(schema, table),
                column: column.clone(),
            },
            D::Index { schema, index } => SchemaObject::Index {
                index: name(schema, index),
            },
        }
    }
}

/// A statement the parser cannot read, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: u32,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The tables, indexes and columns that `sql` drops (DROP TABLE, DROP INDEX, ALTER TABLE ...
/// DROP COLUMN), in file order, each once. A statement the parser cannot read is an error: a
/// drop missed here would go unobserved.
pub fn contract_drops(sql: &str) -> Result<Vec<SchemaObject>, ParseError> {
    let pieces = split::split(sql).map_err(|(line, message)| ParseError { line, message })?;
    let mut out = Vec::new();
    let mut push = |object: SchemaObject| {
        if !out.contains(&object) {
            out.push(object);
        }
    };
    for piece in pieces {
        let statement = piece.parsed.map_err(|message| ParseError {
            line: piece.line,
            message,
        })?;
        match statement {
            Statement::Drop {
                object_type, names, ..
            } => {
                for name in names {
                    let name = Name::from_parts(parts(&name));
                    match object_type {
                        ObjectType::Table => push(SchemaObject::Table { table: name }),
                        ObjectType::Index => push(SchemaObject::Index { index: name }),
                        _ => {}
                    }
                }
            }
            Statement::AlterTable(alter) => {
                let table = Name::from_parts(parts(&alter.name));
                for op in alter.operations {
                    if let AlterTableOperation::DropColumn { column_names, .. } = op {
                        for column in column_names {
                            push(SchemaObject::Column {
                                table: table.clone(),
                                column: norm(&column),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// One of the objects a statement uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    pub object: SchemaObject,
    pub certainty: Certainty,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "certainty", rename_all = "snake_case")]
pub enum Certainty {
    Definite,
    /// It may: `why` says what the statement does that could touch the object.
    Possible {
        why: String,
    },
}

/// Which of `objects` the normalized `statement` references. Indexes are never named by the
/// statements an application runs (the planner picks them), so only a statement that cannot be
/// parsed and mentions an index's name reports it, as possible.
pub fn references(statement: &str, objects: &[SchemaObject]) -> Vec<Reference> {
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, statement);
    let statements = match parsed {
        Ok(statements) => statements,
        Err(e) => return mentions(statement, objects, &e.to_string()),
    };
    let mut uses = Uses::default();
    for statement in &statements {
        let _ = statement.visit(&mut uses);
    }
    objects
        .iter()
        .filter_map(|object| {
            uses.certainty(object).map(|certainty| Reference {
                object: object.clone(),
                certainty,
            })
        })
        .collect()
}

/// For a statement the parser cannot read: any object whose table (or index) is named in it.
fn mentions(statement: &str, objects: &[SchemaObject], error: &str) -> Vec<Reference> {
    let lower = statement.to_lowercase();
    let words: HashSet<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| !w.is_empty())
        .collect();
    objects
        .iter()
        .filter_map(|object| {
            let name = match object {
                SchemaObject::Table { table } | SchemaObject::Column { table, .. } => table,
                SchemaObject::Index { index } => index,
            };
            words
                .contains(name.name.to_lowercase().as_str())
                .then(|| Reference {
                    object: object.clone(),
                    certainty: Certainty::Possible {
                        why: format!(
                            "the statement cannot be parsed ({error}) and mentions {}",
                            name.name
                        ),
                    },
                })
        })
        .collect()
}

/// What a statement touches, gathered over all its query blocks at once. Flat on purpose:
/// a column name that could belong to more than one table is reported as possible rather than
/// resolved through nested scopes, which errs on the side of seeing a use.
#[derive(Default)]
struct Uses {
    /// Every table-like thing in FROM/JOIN/UPDATE/INSERT, named or not.
    factors: usize,
    /// Named tables with their alias.
    tables: Vec<(Vec<String>, Option<String>)>,
    /// Names that are CTEs, not tables.
    ctes: HashSet<String>,
    /// Column references as written (qualifier parts then column).
    columns: Vec<Vec<String>>,
    /// `*` (None) or `q.*` (Some(q)), including RETURNING *.
    wildcards: Vec<Option<Vec<String>>>,
    /// INSERT INTO table without a column list: writes every column by position.
    positional_inserts: Vec<Vec<String>>,
}

enum Match {
    No,
    Yes,
    Maybe(String),
}

fn match_name(name: &Name, written: &[String]) -> Match {
    let Some((last, qualifier)) = written.split_last() else {
        return Match::No;
    };
    if *last != name.name {
        return Match::No;
    }
    match (qualifier.last(), &name.schema) {
        (Some(schema), Some(ours)) if schema != ours => Match::No,
        (Some(_), _) | (None, None) => Match::Yes,
        (None, Some(ours)) if ours == "public" => Match::Yes,
        (None, Some(ours)) => Match::Maybe(format!(
            "{} is unqualified and may resolve to {ours}.{} through search_path",
            name.name, name.name
        )),
    }
}

impl Uses {
    fn certainty(&self, object: &SchemaObject) -> Option<Certainty> {
        match object {
            SchemaObject::Index { .. } => None,
            SchemaObject::Table { table } => {
                let mut best = None;
                for (written, _) in self.real_tables() {
                    best = stronger(best, match_name(table, written));
                }
                best
            }
            SchemaObject::Column { table, column } => self.column(table, column),
        }
    }

    fn real_tables(&self) -> impl Iterator<Item = &(Vec<String>, Option<String>)> {
        self.tables
            .iter()
            .filter(|(written, _)| !(written.len() == 1 && self.ctes.contains(&written[0])))
    }

    fn column(&self, table: &Name, column: &str) -> Option<Certainty> {
        // The statement's tables that are `table`, with how certain and by which names
        // (alias or table name) its columns can be qualified.
        let mut ours: Vec<(Match, Vec<String>)> = Vec::new();
        for (written, alias) in self.real_tables() {
            let m = match_name(table, written);
            if matches!(m, Match::No) {
                continue;
            }
            let handles = match alias {
                Some(alias) => vec![alias.clone()],
                None => vec![written.last().cloned().unwrap_or_default()],
            };
            ours.push((m, handles));
        }
        if ours.is_empty() {
            return None;
        }
        let table_match = |m: &Match| match m {
            Match::Maybe(why) => Match::Maybe(why.clone()),
            _ => Match::Yes,
        };
        let mut best = None;
        for written in &self.columns {
            let Some((name, qualifier)) = written.split_last() else {
                continue;
            };
            if name != column {
                continue;
            }
            if qualifier.is_empty() {
                if self.factors <= 1 {
                    best = stronger(best, table_match(&ours[0].0));
                } else {
                    best = stronger(
                        best,
                        Match::Maybe(format!(
                            "unqualified {column} in a statement over several tables"
                        )),
                    );
                }
                continue;
            }
            let q = qualifier.last().cloned().unwrap_or_default();
            for (m, handles) in &ours {
                if handles.contains(&q) {
                    best = stronger(best, table_match(m));
                }
            }
        }
        for wildcard in &self.wildcards {
            let hit = match wildcard {
                None => true,
                Some(q) => q
                    .last()
                    .is_some_and(|q| ours.iter().any(|(_, h)| h.contains(q))),
            };
            if hit {
                best = stronger(
                    best,
                    Match::Maybe(format!(
                        "* reads every column of {table}, {column} among them"
                    )),
                );
            }
        }
        for written in &self.positional_inserts {
            if !matches!(match_name(table, written), Match::No) {
                best = stronger(
                    best,
                    Match::Maybe(format!(
                        "INSERT into {table} without a column list writes every column by position"
                    )),
                );
            }
        }
        best
    }
}

fn stronger(best: Option<Certainty>, m: Match) -> Option<Certainty> {
    match (best, m) {
        (Some(Certainty::Definite), _) | (None, Match::Yes) | (Some(_), Match::Yes) => {
            Some(Certainty::Definite)
        }
        (Some(possible), Match::No | Match::Maybe(_)) => Some(possible),
        (None, Match::Maybe(why)) => Some(Certainty::Possible { why }),
        (None, Match::No) => None,
    }
}

impl Visitor for Uses {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(norm(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.projection(&select.projection);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        self.factors += 1;
        if let TableFactor::Table { name, alias, .. } = factor {
            self.tables
                .push((parts(name), alias.as_ref().map(|a| norm(&a.name))));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &sqlparser::ast::Expr) -> ControlFlow<()> {
        match expr {
            sqlparser::ast::Expr::Identifier(i) => self.columns.push(vec![norm(i)]),
            sqlparser::ast::Expr::CompoundIdentifier(p) => {
                self.columns.push(p.iter().map(norm).collect())
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        match statement {
            Statement::Insert(insert) => {
                if let TableObject::TableName(name) = &insert.table {
                    let written = parts(name);
                    self.factors += 1;
                    let alias = insert.table_alias.as_ref().map(|a| norm(&a.alias));
                    if insert.columns.is_empty() && insert.assignments.is_empty() {
                        self.positional_inserts.push(written.clone());
                    }
                    // The target's columns, qualified by whichever name resolves to it.
                    let handle = alias
                        .clone()
                        .unwrap_or_else(|| written.last().cloned().unwrap_or_default());
                    for column in &insert.columns {
                        self.columns.push(vec![
                            handle.clone(),
                            parts(column).pop().unwrap_or_default(),
                        ]);
                    }
                    self.tables.push((written, alias));
                }
                if let Some(returning) = &insert.returning {
                    self.projection(returning);
                }
            }
            Statement::Update(update) => {
                for assignment in &update.assignments {
                    let targets = match &assignment.target {
                        AssignmentTarget::ColumnName(name) => vec![name],
                        AssignmentTarget::Tuple(names) => names.iter().collect(),
                    };
                    for name in targets {
                        self.columns.push(parts(name));
                    }
                }
                if let Some(returning) = &update.returning {
                    self.projection(returning);
                }
            }
            Statement::Delete(delete) => {
                if let Some(returning) = &delete.returning {
                    self.projection(returning);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

impl Uses {
    fn projection(&mut self, items: &[SelectItem]) {
        for item in items {
            match item {
                SelectItem::Wildcard(_) => self.wildcards.push(None),
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(q),
                    _,
                ) => self.wildcards.push(Some(parts(q))),
                _ => {}
            }
        }
    }
}
