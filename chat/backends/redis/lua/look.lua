-- KEYS: log, states. ARGV: room, id. Returns the message's state (JSON) if the backend holds it, else false.
local state = current(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if not state then return false end
return cjson.encode(state)
