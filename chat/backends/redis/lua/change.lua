-- One change (edit, delete or react) to one message, atomically: check, fold, log and publish.
-- KEYS: meta, log, channel, states, changed.
-- ARGV: keep, expiry ms, room, kind, target, user ('' for the API key), name, ts, text, emoji, seed ('' for none).
-- Returns {'ok', id, state, on} or {code}: 'missing' (not held here: ask again with a seed), 'not_found', 'forbidden'.
local meta, log, channel, states, changed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local room, kind, target, user, name, ts = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local state = current(log, states, room, target)
if not state then
  if ARGV[11] == '' then return {'missing'} end
  state = cjson.decode(ARGV[11])
end
if state.deleted then return {'not_found'} end
local on = ''
if kind == 'react' then
  local reactions = state.reactions or {}
  local users = reactions[ARGV[10]] or {}
  local at = nil
  for i, who in ipairs(users) do if who == user then at = i end end
  if at then table.remove(users, at); on = '0' else users[#users + 1] = user; on = '1' end
  if #users == 0 then reactions[ARGV[10]] = nil else reactions[ARGV[10]] = users end
  if next(reactions) == nil then state.reactions = nil else state.reactions = reactions end
else
  if user ~= '' and state.user ~= user then return {'forbidden'} end
  if kind == 'edit' then
    state.message = ARGV[9]
    state.edited = tonumber(ts)
  else
    state.message = ''
    state.deleted = true
    state.edited = nil
    state.reactions = nil
  end
end
local n = counter(meta, log) + 1
local id = fmt(n) .. '-0'
local fields = {'k', kind, 't', target, 'u', user, 'n', name, 'ts', ts}
if kind == 'edit' then
  fields[#fields + 1] = 'x'
  fields[#fields + 1] = ARGV[9]
elseif kind == 'react' then
  fields[#fields + 1] = 'j'
  fields[#fields + 1] = ARGV[10]
  fields[#fields + 1] = 'on'
  fields[#fields + 1] = on
end
if kind ~= 'react' then
  -- The stream keeps no copy of a text edited away or deleted: the message's
  -- entry and the edit that carried its last text go.
  redis.call('XDEL', log, target .. '-0')
  local superseded = redis.call('HGET', states, 'e' .. target)
  if superseded then redis.call('XDEL', log, superseded) end
  if kind == 'edit' then redis.call('HSET', states, 'e' .. target, id) else redis.call('HDEL', states, 'e' .. target) end
end
append(meta, log, channel, id, fields)
redis.call('HSET', meta, 'seq', fmt(n), 'changed', fmt(n))
local encoded = cjson.encode(state)
redis.call('HSET', states, target, encoded)
redis.call('ZADD', changed, n, target)
redis.call('XTRIM', log, 'MINID', '~', fmt(n - tonumber(ARGV[1]) + 1))
local stale = redis.call('ZRANGEBYSCORE', changed, '-inf', n - tonumber(ARGV[1]))
for _, old in ipairs(stale) do redis.call('HDEL', states, old, 'e' .. old) end
if #stale > 0 then redis.call('ZREMRANGEBYSCORE', changed, '-inf', n - tonumber(ARGV[1])) end
touch(ARGV[2], meta, log, states, changed)
return {'ok', fmt(n), encoded, on}
