-- Deletes one live cart of one owner, if at the expected version ('' = any),
-- in one round trip: the owner comes from the hash, so no read before.
-- KEYS[1] cart hash  KEYS[2] expiring zset  KEYS[3] stats hash
-- ARGV[1] now (ms)  ARGV[2] expected version or ''  ARGV[3] cart id
-- ARGV[4] the caller (anyone else's cart is 'gone')  ARGV[5] owner index key prefix
-- Returns {'ok' | 'gone' | 'conflict', stored version, nil}.
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'v', 'exp', 'st', 'cust')
if not cur[1] or tonumber(cur[2]) <= now or cur[4] ~= ARGV[4] then
  return {'gone', 0, false}
end
if ARGV[2] ~= '' and cur[1] ~= ARGV[2] then
  return {'conflict', tonumber(cur[1]), false}
end
redis.call('DEL', KEYS[1])
local owner_key = ARGV[5] .. cur[4]
if redis.call('GET', owner_key) == ARGV[3] then
  redis.call('DEL', owner_key)
end
-- A converted cart was counted as converted already.
if cur[3] == 'active' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HINCRBY', KEYS[3], 'deleted', 1)
end
return {'ok', tonumber(cur[1]), false}
