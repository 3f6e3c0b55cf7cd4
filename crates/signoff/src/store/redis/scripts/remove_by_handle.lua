-- KEYS: record, [user index]. ARGV: handle, '1' to check the owner or
-- '0', owner, channel. Returns the record's fields as they were, or nil.
local f = redis.call('HMGET', KEYS[1], 'handle', 'user', 'id')
if f[1] ~= ARGV[1] or not f[3] then return false end
if ARGV[2] == '1' and f[2] ~= ARGV[3] then return false end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('SREM', KEYS[2], KEYS[1]) end
redis.call('PUBLISH', ARGV[4], f[3])
return all
