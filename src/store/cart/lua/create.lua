-- Returns the customer's live active cart, or stores the new one as it.
-- KEYS[1] owner index   KEYS[2] expiring zset   KEYS[3] stats hash
-- ARGV[1] now (ms)  ARGV[2] cart key prefix  ARGV[3] new id  ARGV[4] new doc
-- ARGV[5] new expiry (ms)  ARGV[6] customer id  ARGV[7] new version
-- Returns {created (0|1), doc}.
local now = tonumber(ARGV[1])
local existing = redis.call('GET', KEYS[1])
if existing then
  local cur = redis.call('HMGET', ARGV[2] .. existing, 'exp', 'st', 'doc')
  if cur[3] and cur[2] == 'active' and tonumber(cur[1]) > now then
    return {0, cur[3]}
  end
end
-- An expired predecessor stays in the zset: the sweep counts it as abandoned.
local key = ARGV[2] .. ARGV[3]
local ttl = tonumber(ARGV[5]) - now
redis.call('HSET', key, 'v', ARGV[7], 'exp', ARGV[5], 'st', 'active', 'cust', ARGV[6], 'doc', ARGV[4])
redis.call('PEXPIRE', key, ttl)
redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
redis.call('HINCRBY', KEYS[3], 'created', 1)
return {1, ARGV[4]}
