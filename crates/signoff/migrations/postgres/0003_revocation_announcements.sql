-- Revocation announcements, sent from the writing transaction itself: a
-- NOTIFY is delivered when (and only if) the transaction commits, so no
-- removal, rotation or data change can commit unannounced.
--
-- The payload is the lowercase hex of the session's old digest, or '*'
-- after a TRUNCATE. The channel
-- is 'signoff_' || <schema of the sessions table>, or 'signoff_' || md5(schema)
-- when that would exceed PostgreSQL's 63-byte identifier limit.
-- PostgresStore::channel computes the same rule; keep both in step.
CREATE FUNCTION signoff_announce() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    channel text := 'signoff_' || TG_TABLE_SCHEMA;
BEGIN
    IF octet_length(channel) > 63 THEN
        channel := 'signoff_' || md5(TG_TABLE_SCHEMA);
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        -- An operator's "sign everybody out" fires no row trigger: '*'
        -- makes every node empty its session cache.
        PERFORM pg_notify(channel, '*');
    ELSE
        PERFORM pg_notify(channel, encode(OLD.id, 'hex'));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_announce_delete
    AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION signoff_announce();

-- A touch (last_seen_at only) announces nothing: caches may serve a
-- slightly old last_seen_at, never a session that changed or ended.
CREATE TRIGGER sessions_announce_update
    AFTER UPDATE ON sessions
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id
          OR OLD.data IS DISTINCT FROM NEW.data
          OR OLD.generation IS DISTINCT FROM NEW.generation
          OR OLD.auth_at IS DISTINCT FROM NEW.auth_at
          OR OLD.user_id IS DISTINCT FROM NEW.user_id
          OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.idle_timeout_ms IS DISTINCT FROM NEW.idle_timeout_ms)
    EXECUTE FUNCTION signoff_announce();

CREATE TRIGGER sessions_announce_truncate
    AFTER TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION signoff_announce();
