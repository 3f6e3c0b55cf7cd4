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
    user_id TEXT    NOT NULL PRIMARY KEY,
    epoch   INTEGER NOT NULL
);

ALTER TABLE sessions ADD COLUMN user_epoch INTEGER NOT NULL DEFAULT 0;

-- Counting the sessions an end reaches reads this index only.
DROP INDEX sessions_by_user;
CREATE INDEX sessions_by_user ON sessions (user_id, user_epoch) WHERE user_id IS NOT NULL;

CREATE TRIGGER user_ends_never_deleted BEFORE DELETE ON user_ends
BEGIN
    SELECT RAISE(ABORT, 'user_ends rows are never deleted: deleting one would bring ended sessions back');
END;

-- The end is announced once, for the user: the watchers read a change
-- with user_id set as "drop every cached session of this user".
ALTER TABLE session_changes ADD COLUMN user_id TEXT;

CREATE TRIGGER user_ends_change_insert AFTER INSERT ON user_ends
BEGIN
    INSERT INTO session_changes (id, user_id) VALUES (X'', NEW.user_id);
END;

CREATE TRIGGER user_ends_change_update AFTER UPDATE ON user_ends
BEGIN
    INSERT INTO session_changes (id, user_id) VALUES (X'', NEW.user_id);
END;
