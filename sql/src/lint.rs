//! The lint: walks a file's statements in order, keeping what earlier statements established
//! (an open transaction block, a lock_timeout, validated NOT NULL checks), and reports hazards.

use crate::rules::{self, Rule};
use crate::split::{self, Piece};
use serde::Serialize;
use sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, ColumnDef, ColumnOption,
    ContextModifier, DataType, DropBehavior, Expr, GeneratedAs, GeneratedExpressionMode, Ident,
    ObjectName, ObjectNamePart, ObjectType, RenameTableNameKind, Reset, Set, Statement,
    TableConstraint, Value, visit_expressions,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use switchyard_domain::schema::RETIRED_SUFFIX;

/// One hazard at one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub file: String,
    pub line: u32,
    /// What is dangerous here and why.
    pub message: String,
    /// The safe way to do it.
    pub safe: &'static str,
}

/// Functions whose result differs per row: as a column default they make ADD COLUMN rewrite.
const VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "gen_random_bytes",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "nextval",
    "setval",
    "txid_current",
    "pg_current_xact_id",
];

/// Stable or immutable functions commonly used as defaults: evaluated once by ADD COLUMN
/// (PostgreSQL 11+ stores the value in the catalog). Any other function is unknown, and
/// PostgreSQL makes a function VOLATILE unless it is declared otherwise.
const NOT_VOLATILE: &[&str] = &[
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "transaction_timestamp",
    "statement_timestamp",
    "current_user",
    "session_user",
    "current_role",
    "current_schema",
    "current_setting",
    "lower",
    "upper",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "make_interval",
    "jsonb_build_object",
    "json_build_object",
    "jsonb_build_array",
    "json_build_array",
    "to_jsonb",
];

/// Lints one file. `file` only labels the findings.
pub fn lint(file: &str, sql: &str) -> Vec<Finding> {
    let mut linter = Linter {
        file,
        contract: is_contract(sql),
        retire_or_restore: is_retire_or_restore(sql),
        ..Linter::default()
    };
    match split::split(sql) {
        Ok(pieces) => {
            for piece in &pieces {
                linter.piece(piece);
            }
        }
        Err((line, message)) => linter.out.push(Finding {
            code: rules::UNPARSEABLE.code,
            file: file.to_owned(),
            line,
            message: format!(
                "the file cannot be split into statements ({message}). {}",
                rules::UNPARSEABLE.why
            ),
            safe: rules::UNPARSEABLE.safe,
        }),
    }
    let mut out = linter.out;
    out.sort_by(|a, b| (a.line, a.code).cmp(&(b.line, b.code)));
    out
}

/// Whether the header (the comment lines before the first statement) says
/// `-- switchyard: contract KEY`, the convention `switchyard gate --migrations-dir` reads.
pub fn is_contract(sql: &str) -> bool {
    header_says(sql, &["contract"])
}

/// Whether the header says `-- switchyard: retire KEY` or `-- switchyard: restore KEY`: the
/// file renames the old shape out of use (or back) through the gate, as `switchyard retire-sql`
/// and `restore-sql` write it.
pub fn is_retire_or_restore(sql: &str) -> bool {
    header_says(sql, &["retire", "restore"])
}

fn header_says(sql: &str, phases: &[&str]) -> bool {
    for line in sql.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("--") else {
            return false;
        };
        let mut words = comment.split_whitespace();
        if words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("switchyard:"))
            && words.next().is_some_and(|w| phases.contains(&w))
            && words.next().is_some()
        {
            return true;
        }
    }
    false
}

#[derive(Default)]
struct Linter<'a> {
    file: &'a str,
    contract: bool,
    /// A retire or restore file: its renames to or from a retired name are the gated ones.
    retire_or_restore: bool,
    in_transaction: bool,
    locks_in_transaction: u32,
    lock_timeout: bool,
    local_lock_timeout: bool,
    /// CHECK (col IS NOT NULL) constraints added earlier in the file.
    checks: Vec<NotNullCheck>,
    out: Vec<Finding>,
}

struct NotNullCheck {
    name: Option<String>,
    table: String,
    column: String,
    validated: bool,
}

