-- Sessions are keyed by the SHA-256 digest of their token; the token itself
-- is never stored. The rowid keeps rows in insertion order so pages fill
-- densely; the digest and handle are unique secondary keys.
CREATE TABLE sessions (
    id              BLOB    NOT NULL UNIQUE,
    handle          BLOB    NOT NULL UNIQUE,
    user_id         TEXT,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    auth_at         INTEGER,
    expires_at      INTEGER NOT NULL,
    idle_timeout_ms INTEGER NOT NULL,
    user_agent      TEXT,
    ip              TEXT,
    data            TEXT,
    generation      INTEGER NOT NULL,
    -- When the session ends if nothing else happens. Virtual: costs no row
    -- space, only its index, which purge and conditional expiry use.
    deadline        INTEGER GENERATED ALWAYS AS (min(last_seen_at + idle_timeout_ms, expires_at)) VIRTUAL
);
CREATE INDEX sessions_by_user ON sessions (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX sessions_by_deadline ON sessions (deadline);

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
