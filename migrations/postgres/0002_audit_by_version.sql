-- Replicas follow committed changes by version through the audit log (one row per version).
CREATE INDEX audit_log_by_version ON audit_log (version);
