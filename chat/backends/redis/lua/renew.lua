-- Keep this process's presence in a room alive, and the room from expiring while occupied.
-- KEYS: meta, log, pids, online, names, on:<pid>, alive:<pid>. ARGV: pid, ttl ms, expiry ms.
-- Returns 0 when this process's record is gone (Redis lost it, or swept it) and must be restored.
touch(ARGV[3], KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
if redis.call('EXISTS', KEYS[6]) == 0 or redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[7], '1', 'PX', ARGV[2])
return 1
