-- Write this process's members of a room again, as it knows them.
-- KEYS: meta, log, on, alive, online, names, states, changed. ARGV: pid, ttl ms, expiry ms, then member, key, name triples.
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[3], ARGV[1] .. '/' .. ARGV[i], ARGV[i + 1] .. '\t' .. ARGV[i + 2]) == 1 then
    if redis.call('HINCRBY', KEYS[5], ARGV[i + 1], 1) == 1 then redis.call('HSET', KEYS[6], ARGV[i + 1], ARGV[i + 2]) end
  end
end
redis.call('ZADD', KEYS[4], now_ms() + tonumber(ARGV[2]), ARGV[1])
-- Every script that gives alive its expiry gives it to all six keys, so alive's tells renew.lua when they last got it.
touch(ARGV[3], KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
return 1
