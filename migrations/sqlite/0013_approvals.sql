-- Four eyes: changes waiting for a second person's approval, and what became of them. The
-- change itself (operation, expected version, reason) is the requester's; applying it goes
-- through the safety rules at that version, in the transaction that marks it applied.
CREATE TABLE approvals (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_key      TEXT   NOT NULL REFERENCES migrations (key),
    operation          TEXT   NOT NULL,
    gated              TEXT   NOT NULL,
    description        TEXT   NOT NULL,
    expected_version   BIGINT NOT NULL,
    reason             TEXT   NOT NULL,
    requested_by_token BIGINT NOT NULL,
    requested_by       TEXT   NOT NULL,
    requested_at_ms    BIGINT NOT NULL,
    origin             TEXT   NOT NULL,
    status             TEXT   NOT NULL,
    decided_by         TEXT   NOT NULL,
    decided_at_ms      BIGINT NOT NULL,
    decision_reason    TEXT   NOT NULL
);
CREATE INDEX approvals_by_status ON approvals (status, id);
-- At most one request waits per migration at a time.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (migration_key) WHERE status = 'pending';

-- Who approved a change (or that an admin bypassed the approval), beside the actor who asked.
ALTER TABLE audit_log ADD COLUMN approved_by TEXT NOT NULL DEFAULT '';
