-- KEYS: meta, log, states. ARGV: since ('' for none), limit, history size.
return replay(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], KEYS[3])
