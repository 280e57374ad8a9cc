-- Ops requests and their two-person approval state.
CREATE TABLE core.ops_requests (
    id              TEXT PRIMARY KEY,
    action          TEXT NOT NULL,      -- halt | reduce_only | flatten | resume | rollback
    scope           TEXT NOT NULL,      -- a strategy id or 'global'
    reason          TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    status          TEXT NOT NULL,      -- pending | applied | rejected | expired | failed
    decided_by      TEXT,
    decided_at_ms   BIGINT,
    result          TEXT
);
CREATE INDEX ops_requests_pending ON core.ops_requests (status, expires_at_ms);
GRANT USAGE ON SCHEMA core TO mlcore_app;
GRANT SELECT, INSERT, UPDATE ON core.ops_requests TO mlcore_app;
