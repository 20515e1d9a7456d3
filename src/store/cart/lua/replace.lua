-- Compare-and-set of one cart on its version, in one round trip: the check,
-- the write, the TTLs and indexes, and on a conflict the stored record, so
-- the caller can apply its change again without a read of its own.
-- KEYS[1] cart hash  KEYS[2] owner index  KEYS[3] expiring zset  KEYS[4] stats hash
-- ARGV[1] now (ms)  ARGV[2] expected version  ARGV[3] new version  ARGV[4] new expiry (ms)
-- ARGV[5] new doc  ARGV[6] cart id  ARGV[7] new status ('active' | 'converted')
-- ARGV[8] currency code  ARGV[9] subtotal in minor units (used when converting)
-- Returns {'ok' | 'gone' | 'conflict', stored version, stored doc on a conflict else nil}.
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'v', 'exp', 'st')
if not cur[1] or tonumber(cur[2]) <= now then
  return {'gone', 0, false}
end
if cur[1] ~= ARGV[2] or cur[3] ~= 'active' then
  return {'conflict', tonumber(cur[1]), redis.call('HGET', KEYS[1], 'doc')}
end
local ttl = tonumber(ARGV[4]) - now
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'exp', ARGV[4], 'st', ARGV[7], 'doc', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ttl)
local owner = redis.call('GET', KEYS[2])
if ARGV[7] == 'converted' then
  if owner == ARGV[6] then
    redis.call('DEL', KEYS[2])
  end
  redis.call('ZREM', KEYS[3], ARGV[6])
  redis.call('HINCRBY', KEYS[4], 'converted', 1)
  redis.call('HINCRBY', KEYS[4], 'converted:' .. ARGV[8], 1)
  redis.call('HINCRBY', KEYS[4], 'value:' .. ARGV[8], ARGV[9])
else
  if not owner or owner == ARGV[6] then
    redis.call('SET', KEYS[2], ARGV[6], 'PX', ttl)
  end
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
end
return {'ok', tonumber(ARGV[3]), false}
