-- KEYS: state record. Compare-and-set of an engine state record: a hash
-- of `value` and `version`. ARGV: value, expected version (empty: only
-- if absent). Returns 1 if written, 0 if not.
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[2] == '' then
  if current then return 0 end
  redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', 1)
  return 1
end
if current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', tonumber(ARGV[2]) + 1)
return 1
