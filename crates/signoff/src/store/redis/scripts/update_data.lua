-- KEYS: record. ARGV: digest, generation, data, channel.
-- Returns 0 missing, 1 stale, 2 applied.
local f = redis.call('HMGET', KEYS[1], 'id', 'generation')
if f[1] ~= ARGV[1] then return 0 end
if f[2] ~= ARGV[2] then return 1 end
redis.call('HSET', KEYS[1], 'data', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 2
