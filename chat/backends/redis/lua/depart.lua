-- A process that stops: its deadline becomes now, so the next sweep of the room removes its members.
-- KEYS: alive. ARGV: pid.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then redis.call('ZADD', KEYS[1], 'XX', 0, ARGV[1]) end
return 1
