//! The one list of lint rules. The human output, the SARIF rules and the README's table are
//! all this list (a test checks the README names every code), so a code never changes meaning.

/// A lint rule: its stable code, a short title, why it is dangerous, and the safe form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub code: &'static str,
    pub title: &'static str,
    pub why: &'static str,
    pub safe: &'static str,
}

macro_rules! rules {
    ($($name:ident = $code:literal, $title:literal, $why:literal, $safe:literal;)*) => {
        $(pub const $name: Rule = Rule { code: $code, title: $title, why: $why, safe: $safe };)*
        /// Every rule, in code order.
        pub const RULES: &[Rule] = &[$($name),*];
    };
}

rules! {
    UNPARSEABLE = "SY000", "statement the parser cannot read",
        "The linter cannot parse this statement, so nothing about its locks was checked.",
        "Check it by hand, then allow it: `-- switchyard: allow SY000 because <reason>`.";
    INDEX_NOT_CONCURRENT = "SY001", "CREATE INDEX without CONCURRENTLY",
        "A plain CREATE INDEX holds a SHARE lock for the whole build, blocking every write to the table.",
        "CREATE INDEX CONCURRENTLY, outside any transaction block.";
    CONCURRENT_IN_TRANSACTION = "SY002", "CONCURRENTLY inside a transaction block",
        "PostgreSQL refuses CREATE/DROP INDEX CONCURRENTLY inside a transaction block, so the migration fails.",
        "Put the concurrent statement in its own file, outside BEGIN ... COMMIT (and mark the file non-transactional for your migration tool).";
    NOT_NULL_WITHOUT_DEFAULT = "SY003", "ADD COLUMN NOT NULL without a default",
        "Adding a NOT NULL column without a default fails on a table with rows, and old code that inserts without the column breaks.",
        "ADD COLUMN nullable, backfill in batches, then add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it and SET NOT NULL; or give a constant DEFAULT.";
    REWRITING_DEFAULT = "SY004", "ADD COLUMN whose default rewrites the table",
        "A volatile default (random(), clock_timestamp(), gen_random_uuid(), nextval via serial/identity, a stored generated column) is computed per row, so PostgreSQL rewrites the whole table under an ACCESS EXCLUSIVE lock; constants and stable functions such as now() do not since PostgreSQL 11.",
        "ADD COLUMN without the default (or with a constant one), then SET DEFAULT for new rows and backfill old rows in batches.";
    CONSTRAINT_VALIDATES = "SY005", "ADD CONSTRAINT without NOT VALID",
        "Adding a foreign key or CHECK constraint checks every row while holding a lock that blocks writes (for a foreign key, on both tables).",
        "ADD CONSTRAINT ... NOT VALID, then ALTER TABLE ... VALIDATE CONSTRAINT in a later statement (it takes a weaker lock).";
    SET_NOT_NULL = "SY006", "SET NOT NULL without a validated CHECK",
        "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock unless a validated CHECK (col IS NOT NULL) already proves it (PostgreSQL 12+).",
        "ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c; SET NOT NULL; then DROP CONSTRAINT c.";
    TYPE_REWRITE = "SY007", "ALTER COLUMN TYPE that rewrites the table",
        "Changing a column's type rewrites the table and its indexes under an ACCESS EXCLUSIVE lock, and breaks readers and writers of the old type at once.",
        "Add a column of the new type, dual-write and backfill it, switch readers, then drop the old column (expand/contract). Only text, unbounded varchar or a longer varchar(n), without USING, are changed in place.";
    RENAME = "SY008", "RENAME of a column or table",
        "Running code still uses the old name, so every deployed reader and writer fails the moment the rename commits.",
        "Add the new column (or a view for a table), dual-write, move readers, then drop the old name in a contract file. Renaming the old shape out of use before the drop (retire before drop) belongs in a file headed `-- switchyard: retire KEY`, as `switchyard retire-sql KEY` writes it.";
    DROP_OUTSIDE_CONTRACT = "SY009", "DROP outside a contract file",
        "Dropping a column, table or index breaks code that still uses it; Switchyard only lets that happen through the contract gate.",
        "Move the DROP to a file headed `-- switchyard: contract KEY` and apply it once `switchyard gate` passes.";
    CASCADE = "SY010", "CASCADE",
        "CASCADE silently drops or truncates whatever depends on the object (views, foreign keys, other tables), which no review of this file shows.",
        "Drop the dependent objects explicitly, each in its own statement, and leave CASCADE out.";
    NO_LOCK_TIMEOUT = "SY011", "lock-taking statement without lock_timeout",
        "Waiting for its lock, this statement queues every later query on the table behind it, so one long transaction stalls the application.",
        "SET lock_timeout = '5s'; (or SET LOCAL inside the transaction) before it, and retry the migration when it times out.";
    UNBATCHED_WRITE = "SY012", "UPDATE or DELETE without WHERE",
        "Changing every row in one statement locks them all until commit, bloats the table and can run for hours.",
        "Update or delete in batches by key range (WHERE id >= $1 AND id < $2), each in its own transaction; a Switchyard backfill does this.";
    LOCKS_IN_ONE_TRANSACTION = "SY013", "several lock-taking statements in one transaction",
        "Every lock taken in a transaction is held until it commits, so the second statement holds the first one's lock while it waits and runs.",
        "One lock-taking statement per transaction (or per file), each after SET lock_timeout.";
    UNIQUE_BUILDS_INDEX = "SY014", "ADD PRIMARY KEY, UNIQUE or EXCLUDE without USING INDEX",
        "Adding a primary key, unique or exclusion constraint builds its index while holding an ACCESS EXCLUSIVE lock on the table.",
        "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... PRIMARY KEY/UNIQUE USING INDEX (EXCLUDE has no concurrent form: allow it, with a reason, only on a small or new table).";
    BAD_ALLOW = "SY015", "allow comment without a reason",
        "An allow comment must name known codes and say why, or the next reader cannot tell a reviewed hazard from a forgotten one; this one silences nothing.",
        "-- switchyard: allow SY0NN because <reason>";
    UNUSED_ALLOW = "SY016", "allow comment that silences nothing",
        "An allow comment for a code its statement does not raise is stale (the statement changed, or the comment sits above the wrong one) and would silently cover a hazard added later.",
        "Remove the allow comment, or move it directly above the statement that raises the code.";
}

/// The rule with this code.
pub fn rule(code: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.code == code)
}
