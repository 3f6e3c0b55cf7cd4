-- KEYS: user. ARGV: field, value, ... Returns 1 if created, 0 if it exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
