-- Small named records of the engine's own state (the keys that sign access
-- tokens), written compare-and-set on `version`.
CREATE TABLE engine_state (
    name    TEXT   PRIMARY KEY,
    value   BYTEA  NOT NULL,
    version BIGINT NOT NULL
);
