-- A record's deadline: the earlier of its idle and absolute expiry, or
-- nil if a field is missing. Put in front of the scripts that need it.
local function deadline(k)
  local f = redis.call('HMGET', k, 'last_seen_at', 'idle_ms', 'expires_at')
  local last, idle, exp = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  if not last or not idle or not exp then return nil end
  return math.min(last + idle, exp)
end
