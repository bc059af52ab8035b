-- KEYS: meta, log, channel, on, alive, online, names. ARGV: pid, member, cap, expiry ms.
-- Returns how many are online after.
sweep(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[3]), KEYS[4], KEYS[5], KEYS[6], KEYS[7])
local field = ARGV[1] .. '/' .. ARGV[2]
local entry = redis.call('HGET', KEYS[4], field)
if entry then
  redis.call('HDEL', KEYS[4], field)
  local key, name = string.match(entry, '^([^\t]*)\t(.*)$')
  if depart(KEYS[6], KEYS[7], key) then
    announce(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[3]), 'leave', ARGV[2], name, redis.call('HLEN', KEYS[6]))
    touch(ARGV[4], KEYS[1], KEYS[2])
  end
end
return redis.call('HLEN', KEYS[6])
