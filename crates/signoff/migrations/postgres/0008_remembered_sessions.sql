-- "Remember this device" (docs/sessions.md): a session signed in with it
-- keeps the policy's remember-device limits instead of the ordinary ones.
-- Stored, not inferred from the session's lifetime, so that an operator who
-- shortens the ordinary lifetime cuts every ordinary session to it.
ALTER TABLE sessions ADD COLUMN remembered BOOLEAN NOT NULL DEFAULT false;
