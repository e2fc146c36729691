-- KEYS[1]: the breaker's hash. ARGV[1]: now, in ms. Returns 1 allowed, 0 rejected.
-- OPEN until open_until, then one probe (HALF_OPEN) until it is reported.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then
  if tonumber(ARGV[1]) < tonumber(redis.call('HGET', KEYS[1], 'open_until')) then
    return 0
  end
  redis.call('HSET', KEYS[1], 'state', 'half_open')
elseif state == 'half_open' then
  return 0
end
return 1
