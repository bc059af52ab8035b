-- One round trip per join: presence, the join event, the replay, who is online.
-- KEYS: meta, log, channel, on, alive, online, names, states, changed.
-- ARGV: pid, member, key, name, ttl ms, expiry ms, cap, since, limit, history size, list limit.
sweep(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[7]), KEYS[4], KEYS[5], KEYS[6], KEYS[7])
local fresh = redis.call('HSETNX', KEYS[4], ARGV[1] .. '/' .. ARGV[2], ARGV[3] .. '\t' .. ARGV[4]) == 1
-- A process absent from alive is new to the room, or was swept: it must write its other members again.
local known = redis.call('ZSCORE', KEYS[5], ARGV[1]) and 1 or 0
redis.call('ZADD', KEYS[5], now_ms() + tonumber(ARGV[5]), ARGV[1])
if fresh and redis.call('HINCRBY', KEYS[6], ARGV[3], 1) == 1 then
  redis.call('HSET', KEYS[7], ARGV[3], ARGV[4])
  announce(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[7]), 'join', ARGV[2], ARGV[4], redis.call('HLEN', KEYS[6]))
end
counter(KEYS[1], KEYS[2])
touch(ARGV[6], KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9])
local tail = redis.call('HGET', KEYS[1], 'tail') or '0-0'
return {tail, listing(KEYS[6], KEYS[7], tonumber(ARGV[11])), replay(KEYS[1], KEYS[2], ARGV[8], ARGV[9], ARGV[10], KEYS[8]), known}
