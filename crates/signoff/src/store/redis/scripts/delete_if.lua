-- KEYS: key. ARGV: expected value. Deletes the key only if it holds it.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
