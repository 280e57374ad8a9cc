-- Retention without breaking the chain: only a prefix of the chain may go,
-- through audit.prune_before, which runs as the table owner. The trigger
-- lets a DELETE through only inside that function (a transaction-local
-- flag), and only the owner holds DELETE: the application role cannot.

CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('mlcore.pruning', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit.events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Deletes every event with seq < bound, keeping at least the newest event
-- (the first remaining row is the chain's anchor). Returns rows deleted.
CREATE FUNCTION audit.prune_before(bound BIGINT) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = audit, pg_temp AS $$
DECLARE
    newest BIGINT;
    deleted BIGINT;
BEGIN
    SELECT max(seq) INTO newest FROM audit.events;
    IF newest IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM set_config('mlcore.pruning', 'on', true);
    DELETE FROM audit.events WHERE seq < LEAST(bound, newest);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('mlcore.pruning', 'off', true);
    RETURN deleted;
END
$$;

REVOKE ALL ON FUNCTION audit.prune_before(BIGINT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.prune_before(BIGINT) TO mlcore_app;
