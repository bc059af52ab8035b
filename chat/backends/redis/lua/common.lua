-- Shared by the scripts of one room. Every key a script touches is passed in
-- KEYS and carries the room's hash tag {R}, so each script runs in one slot.
local function fmt(n) return string.format('%d', n) end

-- The room's last chat id; the first use starts it from Redis's clock in
-- milliseconds times 1000 (or past what the stream holds), so ids keep
-- growing when the room's keys expire or are lost.
local function counter(meta, log)
  local seq = redis.call('HGET', meta, 'seq')
  if seq then return tonumber(seq) end
  local now = redis.call('TIME')
  local n = tonumber(now[1]) * 1000000 + math.floor(tonumber(now[2]) / 1000) * 1000
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
  if last then
    local ms = tonumber(string.match(last[1], '^%d+'))
    if ms > n then n = ms end
  end
  redis.call('HSET', meta, 'seq', fmt(n), 'epoch', fmt(n))
  return n
end

-- Add an entry to the stream after the entry prev, and return it as the
-- room's channel carries it: its fields, its id and prev, so that a
-- subscriber can tell a gap.
local function add(log, prev, id, fields)
  redis.call('XADD', log, id, unpack(fields))
  local body = {p = prev, i = id}
  for i = 1, #fields, 2 do body[fields[i]] = fields[i + 1] end
  return body
end

-- Append an entry to the stream and publish it on the room's channel.
local function append(meta, log, channel, id, fields)
  local body = add(log, redis.call('HGET', meta, 'tail') or '0-0', id, fields)
  redis.call('HSET', meta, 'tail', id)
  redis.call('SPUBLISH', channel, cjson.encode(body))
end

local function touch(expiry, ...)
  for _, key in ipairs({...}) do redis.call('PEXPIRE', key, expiry) end
end

-- Presence: a presence event made while the counter is N gets the stream id
-- N-k (k >= 1); at most cap of them follow one chat message.
local function announce(meta, log, channel, cap, event, member, name, online)
  local n = counter(meta, log)
  local k = 1
  local tail = redis.call('HGET', meta, 'tail')
  if tail then
    local ms, seq = string.match(tail, '^(%d+)-(%d+)$')
    if ms == fmt(n) then k = tonumber(seq) + 1 end
  end
  append(meta, log, channel, fmt(n) .. '-' .. fmt(k), {'e', event, 'm', member, 'n', name, 'o', fmt(online)})
  if k > cap then redis.call('XDEL', log, fmt(n) .. '-' .. fmt(k - cap)) end
end

-- Remove one connection of a presence key (a user, or a guest's member id);
-- the key leaves when its last connection does. Return whether it left.
local function depart(online, names, key)
  if redis.call('HINCRBY', online, key, -1) > 0 then return false end
  redis.call('HDEL', online, key)
  redis.call('HDEL', names, key)
  return true
end

-- Redis's clock in milliseconds.
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- Processes whose liveness deadline passed (killed, or cut off longer than
-- the presence TTL) leave with all their members, announced like any leave.
-- The scan of the room's members happens only when some process died.
local function sweep(meta, log, channel, cap, on, alive, online, names)
  local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now_ms())
  if #dead == 0 then return end
  local gone = {}
  for _, pid in ipairs(dead) do gone[pid] = true end
  local entries = redis.call('HGETALL', on)
  for i = 1, #entries, 2 do
    local pid, member = string.match(entries[i], '^([^/]*)/(.*)$')
    if gone[pid] then
      redis.call('HDEL', on, entries[i])
      local key, name = string.match(entries[i + 1], '^([^\t]*)\t(.*)$')
      if depart(online, names, key) then
        announce(meta, log, channel, cap, 'leave', member, name, redis.call('HLEN', online))
      end
    end
  end
  redis.call('ZREM', alive, unpack(dead))
end

-- At most limit names of those online, and how many are online.
local function listing(online, names, limit)
  local count = redis.call('HLEN', online)
  if count <= limit then return {count, redis.call('HVALS', names)} end
  local picked = redis.call('HRANDFIELD', names, limit, 'WITHVALUES')
  local values = {}
  for i = 2, #picked, 2 do values[#values + 1] = picked[i] end
  return {count, values}
end
