-- The model registry: every registered artifact, its status and who moved it
-- there; the active pointer per strategy (with the rollback pin); and the
-- history of transitions (append-only by grant: the application may only
-- insert and read it).
CREATE TABLE core.model_registry (
    id               TEXT PRIMARY KEY,   -- the manifest's model_id
    strategy         TEXT NOT NULL,
    version          BIGINT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('candidate', 'approved', 'active', 'retired', 'rejected')),
    artifact_path    TEXT NOT NULL,
    manifest_sha256  TEXT NOT NULL,
    file_hashes      JSONB NOT NULL,     -- file name -> sha256, from the verified manifest
    key_id           TEXT NOT NULL,      -- the key that signed it
    metrics          JSONB NOT NULL,     -- from the manifest (AUC, Brier, backtest)
    expires_at_ms    BIGINT NOT NULL,
    registered_by    TEXT NOT NULL,
    registered_at_ms BIGINT NOT NULL,
    approved_by      TEXT,
    approved_at_ms   BIGINT,
    activated_by     TEXT,
    activated_at_ms  BIGINT,
    retired_at_ms    BIGINT,
    rejected_by      TEXT,
    rejected_at_ms   BIGINT,
    UNIQUE (strategy, version)
);

CREATE TABLE core.model_transitions (
    seq         BIGSERIAL PRIMARY KEY,
    model_id    TEXT NOT NULL REFERENCES core.model_registry (id),
    from_status TEXT,
    to_status   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX model_transitions_by_model ON core.model_transitions (model_id, seq);

CREATE TABLE core.model_active (
    strategy      TEXT PRIMARY KEY,
    model_id      TEXT NOT NULL REFERENCES core.model_registry (id),
    pinned        BOOLEAN NOT NULL DEFAULT false,  -- set by a rollback, cleared by an approver
    pinned_by     TEXT,
    pinned_at_ms  BIGINT,
    request_id    TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- An `activate` request names the model it activates.
ALTER TABLE core.ops_requests ADD COLUMN target TEXT;

GRANT SELECT, INSERT, UPDATE ON core.model_registry, core.model_active TO mlcore_app;
GRANT SELECT, INSERT ON core.model_transitions TO mlcore_app;
GRANT USAGE ON SEQUENCE core.model_transitions_seq_seq TO mlcore_app;
