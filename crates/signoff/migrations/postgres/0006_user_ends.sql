-- Sign-out everywhere as one write, whatever the user's session count
-- (docs/security.md, "Ending all of a user's sessions").
--
-- user_ends holds, per user who ever ended all their sessions, a counter
-- that each such end raises by one. A session keeps the counter's value
-- from when it was created (user_epoch, read in the inserting statement);
-- it is alive only while its value is not below the counter (the two are
-- equal for a live session; see alive!() in src/store/sql/sessions.rs for
-- why the test is >=). Every statement that reads or
-- writes a session checks it, so an ended session is found by nothing;
-- purge deletes its row at its deadline like any other. The session kept
-- by "sign out everywhere else" is moved to the new value in the same
-- transaction. A row is never deleted: a counter that went back to 0 would
-- bring ended sessions back, so deleting one is refused.
--
-- Upgrading: a process of an older version that is still running reads
-- sessions without this check and would accept sessions ended after the
-- migration; stop every process on the store before starting this version
-- (docs/security.md, "Ending all of a user's sessions").
CREATE TABLE user_ends (
    user_id TEXT   NOT NULL PRIMARY KEY,
    epoch   BIGINT NOT NULL
);

ALTER TABLE sessions ADD COLUMN user_epoch BIGINT NOT NULL DEFAULT 0;

-- Counting the sessions an end reaches reads this index only.
DROP INDEX sessions_by_user;
CREATE INDEX sessions_by_user ON sessions (user_id, user_epoch) WHERE user_id IS NOT NULL;

-- The end is announced once, for the user, in the ending transaction:
-- 'u:' and the hex of the user id's UTF-8 bytes, on the channel of
-- signoff_announce() (0003_revocation_announcements.sql), whose rule this
-- repeats.
CREATE FUNCTION signoff_announce_user_end() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    channel text := 'signoff_' || TG_TABLE_SCHEMA;
    payload text := 'u:' || encode(convert_to(NEW.user_id, 'UTF8'), 'hex');
BEGIN
    IF octet_length(channel) > 63 THEN
        channel := 'signoff_' || md5(TG_TABLE_SCHEMA);
    END IF;
    -- A NOTIFY payload must stay under 8000 bytes: for a user id that long
    -- every node forgets everything instead.
    IF octet_length(payload) >= 8000 THEN
        payload := '*';
    END IF;
    PERFORM pg_notify(channel, payload);
    RETURN NULL;
END
$$;

CREATE TRIGGER user_ends_announce
    AFTER INSERT OR UPDATE ON user_ends
    FOR EACH ROW EXECUTE FUNCTION signoff_announce_user_end();

-- Deleting a counter would bring ended sessions back: refused.
CREATE FUNCTION signoff_user_ends_never_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'user_ends rows are never deleted: deleting one would bring ended sessions back';
END
$$;

CREATE TRIGGER user_ends_never_deleted
    BEFORE DELETE ON user_ends
    FOR EACH ROW EXECUTE FUNCTION signoff_user_ends_never_deleted();

CREATE TRIGGER user_ends_never_truncated
    BEFORE TRUNCATE ON user_ends
    FOR EACH STATEMENT EXECUTE FUNCTION signoff_user_ends_never_deleted();
