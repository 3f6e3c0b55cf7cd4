-- Sessions are keyed by the SHA-256 digest of their token; the token itself
-- is never stored. The digest and the public handle are both unique.
CREATE TABLE sessions (
    id              BYTEA   NOT NULL PRIMARY KEY,
    handle          BYTEA   NOT NULL UNIQUE,
    user_id         TEXT,
    created_at      BIGINT  NOT NULL,
    last_seen_at    BIGINT  NOT NULL,
    auth_at         BIGINT,
    expires_at      BIGINT  NOT NULL,
    idle_timeout_ms BIGINT  NOT NULL,
    user_agent      TEXT,
    ip              TEXT,
    data            TEXT,
    generation      BIGINT  NOT NULL,
    -- When the session ends if nothing else happens; purge and conditional
    -- expiry use its index. Computed in numeric so that a huge idle timeout
    -- cannot overflow; the result is never later than expires_at.
    deadline        BIGINT  GENERATED ALWAYS AS
        (least(last_seen_at::numeric + idle_timeout_ms, expires_at::numeric)::bigint) STORED
);
CREATE INDEX sessions_by_user ON sessions (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX sessions_by_deadline ON sessions (deadline);

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT false,
    created_at    BIGINT  NOT NULL
);
