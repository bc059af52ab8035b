-- KEYS: meta, log, channel, pids, online, names. ARGV: cap, prefix, list limit.
sweep(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), KEYS[4], KEYS[5], KEYS[6], ARGV[2])
return listing(KEYS[5], KEYS[6], tonumber(ARGV[3]))
