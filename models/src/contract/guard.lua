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

-- A non-negative integer in canonical decimal (no sign, no leading zero),
-- or nil.
local function int_arg(s)
  local find, byte = string.find, string.byte
  if type(s) ~= 'string' or #s > 16 or not find(s, '^%d+$') or (#s > 1 and byte(s, 1) == 48) then return nil end
  local n = tonumber(s)
  if n == nil or n > MAX_INT then return nil end
  return n
end

--[[
Numbers are copied verbatim into the stream entry's JSON, so each must be
written as JSON writes it. `json_number` answers 'plain' for '0', '-12',
'0.5', '12.25' (at most 300 characters, so below 1e300: finite), 'exp' for the
exponent form ('1.5e-7', converted to check that it is finite: 1e999 is not),
else nil: nan, inf, hex, spaces, '1.', '.5', '01', '+1'. Each form is one
anchored pattern, tried most common first: in Redis' Lua every string.find
or tonumber call costs ~0.2 µs, and a decision has 4 numbers × 32 signals.
]]
local function json_number(s)
  local find = string.find
  if type(s) ~= 'string' or #s > 300 then return nil end
  if find(s, '^%-?0%.%d+$') or find(s, '^%-?[1-9]%d*%.%d+$') or find(s, '^%-?[1-9]%d*$')
      or find(s, '^%-?0$') then
    return 'plain'
  end
  if find(s, '^%-?%d+%.?%d*[eE][-+]?%d+$') and not find(s, '^%-?0%d') and not find(s, '%.[eE]') then
    local n = tonumber(s)
    if n and n == n and n ~= math.huge and n ~= -math.huge then return 'exp' end
  end
  return nil
end

-- The current signal's weight, 0 when absent or no longer valid.
local function current_weight(key, now)
  local v = redis.call('HMGET', key, 'weight', 'valid_until_ms')
  if not v[1] or not v[2] or tonumber(v[2]) <= now then return 0 end
  return tonumber(v[1]) or 0
end

local function at(i, symbol, what)
  return 'signal ' .. i .. ' (' .. tostring(symbol) .. '): ' .. what
end

-- Why signal i is unacceptable, or nil. Runs once per signal, so the error
-- text is built only when there is an error.
local function signal_error(keys, args, i, b, sig_prefix, seen)
  local find = string.find
  local symbol, side = args[b + 1], args[b + 2]
  if not symbol or symbol == '' then return at(i, symbol, 'symbol is missing') end
  -- The market's symbol syntax; it also makes the symbol JSON-safe as is.
  if #symbol > 16 or not find(symbol, '^[A-Z0-9%._]+$') then
    return at(i, symbol, 'symbol must be 1-16 characters of A-Z, 0-9, . or _')
  end
  if seen[symbol] then return at(i, symbol, 'symbol appears twice in the batch') end
  seen[symbol] = true
  if keys[3 + i] ~= sig_prefix .. symbol then
    return at(i, symbol, 'key ' .. keys[3 + i] .. ' is not the signal key of ' .. symbol)
  end
  if not SIDES[side] then return at(i, symbol, 'side must be long, short or flat, got ' .. tostring(side)) end
  local weight, prob = args[b + 3], args[b + 5]
  if not json_number(weight) then return at(i, symbol, 'weight must be a finite JSON number, got ' .. tostring(weight)) end
  if not json_number(args[b + 4]) then return at(i, symbol, 'qty must be a finite JSON number, got ' .. tostring(args[b + 4])) end
  if not json_number(prob) or prob + 0 < 0 or prob + 0 > 1 then
    return at(i, symbol, 'return_prob must be a JSON number in [0, 1], got ' .. tostring(prob))
  end
  if not json_number(args[b + 6]) then return at(i, symbol, 'risk_score must be a finite JSON number, got ' .. tostring(args[b + 6])) end
  local w = weight + 0 -- a JSON number now, so arithmetic converts it
  if (side == 'long' and w <= 0) or (side == 'short' and w >= 0) or (side == 'flat' and w ~= 0) then
    return at(i, symbol, 'side ' .. side .. ' does not match weight ' .. weight)
  end
  return nil
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
  local seen, sig_prefix = {}, base .. ':sig:'
  for i = 1, n do
    local err = signal_error(keys, args, i, 1 + i * 6, sig_prefix, seen)
    if err then return bad(err) end
  end

  -- 2. Refusals, checked against Redis' own clock and state. Signal i's
  --    fields start at args[1 + 6i + 1] (symbol) .. args[1 + 6i + 6].
  local now = now_ms()
  if valid_until <= now then return { 'expired', now } end
  local symbols = {}
  for i = 1, n do symbols[i] = args[2 + i * 6] end
  local stored = redis.call('HMGET', keys[2], unpack(symbols))
  for i = 1, n do
    local hwm = tonumber(stored[i] or '0') or 0
    if hwm >= seq then return { 'stale', symbols[i], hwm } end
  end
  local mode = redis.call('HGET', keys[1], 'mode')
  if not MODES[mode] then mode = 'halted' end -- absent or unreadable: fail closed
  if mode == 'halted' then return { 'halted', mode, '' } end
  if mode ~= 'active' then
    for i = 1, n do
      local b = 1 + i * 6
      local weight = tonumber(args[b + 3])
      if mode == 'flatten' and args[b + 2] ~= 'flat' then return { 'halted', mode, symbols[i] } end
      if mode == 'reduce_only' then
        local cur = current_weight(keys[3 + i], now)
        local grows = math.abs(weight) > math.abs(cur)
        local flips = weight ~= 0 and (weight > 0) ~= (cur > 0)
        if grows or flips then return { 'halted', mode, symbols[i] } end
      end
    end
  end

  -- 3. Apply: each signal's hash, then one stream entry for the decision
  --    (its signals as a JSON array, numbers copied verbatim).
  local hwm, json, call = {}, {}, redis.call
  local s_seq, s_gen, s_valid = args[1], args[2], args[3]
  for i = 1, n do
    local b, key = 1 + i * 6, keys[3 + i]
    local symbol, side, weight, qty, prob, risk = args[b + 1], args[b + 2], args[b + 3], args[b + 4], args[b + 5], args[b + 6]
    call('HSET', key,
      'seq', s_seq, 'side', side, 'weight', weight, 'qty', qty,
      'return_prob', prob, 'risk_score', risk,
      'model_id', model_id, 'model_version', model_version,
      'generated_at_ms', s_gen, 'valid_until_ms', s_valid)
    call('PEXPIREAT', key, s_valid)
    hwm[2 * i - 1] = symbol
    hwm[2 * i] = s_seq
    json[i] = '{"symbol":"' .. symbol .. '","side":"' .. side .. '","weight":' .. weight
      .. ',"qty":' .. qty .. ',"return_prob":' .. prob .. ',"risk_score":' .. risk .. '}'
  end
  call('HSET', keys[2], unpack(hwm))
  call('XADD', keys[3], 'MAXLEN', '~', maxlen, '*',
    'strategy', strategy, 'seq', s_seq, 'model_id', model_id, 'model_version', model_version,
    'generated_at_ms', s_gen, 'valid_until_ms', s_valid, 'n', n,
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
