-- KEYS: meta, log, channel, on, alive, online, names. ARGV: cap, list limit.
sweep(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), KEYS[4], KEYS[5], KEYS[6], KEYS[7])
return listing(KEYS[6], KEYS[7], tonumber(ARGV[2]))
