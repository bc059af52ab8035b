-- Write this process's members of a room again, as it knows them.
-- KEYS: pids, online, names, on:<pid>, alive:<pid>. ARGV: pid, ttl ms, expiry ms, then member, key, name triples.
local had = {}
local old = redis.call('HGETALL', KEYS[4])
for i = 1, #old, 2 do had[old[i]] = true end
for i = 4, #ARGV, 3 do
  if not had[ARGV[i]] then
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1] .. '\t' .. ARGV[i + 2])
    if redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1) == 1 then redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2]) end
  end
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[5], '1', 'PX', ARGV[2])
touch(ARGV[3], KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
