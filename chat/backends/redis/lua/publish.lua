-- KEYS: meta, log, channel. ARGV: name, text, ts, keep, expiry ms, user.
local n = counter(KEYS[1], KEYS[2]) + 1
redis.call('HSET', KEYS[1], 'seq', fmt(n))
append(KEYS[1], KEYS[2], KEYS[3], fmt(n) .. '-0', {'n', ARGV[1], 'x', ARGV[2], 'ts', ARGV[3], 'u', ARGV[6]})
redis.call('XTRIM', KEYS[2], 'MINID', '~', fmt(n - tonumber(ARGV[4]) + 1))
touch(ARGV[5], KEYS[1], KEYS[2])
return fmt(n)
