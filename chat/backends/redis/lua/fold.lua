-- Changed messages (change.lua): a room's states hash keeps, for each message
-- changed lately, its state-2 frame as it stands (JSON) under its id, and
-- under 'e' .. id the stream id of the edit that carries its current text.

-- The state of message target: kept in states, else read from its stream
-- entry, else nil.
local function current(log, states, room, target)
  local kept = redis.call('HGET', states, target)
  if kept then return cjson.decode(kept) end
  local found = redis.call('XRANGE', log, target .. '-0', target .. '-0')[1]
  if not found then return nil end
  local f = {}
  local fields = found[2]
  for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
  if f['k'] or not f['x'] then return nil end
  local state = {state = 2, message = f['x'], id = target, room = room, name = f['n'], ts = tonumber(f['ts'])}
  if f['u'] and f['u'] ~= '' then state.user = f['u'] end
  if f['r'] and f['r'] ~= '' then state.reply_to = f['r'] end
  return state
end

-- The states of the messages the changes among entries are for: a flat
-- list of id, state.
local function folds(states, entries)
  local targets, seen = {}, {}
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    if fields[1] == 'k' then
      for i = 1, #fields, 2 do
        if fields[i] == 't' and not seen[fields[i + 1]] then
          seen[fields[i + 1]] = true
          targets[#targets + 1] = fields[i + 1]
        end
      end
    end
  end
  if #targets == 0 then return {} end
  local found = redis.call('HMGET', states, unpack(targets))
  local flat = {}
  for i, target in ipairs(targets) do
    if found[i] then
      flat[#flat + 1] = target
      flat[#flat + 1] = found[i]
    end
  end
  return flat
end