/// Findings of one statement before allow comments are applied.
struct Hits(Vec<(&'static Rule, String)>);

impl Hits {
    fn add(&mut self, rule: &'static Rule, what: impl Into<String>) {
        self.0.push((rule, what.into()));
    }
}

impl Linter<'_> {
    fn piece(&mut self, piece: &Piece) {
        let allowed = self.allows(piece);
        let mut hits = Hits(Vec::new());
        match &piece.parsed {
            Ok(statement) => self.statement(statement, piece.drop_concurrently, &mut hits),
            Err(e) => hits.add(
                &rules::UNPARSEABLE,
                format!("`{}` cannot be parsed ({e})", short(&piece.text)),
            ),
        }
        let mut used = BTreeSet::new();
        for (rule, what) in hits.0 {
            if allowed.contains_key(rule.code) {
                used.insert(rule.code);
                continue;
            }
            self.out.push(Finding {
                code: rule.code,
                file: self.file.to_owned(),
                line: piece.line,
                message: format!("{what}. {}", rule.why),
                safe: rule.safe,
            });
        }
        for (code, line) in allowed {
            if !used.contains(code) {
                self.out.push(Finding {
                    code: rules::UNUSED_ALLOW.code,
                    file: self.file.to_owned(),
                    line,
                    message: format!(
                        "the statement below raises no {code}. {}",
                        rules::UNUSED_ALLOW.why
                    ),
                    safe: rules::UNUSED_ALLOW.safe,
                });
            }
        }
    }

    /// The codes allowed for this statement, each with its comment's line; malformed allow
    /// comments become findings.
    fn allows(&mut self, piece: &Piece) -> BTreeMap<&'static str, u32> {
        let mut allowed = BTreeMap::new();
        let first_line = piece.line - piece.comments.len() as u32;
        for (i, comment) in piece.comments.iter().enumerate() {
            let mut words = comment.split_whitespace();
            let is_allow = words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("switchyard:"))
                && words.next() == Some("allow");
            if !is_allow {
                continue;
            }
            let rest = comment.split_once("allow").map_or("", |(_, r)| r);
            let (codes, reason) = match rest.split_once(" because ") {
                Some((codes, reason)) => (codes, reason.trim()),
                None => (rest.trim_end_matches("because"), ""),
            };
            let codes: Vec<&str> = codes
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|c| !c.is_empty())
                .collect();
            let unknown: Vec<&str> = codes
                .iter()
                .copied()
                // The allow rules themselves cannot be allowed away.
                .filter(|c| {
                    rules::rule(c).is_none()
                        || *c == rules::BAD_ALLOW.code
                        || *c == rules::UNUSED_ALLOW.code
                })
                .collect();
            let problem = if codes.is_empty() {
                Some("names no code".to_owned())
            } else if !unknown.is_empty() {
                Some(format!("names unknown code(s) {}", unknown.join(", ")))
            } else if reason.is_empty() {
                Some("gives no reason (`because ...`)".to_owned())
            } else {
                None
            };
            match problem {
                Some(problem) => self.out.push(Finding {
                    code: rules::BAD_ALLOW.code,
                    file: self.file.to_owned(),
                    line: first_line + i as u32,
                    message: format!(
                        "`-- {}` {problem}. {}",
                        short(comment),
                        rules::BAD_ALLOW.why
                    ),
                    safe: rules::BAD_ALLOW.safe,
                }),
                None => {
                    for code in codes {
                        if let Some(rule) = rules::rule(code) {
                            allowed.insert(rule.code, first_line + i as u32);
                        }
                    }
                }
            }
        }
        allowed
    }

    fn statement(&mut self, statement: &Statement, drop_concurrently: bool, hits: &mut Hits) {
        let mut locks = None;
        let mut gated = false;
        match statement {
            Statement::StartTransaction { .. } => {
                self.in_transaction = true;
                self.locks_in_transaction = 0;
            }
            Statement::Commit { .. } | Statement::Rollback { .. } => {
                self.in_transaction = false;
                self.local_lock_timeout = false;
            }
            Statement::Set(Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            }) if last(variable).as_deref() == Some("lock_timeout") => {
                let on = !values.first().is_none_or(is_zero_or_default);
                if matches!(scope, Some(ContextModifier::Local)) {
                    self.local_lock_timeout = on;
                } else {
                    self.lock_timeout = on;
                }
            }
            Statement::Reset(reset) => {
                let all = matches!(reset.reset, Reset::ALL);
                let ours = matches!(&reset.reset, Reset::ConfigurationParameter(name)
                    if last(name).as_deref() == Some("lock_timeout"));
                if all || ours {
                    self.lock_timeout = false;
                    self.local_lock_timeout = false;
                }
            }
            Statement::CreateIndex(index) => {
                if index.concurrently {
                    if self.in_transaction {
                        hits.add(
                            &rules::CONCURRENT_IN_TRANSACTION,
                            format!("CREATE INDEX CONCURRENTLY on {}", index.table_name),
                        );
                    }
                } else {
                    hits.add(
                        &rules::INDEX_NOT_CONCURRENT,
                        format!("CREATE INDEX on {} without CONCURRENTLY", index.table_name),
                    );
                    locks = Some(format!("CREATE INDEX on {}", index.table_name));
                }
            }
            Statement::Drop {
                object_type,
                names,
                cascade,
                ..
            } => {
                let list = names
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let kind = match object_type {
                    ObjectType::Table => Some("table"),
                    ObjectType::Index => Some("index"),
                    _ => None,
                };
                if let Some(kind) = kind {
                    if !self.contract {
                        hits.add(
                            &rules::DROP_OUTSIDE_CONTRACT,
                            format!(
                                "DROP {} {list} in a file that is not a contract",
                                kind.to_uppercase()
                            ),
                        );
                    }
                    if drop_concurrently && self.in_transaction {
                        hits.add(
                            &rules::CONCURRENT_IN_TRANSACTION,
                            format!("DROP INDEX CONCURRENTLY {list}"),
                        );
                    }
                }
                if *cascade {
                    hits.add(&rules::CASCADE, format!("DROP ... {list} CASCADE"));
                }
                if !drop_concurrently
                    && matches!(
                        object_type,
                        ObjectType::Table
                            | ObjectType::Index
                            | ObjectType::View
                            | ObjectType::MaterializedView
                    )
                {
                    locks = Some(format!("DROP {list}"));
                }
            }
            Statement::Truncate(truncate) => {
                let list = truncate
                    .table_names
                    .iter()
                    .map(|t| t.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                if truncate
                    .cascade
                    .as_ref()
                    .is_some_and(|c| c.to_string().eq_ignore_ascii_case("CASCADE"))
                {
                    hits.add(&rules::CASCADE, format!("TRUNCATE {list} CASCADE"));
                }
                locks = Some(format!("TRUNCATE {list}"));
            }
            // An explicit LOCK waits like any DDL (NOWAIT never queues); a trigger's creation
            // takes SHARE ROW EXCLUSIVE on its table, which blocks writes while it waits.
            Statement::Lock(lock) if !lock.nowait => locks = Some("LOCK TABLE".to_owned()),
            Statement::CreateTrigger(trigger) => {
                locks = Some(format!("CREATE TRIGGER {}", trigger.name));
            }
            Statement::AlterTable(alter) => {
                gated = self.alter_table(alter, hits);
                locks = Some(format!("ALTER TABLE {}", alter.name));
            }
            Statement::Update(update) if update.selection.is_none() => hits.add(
                &rules::UNBATCHED_WRITE,
                format!("UPDATE {} without WHERE", update.table),
            ),
            Statement::Delete(delete) if delete.selection.is_none() => {
                hits.add(&rules::UNBATCHED_WRITE, "DELETE without WHERE")
            }
            _ => {}
        }
        if let Some(what) = locks {
            if !self.lock_timeout && !self.local_lock_timeout {
                hits.add(
                    &rules::NO_LOCK_TIMEOUT,
                    format!("{what} runs with no SET lock_timeout before it"),
                );
            }
            // A retire's renames belong together (half a retire is an inconsistent shape), and
            // each holds its lock only for a catalog update: they do not count as several.
            if self.in_transaction && !gated {
                self.locks_in_transaction += 1;
                if self.locks_in_transaction == 2 {
                    hits.add(
                        &rules::LOCKS_IN_ONE_TRANSACTION,
                        format!("{what} is a further lock-taking statement in the same transaction block"),
                    );
                }
            }
        }
    }

    /// Reports the statement's hazards; `true` when it is nothing but gated renames of a
    /// retire or restore file.
    fn alter_table(&mut self, alter: &AlterTable, hits: &mut Hits) -> bool {
        let table = alter.name.to_string();
        let key = last(&alter.name).unwrap_or_default();
        let gated = !alter.operations.is_empty()
            && alter.operations.iter().all(|op| match op {
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => self.gated_rename(&norm(old_column_name), &norm(new_column_name)),
                AlterTableOperation::RenameTable { table_name } => {
                    let (RenameTableNameKind::To(new) | RenameTableNameKind::As(new)) = table_name;
                    self.gated_rename(&key, &last(new).unwrap_or_default())
                }
                _ => false,
            });
        for op in &alter.operations {
            match op {
                AlterTableOperation::AddColumn { column_def, .. } => {
                    add_column(&table, column_def, hits);
                }
                AlterTableOperation::AddConstraint {
                    constraint,
                    not_valid,
                } => match constraint {
                    TableConstraint::ForeignKey(fk) if !not_valid => hits.add(
                        &rules::CONSTRAINT_VALIDATES,
                        format!(
                            "foreign key on {table} to {} without NOT VALID",
                            fk.foreign_table
                        ),
                    ),
                    TableConstraint::Check(check) => {
                        if !not_valid {
                            hits.add(
                                &rules::CONSTRAINT_VALIDATES,
                                format!("CHECK ({}) on {table} without NOT VALID", check.expr),
                            );
                        }
                        if let Expr::IsNotNull(inner) = check.expr.as_ref() {
                            if let Some(column) = column_of(inner) {
                                self.checks.push(NotNullCheck {
                                    name: check.name.as_ref().map(norm),
                                    table: key.clone(),
                                    column,
                                    validated: !not_valid,
                                });
                            }
                        }
                    }
                    TableConstraint::PrimaryKey(_)
                    | TableConstraint::Unique(_)
                    | TableConstraint::Exclude(_) => hits.add(
                        &rules::UNIQUE_BUILDS_INDEX,
                        format!("{constraint} on {table}"),
                    ),
                    _ => {}
                },
                AlterTableOperation::ValidateConstraint { name } => {
                    let name = norm(name);
                    for check in &mut self.checks {
                        if check.table == key && check.name.as_deref() == Some(name.as_str()) {
                            check.validated = true;
                        }
                    }
                }
                AlterTableOperation::AlterColumn { column_name, op } => {
                    let column = norm(column_name);
                    match op {
                        AlterColumnOperation::SetNotNull => {
                            let proven = self
                                .checks
                                .iter()
                                .any(|c| c.validated && c.table == key && c.column == column);
                            if !proven {
                                hits.add(
                                    &rules::SET_NOT_NULL,
                                    format!("SET NOT NULL on {table}.{column_name} with no validated CHECK ({column_name} IS NOT NULL) earlier in the file"),
                                );
                            }
                        }
                        AlterColumnOperation::SetDataType {
                            data_type, using, ..
                        } if using.is_some() || !in_place_type(data_type) => hits.add(
                            &rules::TYPE_REWRITE,
                            format!(
                                "{table}.{column_name} TYPE {data_type}{}",
                                if using.is_some() { " USING ..." } else { "" }
                            ),
                        ),
                        _ => {}
                    }
                }
                AlterTableOperation::DropColumn {
                    column_names,
                    drop_behavior,
                    ..
                } => {
                    let list = column_names
                        .iter()
                        .map(|c| format!("{table}.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if !self.contract {
                        hits.add(
                            &rules::DROP_OUTSIDE_CONTRACT,
                            format!("DROP COLUMN {list} in a file that is not a contract"),
                        );
                    }
                    if matches!(drop_behavior, Some(DropBehavior::Cascade)) {
                        hits.add(&rules::CASCADE, format!("DROP COLUMN {list} CASCADE"));
                    }
                }
                AlterTableOperation::DropConstraint {
                    name,
                    drop_behavior: Some(DropBehavior::Cascade),
                    ..
                } => hits.add(
                    &rules::CASCADE,
                    format!("DROP CONSTRAINT {name} on {table} CASCADE"),
                ),
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } if !self.gated_rename(&norm(old_column_name), &norm(new_column_name)) => hits
                    .add(
                        &rules::RENAME,
                        format!("RENAME COLUMN {table}.{old_column_name} TO {new_column_name}"),
                    ),
                AlterTableOperation::RenameTable { table_name } => {
                    let (RenameTableNameKind::To(new) | RenameTableNameKind::As(new)) = table_name;
                    let new_key = last(new).unwrap_or_default();
                    if !self.gated_rename(&key, &new_key) {
                        hits.add(&rules::RENAME, format!("RENAME TABLE {table} {table_name}"))
                    }
                }
                _ => {}
            }
        }
        gated
    }
}

