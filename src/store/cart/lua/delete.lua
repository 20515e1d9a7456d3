-- Deletes one live cart, if at the expected version ('' = any).
-- KEYS[1] cart hash  KEYS[2] owner index  KEYS[3] expiring zset  KEYS[4] stats hash
-- ARGV[1] now (ms)  ARGV[2] expected version or ''  ARGV[3] cart id
-- Returns {'ok' | 'gone' | 'conflict', stored version}.
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'v', 'exp', 'st')
if not cur[1] or tonumber(cur[2]) <= now then
  return {'gone', 0}
end
if ARGV[2] ~= '' and cur[1] ~= ARGV[2] then
  return {'conflict', tonumber(cur[1])}
end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
-- A converted cart was counted as converted already.
if cur[3] == 'active' then
  redis.call('ZREM', KEYS[3], ARGV[3])
  redis.call('HINCRBY', KEYS[4], 'deleted', 1)
end
return {'ok', tonumber(cur[1])}
