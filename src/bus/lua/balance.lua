-- Renews a member and rebalances the partition leases (src/bus/leases.rs
-- states the rule; `plan` there is its twin for the in-process bus).
-- KEYS[1] leases hash: partition -> "<expires ms> <owner>"
-- KEYS[2] members sorted set: owner scored by its expiry (ms)
-- ARGV[1] member, ARGV[2] ttl ms, ARGV[3] partitions,
-- ARGV[4] "balance", "leave" or "owners" (read only; ARGV[1] unused)
-- Returns the partitions the member holds, ascending; for "owners", the
-- owner of each partition ('' when free).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local function owner_of(k)
  local v = redis.call('HGET', KEYS[1], tostring(k))
  if not v then return nil end
  local sep = string.find(v, ' ', 1, true)
  if not sep or tonumber(string.sub(v, 1, sep - 1)) <= now then return nil end
  return string.sub(v, sep + 1)
end

if ARGV[4] == 'owners' then
  local all = {}
  for k = 0, n - 1 do all[k + 1] = owner_of(k) or '' end
  return all
end

if ARGV[4] == 'leave' then
  redis.call('ZREM', KEYS[2], me)
  for k = 0, n - 1 do
    if owner_of(k) == me then redis.call('HDEL', KEYS[1], tostring(k)) end
  end
  return {}
end

redis.call('ZADD', KEYS[2], now + ttl, me)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local live = redis.call('ZCARD', KEYS[2])

local owners, held, mine = {}, {}, {}
for k = 0, n - 1 do
  local owner = owner_of(k)
  owners[k] = owner
  if owner then
    held[owner] = (held[owner] or 0) + 1
    if owner == me then table.insert(mine, k) end
  end
end
local base, extra = math.floor(n / live), n % live
local above = 0
for owner, count in pairs(held) do
  if owner ~= me and count > base then above = above + 1 end
end
local quota = base
if above < extra then quota = base + 1 end

while #mine > quota do
  redis.call('HDEL', KEYS[1], tostring(table.remove(mine)))
end
for k = 0, n - 1 do
  if #mine >= quota then break end
  if owners[k] == nil then table.insert(mine, k) end
end
table.sort(mine)
local until_ms = tostring(now + ttl)
for _, k in ipairs(mine) do
  redis.call('HSET', KEYS[1], tostring(k), until_ms .. ' ' .. me)
end
return mine
