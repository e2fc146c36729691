-- KEYS[1]: the breaker's hash. ARGV: failed (1 or 0), now in ms, the consecutive
-- failures that trip, how long it stays open in ms.
if ARGV[1] == '1' then
  local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  if failures >= tonumber(ARGV[3]) or redis.call('HGET', KEYS[1], 'state') == 'half_open' then
    redis.call('HSET', KEYS[1], 'state', 'open', 'failures', 0,
               'open_until', tonumber(ARGV[2]) + tonumber(ARGV[4]))
  end
else
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
end
return 1
