-- Write this process's members of a room again, as it knows them.
-- KEYS: on, alive, online, names. ARGV: pid, ttl ms, expiry ms, then member, key, name triples.
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[1] .. '/' .. ARGV[i], ARGV[i + 1] .. '\t' .. ARGV[i + 2]) == 1 then
    if redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1) == 1 then redis.call('HSET', KEYS[4], ARGV[i + 1], ARGV[i + 2]) end
  end
end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[1])
touch(ARGV[3], KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
