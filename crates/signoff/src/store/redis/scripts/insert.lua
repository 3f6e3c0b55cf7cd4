-- KEYS: record, [user index]. ARGV: native expiry (ms), field, value, ...
-- Returns 1 if created, 0 if the record exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if KEYS[2] then
  redis.call('SADD', KEYS[2], KEYS[1])
  if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[1]) then
    redis.call('PEXPIREAT', KEYS[2], ARGV[1])
  end
end
return 1
