-- KEYS: record. ARGV: digest, at. Returns the new deadline (or -1 if it
-- cannot be computed), or nil if the record is not under this digest.
-- Never publishes.
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return false end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seen_at'))
if not last or tonumber(ARGV[2]) > last then
  redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[2])
end
local d = deadline(KEYS[1])
if not d then return -1 end
return d
