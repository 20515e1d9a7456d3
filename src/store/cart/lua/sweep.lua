-- Moves up to ARGV[2] active carts whose expiry is at or before ARGV[1] (ms)
-- from the expiring zset into the abandoned counter. Their keys expire by TTL.
-- KEYS[1] expiring zset  KEYS[2] stats hash
-- Returns how many were moved.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('HINCRBY', KEYS[2], 'abandoned', #ids)
end
return #ids
