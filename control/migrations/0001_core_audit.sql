-- Schemas for the control plane: `core` (model registry) and `audit`
-- (append-only, hash-chained events).

CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS audit;

-- The application's role: it may append and read audit events, nothing else
-- on that table. Roles are cluster-wide: another database (or a concurrent
-- migration) may have created it already.
DO $$
BEGIN
    CREATE ROLE mlcore_app NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE TABLE audit.events (
    seq          BIGINT PRIMARY KEY,             -- contiguous: 1, 2, 3, ...
    at_ms        BIGINT NOT NULL,
    record_type  TEXT NOT NULL,                  -- e.g. ops_request, model_activation
    critical     BOOLEAN NOT NULL,               -- kept 5 years instead of 90 days
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    scope        TEXT NOT NULL,
    before       JSONB NOT NULL,
    after        JSONB NOT NULL,
    result       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,                  -- hash of seq - 1 ('' for an anchor)
    hash         TEXT NOT NULL UNIQUE            -- sha256(prev_hash || canonical JSON of the fields)
);

CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER events_no_delete BEFORE DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

GRANT USAGE ON SCHEMA audit TO mlcore_app;
REVOKE ALL ON audit.events FROM mlcore_app;
GRANT INSERT, SELECT ON audit.events TO mlcore_app;
