-- A TRUNCATE (an operator's "sign everybody out") fires no row trigger:
-- announce '*', on which every node empties its session cache.
CREATE FUNCTION signoff_announce_all() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    channel text := 'signoff_' || TG_TABLE_SCHEMA;
BEGIN
    IF octet_length(channel) > 63 THEN
        channel := 'signoff_' || md5(TG_TABLE_SCHEMA);
    END IF;
    PERFORM pg_notify(channel, '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_announce_truncate
    AFTER TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION signoff_announce_all();
