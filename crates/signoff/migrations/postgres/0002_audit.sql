-- The audit trail. Sessions are named by their public handle (text), never
-- by their digest; user_name is kept when known at the time, so the trail
-- still reads after an account is renamed or removed.
CREATE TABLE audit (
    seq       BIGSERIAL PRIMARY KEY,
    at        BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    user_id   TEXT,
    user_name TEXT,
    session   TEXT,
    actor     TEXT,
    reason    TEXT,
    ip        TEXT,
    count     BIGINT
);
CREATE INDEX audit_by_at ON audit (at);
CREATE INDEX audit_by_user ON audit (user_id, at) WHERE user_id IS NOT NULL;
