-- Config change requests (docs/config-changes.md): one row per request,
-- its approvals, and the append-only history of its states.
CREATE SEQUENCE core.config_change_ids;
CREATE TABLE core.config_changes (
    id                 TEXT PRIMARY KEY,          -- cr-<n>
    title              TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('change', 'rollback')),
    rollback_of        TEXT REFERENCES core.config_changes (id),
    author             TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('draft', 'pr_created', 'approved', 'merged', 'applying',
                           'applied', 'rejected', 'cancelled', 'expired', 'failed')),
    branch             TEXT NOT NULL,             -- cr/<id> in the config repository
    base_commit        TEXT NOT NULL,             -- the environment branch's head it started from
    head_commit        TEXT NOT NULL,             -- the request branch's head (what approvals approve)
    merged_commit      TEXT,
    deployed_before    TEXT,                      -- the version deployed when it was applied
    risk               TEXT NOT NULL CHECK (risk IN ('low', 'high')),
    risk_reasons       JSONB NOT NULL,
    required_approvals INT NOT NULL,
    fast_path          BOOLEAN NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    expires_at_ms      BIGINT NOT NULL,
    result             TEXT
);
CREATE INDEX config_changes_state ON core.config_changes (state, expires_at_ms);

-- Approvals of one revision (head_commit): an edit revokes them (deleted,
-- and the revocation is in the history).
CREATE TABLE core.config_change_approvals (
    change_id   TEXT NOT NULL REFERENCES core.config_changes (id),
    approver    TEXT NOT NULL,
    head_commit TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (change_id, approver)
);

-- Every state change, append-only (the hash-chained audit.events holds the
-- same facts; this table is the request's own history, queryable by id).
CREATE TABLE audit.config_changes (
    seq        BIGSERIAL PRIMARY KEY,
    change_id  TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    actor      TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    commit_id  TEXT,
    details    JSONB NOT NULL
);
CREATE TRIGGER config_changes_no_update BEFORE UPDATE ON audit.config_changes
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER config_changes_no_delete BEFORE DELETE ON audit.config_changes
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER config_changes_no_truncate BEFORE TRUNCATE ON audit.config_changes
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

GRANT SELECT, INSERT, UPDATE ON core.config_changes TO mlcore_app;
GRANT SELECT, INSERT, DELETE ON core.config_change_approvals TO mlcore_app;
GRANT USAGE ON SEQUENCE core.config_change_ids TO mlcore_app;
GRANT SELECT, INSERT ON audit.config_changes TO mlcore_app;
GRANT USAGE ON SEQUENCE audit.config_changes_seq_seq TO mlcore_app;
