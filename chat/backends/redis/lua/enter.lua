-- One round trip per join: presence, the join event, the replay, who is online.
-- KEYS: meta, log, channel, pids, online, names, on:<pid>, alive:<pid>.
-- ARGV: pid, member, key, name, ttl ms, expiry ms, cap, prefix, since, limit, history size, list limit.
sweep(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[7]), KEYS[4], KEYS[5], KEYS[6], ARGV[8])
local fresh = redis.call('HSETNX', KEYS[7], ARGV[2], ARGV[3] .. '\t' .. ARGV[4]) == 1
redis.call('SET', KEYS[8], '1', 'PX', ARGV[5])
redis.call('SADD', KEYS[4], ARGV[1])
if fresh and redis.call('HINCRBY', KEYS[5], ARGV[3], 1) == 1 then
  redis.call('HSET', KEYS[6], ARGV[3], ARGV[4])
  announce(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[7]), 'join', ARGV[2], ARGV[4], redis.call('HLEN', KEYS[5]))
end
counter(KEYS[1], KEYS[2])
touch(ARGV[6], KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
local tail = redis.call('HGET', KEYS[1], 'tail') or '0-0'
return {tail, listing(KEYS[5], KEYS[6], tonumber(ARGV[12])), replay(KEYS[1], KEYS[2], ARGV[9], ARGV[10], ARGV[11])}
