-- Announcements for the other processes on this file (the CLI, a second
-- gateway). SQLite has no NOTIFY: triggers append the old digest of every
-- session that ends or changes to this log, inside the writing
-- transaction, so no such write can commit unannounced; each process's
-- watcher (SqliteStore as a RevocationBus) reads what is new.
--
-- AUTOINCREMENT: seq only grows and is never reused after pruning. SQLite
-- has one writer at a time, so rows commit in seq order; a watcher that
-- has read up to N finds every later change at seq > N, and a gap tells it
-- that rows it had not read yet were pruned (it then forgets everything).
CREATE TABLE session_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id  BLOB    NOT NULL
);

-- Every delete: logout, revocation, user disabled, expiry, purge.
CREATE TRIGGER sessions_change_delete AFTER DELETE ON sessions
BEGIN
    INSERT INTO session_changes (id) VALUES (OLD.id);
END;

-- A touch (last_seen_at only) announces nothing, as on PostgreSQL: caches
-- may serve a slightly old last_seen_at, never a session that changed or
-- ended.
CREATE TRIGGER sessions_change_update AFTER UPDATE ON sessions
WHEN OLD.id IS NOT NEW.id
  OR OLD.data IS NOT NEW.data
  OR OLD.generation IS NOT NEW.generation
  OR OLD.auth_at IS NOT NEW.auth_at
  OR OLD.user_id IS NOT NEW.user_id
  OR OLD.expires_at IS NOT NEW.expires_at
  OR OLD.idle_timeout_ms IS NOT NEW.idle_timeout_ms
BEGIN
    INSERT INTO session_changes (id) VALUES (OLD.id);
END;

-- Keeps about the last 10 000 changes, pruned a thousand at a time; a
-- watcher polls every few milliseconds, so it has long read them.
CREATE TRIGGER session_changes_prune AFTER INSERT ON session_changes
WHEN NEW.seq % 1000 = 0
BEGIN
    DELETE FROM session_changes WHERE seq <= NEW.seq - 10000;
END;
