-- What the daemons did with each registered model, from their heartbeats:
-- `served` (a daemon reported it loaded) or `refused` (a daemon refused the
-- artifact, with its reason). The registry shows both, alerts on a refusal,
-- and a rollback only goes back to a version some daemon served. Only
-- registered models are recorded (heartbeats are written by whoever can
-- write Redis).
CREATE TABLE core.model_loads (
    model_id    TEXT NOT NULL REFERENCES core.model_registry (id),
    instance    TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('served', 'refused')),
    reason      TEXT NOT NULL DEFAULT '',
    first_at_ms BIGINT NOT NULL,
    last_at_ms  BIGINT NOT NULL,
    alerted_at_ms BIGINT,              -- the refusal the monitor last alerted on
    PRIMARY KEY (model_id, instance, outcome)
);

GRANT SELECT, INSERT, UPDATE ON core.model_loads TO mlcore_app;
