-- KEYS: user index. ARGV: digest to keep or '', channel, user id.
-- Deletes the user's other records (whose keys share the index's hash
-- tag) and returns {record key, digest, handle, ...} of each.
local out = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local f = redis.call('HMGET', k, 'id', 'handle', 'user')
  if not f[1] or f[3] ~= ARGV[3] then
    redis.call('SREM', KEYS[1], k)
  elseif f[1] ~= ARGV[1] then
    redis.call('DEL', k)
    redis.call('SREM', KEYS[1], k)
    redis.call('PUBLISH', ARGV[2], f[1])
    out[#out + 1] = k
    out[#out + 1] = f[1]
    out[#out + 1] = f[2] or ''
  end
end
return out
