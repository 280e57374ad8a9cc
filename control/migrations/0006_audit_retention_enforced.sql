-- Retention enforced inside the database (#22 §2): audit.prune_before no
-- longer deletes whatever prefix it is told to. The retention policy lives
-- here, owned by the migration role (the application may only read it);
-- the function deletes only events whose retention has passed by the
-- database's own clock, only as a prefix of the chain, always keeping the
-- newest event; and every pruning leaves a record in audit.prunings (which
-- seqs went, how many, the hash of the last one — the remaining anchor's
-- prev_hash chains to it — who asked and why) that `audit verify` reads to
-- know where the log legitimately starts.

CREATE TABLE audit.retention_policy (
    only_row      BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    audit_days    INTEGER NOT NULL CHECK (audit_days >= 1),
    critical_days INTEGER NOT NULL CHECK (critical_days >= audit_days)
);
INSERT INTO audit.retention_policy (audit_days, critical_days) VALUES (90, 1825);

CREATE TABLE audit.prunings (
    seq               BIGSERIAL PRIMARY KEY,
    at_ms             BIGINT NOT NULL,
    first_removed     BIGINT NOT NULL,
    last_removed      BIGINT NOT NULL,
    removed           BIGINT NOT NULL,
    last_removed_hash TEXT NOT NULL,
    requested_bound   BIGINT NOT NULL,
    requested_by      TEXT NOT NULL,
    reason            TEXT NOT NULL
);

CREATE OR REPLACE FUNCTION audit.refuse_prunings_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.prunings is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER prunings_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.prunings
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_prunings_change();

DROP FUNCTION audit.prune_before(BIGINT);

-- Deletes events with seq < bound whose retention has passed, as a prefix:
-- the first event that must stay (by the policy above and the database's
-- clock) bounds it, and the newest event always stays. Returns rows deleted.
CREATE FUNCTION audit.prune_before(bound BIGINT) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = audit, pg_temp AS $$
DECLARE
    policy     audit.retention_policy%ROWTYPE;
    now_ms     BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
    newest     BIGINT;
    must_keep  BIGINT;
    upto       BIGINT;
    first_seq  BIGINT;
    last_seq   BIGINT;
    last_hash  TEXT;
    deleted    BIGINT;
BEGIN
    SELECT * INTO policy FROM audit.retention_policy;
    SELECT max(seq) INTO newest FROM audit.events;
    IF newest IS NULL THEN
        RETURN 0;
    END IF;
    SELECT min(seq) INTO must_keep FROM audit.events
     WHERE at_ms >= now_ms - (CASE WHEN critical THEN policy.critical_days ELSE policy.audit_days END)::BIGINT * 86400000;
    upto := LEAST(bound, newest, COALESCE(must_keep, newest));
    SELECT min(seq), max(seq) INTO first_seq, last_seq FROM audit.events WHERE seq < upto;
    IF first_seq IS NULL THEN
        RETURN 0;
    END IF;
    SELECT hash INTO last_hash FROM audit.events WHERE seq = last_seq;
    PERFORM set_config('mlcore.pruning', 'on', true);
    DELETE FROM audit.events WHERE seq < upto;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('mlcore.pruning', 'off', true);
    INSERT INTO audit.prunings (at_ms, first_removed, last_removed, removed, last_removed_hash, requested_bound, requested_by, reason)
    VALUES (now_ms, first_seq, last_seq, deleted, last_hash, bound, session_user,
            format('retention: %s days, %s for critical events', policy.audit_days, policy.critical_days));
    RETURN deleted;
END
$$;

REVOKE ALL ON FUNCTION audit.prune_before(BIGINT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.prune_before(BIGINT) TO mlcore_app;
GRANT SELECT ON audit.retention_policy, audit.prunings TO mlcore_app;