impl Linter<'_> {
    /// A rename in a retire or restore file between a name and its retired name (`username`
    /// and `username__retired`, the name cut to fit 63 bytes): the old shape renamed out of use
    /// once the gate allows it, or given back. Any other rename there breaks running code like
    /// anywhere else.
    fn gated_rename(&self, from: &str, to: &str) -> bool {
        let (name, retired) = if to.ends_with(RETIRED_SUFFIX) {
            (from, to)
        } else {
            (to, from)
        };
        // The domain's own rule for the retired name, so the two never disagree.
        let column = switchyard_domain::SchemaObject::Column {
            schema: None,
            table: String::new(),
            column: name.to_owned(),
        };
        self.retire_or_restore
            && !name.ends_with(RETIRED_SUFFIX)
            && column.retired_name().as_deref() == Some(retired)
    }
}

fn add_column(table: &str, column: &ColumnDef, hits: &mut Hits) {
    let name = &column.name;
    let mut not_null = false;
    let mut default = None;
    let mut generated = false;
    for option in &column.options {
        match &option.option {
            ColumnOption::NotNull => not_null = true,
            ColumnOption::Default(expr) => default = Some(expr),
            ColumnOption::Generated {
                generated_as,
                generation_expr,
                generation_expr_mode,
                ..
            } => {
                generated = true;
                let stored = generation_expr.is_some()
                    && !matches!(generation_expr_mode, Some(GeneratedExpressionMode::Virtual));
                let identity = generation_expr.is_none()
                    && matches!(generated_as, GeneratedAs::Always | GeneratedAs::ByDefault);
                if stored || identity {
                    hits.add(
                        &rules::REWRITING_DEFAULT,
                        format!(
                            "{table}.{name} is {}",
                            if identity {
                                "an identity column"
                            } else {
                                "a stored generated column"
                            }
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    let type_name = column.data_type.to_string().to_ascii_lowercase();
    let serial = matches!(
        type_name.as_str(),
        "serial" | "bigserial" | "smallserial" | "serial2" | "serial4" | "serial8"
    );
    if serial {
        hits.add(
            &rules::REWRITING_DEFAULT,
            format!("{table}.{name} is {type_name} (a nextval() default)"),
        );
    }
    if let Some(expr) = default {
        if let Some(why) = volatile(expr) {
            hits.add(
                &rules::REWRITING_DEFAULT,
                format!("{table}.{name} DEFAULT {expr}: {why}"),
            );
        }
    }
    if not_null && default.is_none() && !generated && !serial {
        hits.add(
            &rules::NOT_NULL_WITHOUT_DEFAULT,
            format!("{table}.{name} is added NOT NULL with no default"),
        );
    }
}

/// Why a default expression may be volatile, if it may.
fn volatile(expr: &Expr) -> Option<String> {
    let mut why = None;
    let _ = visit_expressions(expr, |e| {
        if let Expr::Function(f) = e {
            let name = last(&f.name).unwrap_or_default();
            if VOLATILE.contains(&name.as_str()) {
                why = Some(format!("{name}() is volatile"));
                return ControlFlow::Break(());
            }
            if !NOT_VOLATILE.contains(&name.as_str()) {
                why = Some(format!(
                    "the linter does not know whether {name}() is volatile (functions are VOLATILE unless declared STABLE or IMMUTABLE)"
                ));
                return ControlFlow::Break(());
            }
        }
        if matches!(e, Expr::Subquery(_)) {
            why = Some("a subquery".to_owned());
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    why
}

/// Target types changed in place when the old type is a shorter varchar (or a text, or a
/// constrained numeric): PostgreSQL skips the rewrite for these binary-coercible changes.
/// The statement does not say the old type, so a reviewer checks that part.
fn in_place_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Text
            | DataType::Varchar(_)
            | DataType::CharacterVarying(_)
            | DataType::Numeric(sqlparser::ast::ExactNumberInfo::None)
            | DataType::Decimal(sqlparser::ast::ExactNumberInfo::None)
    )
}

fn is_zero_or_default(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.trim_start_matches('0').is_empty(),
            Value::SingleQuotedString(s) => {
                let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
                !digits.is_empty() && digits.trim_start_matches('0').is_empty()
            }
            _ => false,
        },
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case("default"),
        _ => false,
    }
}

/// An identifier as PostgreSQL resolves it: unquoted names fold to lower case.
pub(crate) fn norm(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The parts of a name, each as PostgreSQL resolves it.
pub(crate) fn parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => norm(i),
            other => other.to_string(),
        })
        .collect()
}

fn last(name: &ObjectName) -> Option<String> {
    parts(name).pop()
}

fn column_of(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(i) => Some(norm(i)),
        Expr::CompoundIdentifier(p) => p.last().map(norm),
        Expr::Nested(inner) => column_of(inner),
        _ => None,
    }
}

/// A statement's text cut to a readable length for a message.
fn short(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        format!("{}...", one_line.chars().take(77).collect::<String>())
    } else {
        one_line
    }
}
