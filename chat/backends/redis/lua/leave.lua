-- KEYS: meta, log, channel, pids, online, names, on:<pid>. ARGV: member, cap, prefix, expiry ms.
-- Returns how many are online after.
sweep(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[2]), KEYS[4], KEYS[5], KEYS[6], ARGV[3])
local entry = redis.call('HGET', KEYS[7], ARGV[1])
if entry then
  redis.call('HDEL', KEYS[7], ARGV[1])
  local key, name = string.match(entry, '^([^\t]*)\t(.*)$')
  if depart(KEYS[5], KEYS[6], key) then
    announce(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[2]), 'leave', ARGV[1], name, redis.call('HLEN', KEYS[5]))
    touch(ARGV[4], KEYS[1], KEYS[2])
  end
end
return redis.call('HLEN', KEYS[5])
