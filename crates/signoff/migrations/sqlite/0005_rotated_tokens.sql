-- Digests rotated away from a live session (re-authentication, password
-- change, sign-out everywhere else), each with its session's handle, kept
-- until the session's absolute expiry. They open nothing: a logout that
-- carries an old token follows its row to end the session it became.
-- Written in the rotating transaction; purged with expired sessions.
CREATE TABLE rotated_tokens (
    id         BLOB    NOT NULL PRIMARY KEY,
    handle     BLOB    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX rotated_tokens_by_expiry ON rotated_tokens (expires_at);
