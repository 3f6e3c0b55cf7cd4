-- KEYS: record, [user index]. ARGV: expected digest or '' for any, now,
-- channel. Returns {'gone'}, {'corrupt'}, {'live', deadline} or
-- {'removed', digest, handle}.
local id = redis.call('HGET', KEYS[1], 'id')
if not id or (ARGV[1] ~= '' and id ~= ARGV[1]) then return {'gone'} end
local d = deadline(KEYS[1])
if not d then return {'corrupt'} end
if d > tonumber(ARGV[2]) then return {'live', string.format('%.0f', d)} end
local handle = redis.call('HGET', KEYS[1], 'handle') or ''
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('SREM', KEYS[2], KEYS[1]) end
redis.call('PUBLISH', ARGV[3], id)
return {'removed', id, handle}
