-- KEYS: record, [user index]. ARGV: digest, channel.
-- Returns the record's fields as they were, or nil.
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return false end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('SREM', KEYS[2], KEYS[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[1])
return all
