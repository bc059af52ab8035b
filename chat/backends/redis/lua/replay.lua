-- KEYS: meta, log, states. ARGV: since ('' for none), limit, history size.
-- Returns {seq, epoch, first kept entry, entries, from, the states of the messages the changes among entries
-- are for (fold.lua), the room's newest change} or {false, TIME} for an unknown room.
local function replay(meta, log, since, limit, size, states)
  local seq = redis.call('HGET', meta, 'seq')
  if not seq then return {false, redis.call('TIME')} end
  local epoch = redis.call('HGET', meta, 'epoch') or '0'
  local n = tonumber(seq)
  local window = n - tonumber(size) + 1
  local first = redis.call('XRANGE', log, fmt(window), '+', 'COUNT', 1)
  local from
  if since == '' then from = n - tonumber(limit) + 1 else from = tonumber(since) + 1 end
  if from < window then from = window end
  local entries = {}
  if from <= n then entries = redis.call('XRANGE', log, fmt(from), fmt(n) .. '-0') end
  return {seq, epoch, first, entries, fmt(from), folds(states, entries), redis.call('HGET', meta, 'changed') or '0'}
end
