-- KEYS: user. ARGV: expected groups, new groups (as stored: names
-- separated by spaces). A user written before groups existed has no field:
-- no group.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = redis.call('HGET', KEYS[1], 'groups') or ''
if now ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'groups', ARGV[2])
return 1
