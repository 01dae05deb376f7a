-- The usage observer: what the server reads from each target database's pg_stat_statements.

-- One row per target: which replica holds the lease to observe it (so replicas never count the
-- same calls twice) and the statistics' identity at the last pass (a reset or an eviction is a
-- gap in the evidence).
CREATE TABLE observer_targets (
    target          TEXT    PRIMARY KEY,
    holder          TEXT    NOT NULL,
    lease_until_ms  BIGINT  NOT NULL,
    -- pg_stat_statements_info at the last pass ('' before the first).
    stats_reset     TEXT    NOT NULL DEFAULT '',
    dealloc         BIGINT  NOT NULL DEFAULT 0,
    last_pass_ms    BIGINT  NOT NULL DEFAULT 0,
    -- Why the last attempt failed ('' when it did not), and since when it has been failing.
    error           TEXT    NOT NULL DEFAULT '',
    error_since_ms  BIGINT  NOT NULL DEFAULT 0,
    -- The last pass's cost and size, for `switchyard usage` and the benchmark.
    pass_ms         BIGINT  NOT NULL DEFAULT 0,
    statements      BIGINT  NOT NULL DEFAULT 0,
    -- Where reading the server log (jsonlog) for statements failing on a retired shape got to,
    -- and why it cannot be read ('' when it can).
    log_file        TEXT    NOT NULL DEFAULT '',
    log_offset      BIGINT  NOT NULL DEFAULT 0,
    log_error       TEXT    NOT NULL DEFAULT ''
);

-- The counters of every statement that touches a watched object, as last read: the next pass
-- records the difference. Kept in the store, not in memory, so a replica taking over the lease
-- continues without a gap.
CREATE TABLE observer_baselines (
    target  TEXT    NOT NULL,
    entry   TEXT    NOT NULL,
    calls   BIGINT  NOT NULL,
    rows_seen  BIGINT  NOT NULL,
    PRIMARY KEY (target, entry)
);

-- Per migration: since when its objects have been watched without a gap, and why then.
CREATE TABLE usage_coverage (
    migration_key  TEXT    PRIMARY KEY,
    target         TEXT    NOT NULL,
    since_ms       BIGINT  NOT NULL,
    why            TEXT    NOT NULL
);

-- The evidence: per migration, minute and statement, the calls the observer saw.
CREATE TABLE usage_statements (
    migration_key  TEXT    NOT NULL,
    minute_ms      BIGINT  NOT NULL,
    entry          TEXT    NOT NULL,
    last_seen_ms   BIGINT  NOT NULL,
    statement      TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    -- JSON: [{"object": "column:users.username", "possible": null | "why"}]
    objects        TEXT    NOT NULL,
    calls          BIGINT  NOT NULL,
    rows_seen      BIGINT  NOT NULL,
    -- JSON: [{"role", "application_name", "client_addr"}]
    sessions       TEXT    NOT NULL,
    PRIMARY KEY (migration_key, minute_ms, entry)
);
CREATE INDEX usage_statements_by_minute ON usage_statements (minute_ms);

-- Retire before drop: per migration and retire (its retired_at_ms), what the observer found in
-- the catalog (old names gone, retired names present) and how many statements failed on it.
CREATE TABLE retire_checks (
    migration_key     TEXT    NOT NULL,
    retired_at_ms     BIGINT  NOT NULL,
    -- The first pass after the retire: failing statements count from there.
    watched_since_ms  BIGINT  NOT NULL,
    in_effect         BIGINT  NOT NULL,
    detail            TEXT    NOT NULL,
    checked_at_ms     BIGINT  NOT NULL,
    failures_total    BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (migration_key, retired_at_ms)
);

-- The statements that failed on a retired shape, from the target's server log (the first 100
-- per retire; retire_checks counts them all).
CREATE TABLE retire_failures (
    migration_key     TEXT    NOT NULL,
    retired_at_ms     BIGINT  NOT NULL,
    seen_at_ms        BIGINT  NOT NULL,
    logged_at         TEXT    NOT NULL,
    sqlstate          TEXT    NOT NULL,
    message           TEXT    NOT NULL,
    statement         TEXT    NOT NULL,
    role              TEXT    NOT NULL,
    application_name  TEXT    NOT NULL,
    client_addr       TEXT    NOT NULL
);
CREATE INDEX retire_failures_by_retire ON retire_failures (migration_key, retired_at_ms);
