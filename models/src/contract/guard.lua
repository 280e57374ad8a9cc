#!lua name=mlcore_guard_v2
--[[
ml-assets-core signal guard, version 2 (one stream entry per decision).

Every write of a trading signal goes through `mlcore_publish_v2`; consumers
read through `mlcore_read_v2`; the control plane changes modes through
`mlcore_set_mode_v2`. Function names carry the version, so a daemon can never
call a guard of another version by accident: the call fails with "Function
not found" and the daemon reloads or refuses.

Every key a call touches shares the `{strategy}` hash tag (one Cluster slot).
Time comes from Redis (`TIME`), never from the caller.
]]

local VERSION = 2
local MODES = { active = true, reduce_only = true, halted = true, flatten = true }
local SIDES = { long = true, short = true, flat = true }
local MAX_INT = 9007199254740992 -- 2^53: integers above lose precision in Lua

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function bad(what)
  return redis.error_reply('BADINPUT ' .. what)
end

-- A non-negative integer given as decimal digits, or nil.
local function int_arg(s)
  if type(s) ~= 'string' or not string.match(s, '^%d+$') or #s > 16 then return nil end
  local n = tonumber(s)
  if n == nil or n > MAX_INT then return nil end
  return n
end

-- A finite number written as a JSON number (it is copied verbatim into the
-- stream entry's JSON), or nil: rejects nan, inf, hex, spaces, '1.' and '.5'.
-- The common decimal form is tried first: this runs 4 times per signal.
local function num_arg(s)
  if type(s) ~= 'string' then return nil end
  local find = string.find
  if not (find(s, '^%-?%d+%.%d+$') or find(s, '^%-?%d+$')
      or find(s, '^%-?%d+%.?%d*[eE][-+]?%d+$')) then
    return nil
  end
  local n = tonumber(s)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end

-- The current signal's weight, 0 when absent or no longer valid.
local function current_weight(key, now)
  local v = redis.call('HMGET', key, 'weight', 'valid_until_ms')
  if not v[1] or not v[2] or tonumber(v[2]) <= now then return 0 end
  return tonumber(v[1]) or 0
end

--[[
KEYS: ops, hwm, stream, sig_1 .. sig_n
ARGV: seq, generated_at_ms, valid_until_ms, stream_maxlen, model_id,
      model_version, strategy, then per signal:
      symbol, side, weight, qty, return_prob, risk_score
Reply: {'ok', n} | {'expired', now_ms} | {'stale', symbol, stored_seq}
     | {'halted', mode, symbol}; errors: BADINPUT <what>
]]
local function publish(keys, args)
  -- 1. Validate everything before the first write.
  local seq = int_arg(args[1])
  if not seq or seq == 0 then return bad('seq must be a positive integer, got ' .. tostring(args[1])) end
  local generated = int_arg(args[2])
  if not generated then return bad('generated_at_ms must be an integer, got ' .. tostring(args[2])) end
  local valid_until = int_arg(args[3])
  if not valid_until then return bad('valid_until_ms must be an integer, got ' .. tostring(args[3])) end
  local maxlen = int_arg(args[4])
  if not maxlen or maxlen == 0 then return bad('stream_maxlen must be a positive integer') end
  local model_id, model_version, strategy = args[5], args[6], args[7]
  if not model_id or model_id == '' then return bad('model_id is missing') end
  if not int_arg(model_version) then return bad('model_version must be an integer') end
  if not strategy or strategy == '' then return bad('strategy is missing') end
  if #keys < 4 then return bad('need the ops, hwm and stream keys and at least one signal key') end
  -- Keys must follow the layout of the strategy named in ARGV, so a caller
  -- cannot write one strategy's signals under another's mode.
  local base = '{' .. strategy .. '}'
  if keys[1]:sub(-#base - 4) ~= base .. ':ops' then return bad('ops key ' .. keys[1] .. ' is not strategy ' .. strategy .. "'s") end
  base = keys[1]:sub(1, -5)
  if keys[2] ~= base .. ':hwm' or keys[3] ~= base .. ':signals' then return bad('hwm/stream keys do not match ' .. base) end
  local n = #keys - 3
  if #args ~= 7 + 6 * n then
    return bad(string.format('expected %d signal fields for %d signal keys, got %d', 6 * n, n, #args - 7))
  end
  local sigs, seen, sig_prefix, find = {}, {}, base .. ':sig:', string.find
  for i = 1, n do
    local b = 7 + (i - 1) * 6
    local symbol, side = args[b + 1], args[b + 2]
    local weight, qty = num_arg(args[b + 3]), num_arg(args[b + 4])
    local prob, risk = num_arg(args[b + 5]), num_arg(args[b + 6])
    local where = 'signal ' .. i .. ' (' .. tostring(symbol) .. '): '
    if not symbol or symbol == '' then return bad(where .. 'symbol is missing') end
    -- The market's symbol syntax; it also makes the symbol JSON-safe as is.
    if #symbol > 16 or not find(symbol, '^[A-Z0-9%._]+$') then
      return bad(where .. 'symbol must be 1-16 characters of A-Z, 0-9, . or _')
    end
    if seen[symbol] then return bad(where .. 'symbol appears twice in the batch') end
    seen[symbol] = true
    if keys[3 + i] ~= sig_prefix .. symbol then
      return bad(where .. 'key ' .. keys[3 + i] .. ' is not the signal key of ' .. symbol)
    end
    if not SIDES[side] then return bad(where .. 'side must be long, short or flat, got ' .. tostring(side)) end
    if not weight then return bad(where .. 'weight must be a finite number, got ' .. tostring(args[b + 3])) end
    if not qty then return bad(where .. 'qty must be a finite number, got ' .. tostring(args[b + 4])) end
    if not prob or prob < 0 or prob > 1 then return bad(where .. 'return_prob must be in [0, 1]') end
    if not risk then return bad(where .. 'risk_score must be a finite number') end
    if (side == 'long' and weight <= 0) or (side == 'short' and weight >= 0) or (side == 'flat' and weight ~= 0) then
      return bad(where .. 'side ' .. side .. ' does not match weight ' .. args[b + 3])
    end
    sigs[i] = { key = keys[3 + i], symbol = symbol, side = side, weight = weight, b = b }
  end

  -- 2. Refusals, checked against Redis' own clock and state.
  local now = now_ms()
  if valid_until <= now then return { 'expired', now } end
  local symbols = {}
  for i = 1, n do symbols[i] = sigs[i].symbol end
  local stored = redis.call('HMGET', keys[2], unpack(symbols))
  for i = 1, n do
    local hwm = tonumber(stored[i] or '0') or 0
    if hwm >= seq then return { 'stale', sigs[i].symbol, hwm } end
  end
  local mode = redis.call('HGET', keys[1], 'mode')
  if not MODES[mode] then mode = 'halted' end -- absent or unreadable: fail closed
  if mode == 'halted' then return { 'halted', mode, '' } end
  for i = 1, n do
    local s = sigs[i]
    if mode == 'flatten' and s.side ~= 'flat' then return { 'halted', mode, s.symbol } end
    if mode == 'reduce_only' then
      local cur = current_weight(s.key, now)
      local grows = math.abs(s.weight) > math.abs(cur)
      local flips = s.weight ~= 0 and (s.weight > 0) ~= (cur > 0)
      if grows or flips then return { 'halted', mode, s.symbol } end
    end
  end

  -- 3. Apply: each signal's hash, then one stream entry for the decision
  --    (its signals as a JSON array, numbers copied verbatim).
  local hwm, json = {}, {}
  for i = 1, n do
    local s, b = sigs[i], sigs[i].b
    redis.call('HSET', s.key,
      'seq', args[1], 'side', s.side, 'weight', args[b + 3], 'qty', args[b + 4],
      'return_prob', args[b + 5], 'risk_score', args[b + 6],
      'model_id', model_id, 'model_version', model_version,
      'generated_at_ms', args[2], 'valid_until_ms', args[3])
    redis.call('PEXPIREAT', s.key, valid_until)
    hwm[#hwm + 1] = s.symbol
    hwm[#hwm + 1] = args[1]
    json[i] = '{"symbol":"' .. s.symbol .. '","side":"' .. s.side .. '","weight":' .. args[b + 3]
      .. ',"qty":' .. args[b + 4] .. ',"return_prob":' .. args[b + 5] .. ',"risk_score":' .. args[b + 6] .. '}'
  end
  redis.call('HSET', keys[2], unpack(hwm))
  redis.call('XADD', keys[3], 'MAXLEN', '~', maxlen, '*',
    'strategy', strategy, 'seq', args[1], 'model_id', model_id, 'model_version', model_version,
    'generated_at_ms', args[2], 'valid_until_ms', args[3], 'n', n,
    'signals', '[' .. table.concat(json, ',') .. ']')
  return { 'ok', n }
end

-- KEYS: sig. Reply: the signal as a flat field/value array while it is
-- valid, else nil.
local function read(keys, args)
  local h = redis.call('HGETALL', keys[1])
  if #h == 0 then return false end
  for i = 1, #h, 2 do
    if h[i] == 'valid_until_ms' then
      if (tonumber(h[i + 1]) or 0) <= now_ms() then return false end
      return h
    end
  end
  return false
end

--[[
KEYS: ops
ARGV: expected_version, mode, reason, actor, request_id, strategy, events_channel
Reply: {'ok', new_version} | {'conflict', current_version}
]]
local function set_mode(keys, args)
  local expected = int_arg(args[1])
  if not expected then return bad('expected_version must be a non-negative integer') end
  if not MODES[args[2]] then return bad('mode must be active, reduce_only, halted or flatten, got ' .. tostring(args[2])) end
  for i, name in ipairs({ 'reason', 'actor', 'request_id', 'strategy', 'events_channel' }) do
    if not args[i + 2] or args[i + 2] == '' then return bad(name .. ' is missing') end
  end
  local current = tonumber(redis.call('HGET', keys[1], 'version') or '0') or 0
  if current ~= expected then return { 'conflict', current } end
  local version, now = current + 1, now_ms()
  redis.call('HSET', keys[1], 'mode', args[2], 'version', version, 'reason', args[3],
    'actor', args[4], 'request_id', args[5], 'updated_at_ms', now)
  redis.call('PUBLISH', args[7], cjson.encode({
    type = 'ops_mode', strategy = args[6], mode = args[2], version = version,
    actor = args[4], request_id = args[5], at_ms = now }))
  return { 'ok', version }
end

local function info(keys, args)
  return { 'mlcore_guard', VERSION }
end

redis.register_function { function_name = 'mlcore_publish_v2', callback = publish }
redis.register_function { function_name = 'mlcore_read_v2', callback = read, flags = { 'no-writes' } }
redis.register_function { function_name = 'mlcore_set_mode_v2', callback = set_mode }
redis.register_function { function_name = 'mlcore_info_v2', callback = info, flags = { 'no-writes' } }
