-- Keep this process's presence in a room alive, and the room from expiring while occupied.
-- KEYS: meta, log, on, alive, online, names, states, changed. ARGV: pid, ttl ms, expiry ms.
-- The room's keys are given their expiry again once a tenth of it has passed
-- (alive's own time to live says when they last were), not at every renewal.
-- Returns 0 when this process's liveness is gone (Redis lost it, or swept the process) and its members
-- must be written again.
local expiry = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[4]) < expiry - expiry / 10 then
  touch(ARGV[3], KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
end
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[4], 'XX', now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
