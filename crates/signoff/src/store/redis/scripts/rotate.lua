-- KEYS: record. ARGV: old digest, new digest, auth_at or '', channel.
-- Returns 1 if rotated, 0 if the record is not under the old digest.
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'generation', 1)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'auth_at', ARGV[3]) end
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
