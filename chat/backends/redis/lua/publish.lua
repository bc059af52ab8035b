-- A group of chat messages, in order, on one round trip and one channel message.
-- KEYS: meta, log, channel, states, changed. ARGV: keep, expiry ms, then name, text, ts, user, reply_to ('' for none) for each message.
-- Each message is a stream entry as add() makes it; the channel gets them
-- as one JSON array (a single message as the object alone), each with the id before it.
local n = counter(KEYS[1], KEYS[2])
local prev = redis.call('HGET', KEYS[1], 'tail') or '0-0'
local bodies, ids = {}, {}
for i = 3, #ARGV, 5 do
  n = n + 1
  local id = fmt(n) .. '-0'
  local fields = {'n', ARGV[i], 'x', ARGV[i + 1], 'ts', ARGV[i + 2], 'u', ARGV[i + 3]}
  if ARGV[i + 4] ~= '' then fields[9], fields[10] = 'r', ARGV[i + 4] end
  bodies[#bodies + 1] = add(KEYS[2], prev, id, fields)
  ids[#ids + 1] = fmt(n)
  prev = id
end
redis.call('HSET', KEYS[1], 'seq', fmt(n), 'tail', prev)
redis.call('SPUBLISH', KEYS[3], cjson.encode(#bodies == 1 and bodies[1] or bodies))
redis.call('XTRIM', KEYS[2], 'MINID', '~', fmt(n - tonumber(ARGV[1]) + 1))
touch(ARGV[2], KEYS[1], KEYS[2], KEYS[4], KEYS[5])
return ids
