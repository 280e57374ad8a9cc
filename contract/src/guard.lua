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
-- What was added within a version, compatibly (2: mlcore_publish_many_v2;
-- 3: the stream entry's written_at_us; 4: every key's type checked before
-- the first write; 5: set_mode only for a user that may write the
-- strategy's mode-writer key, and mlcore_spend_code_v2). A client checks
-- that the loaded library's revision is at least its own.
local REVISION = 5
local MODES = { active = true, reduce_only = true, halted = true, flatten = true }
local SIDES = { long = true, short = true, flat = true }
local MAX_INT = 9007199254740992 -- 2^53: integers above lose precision in Lua

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Redis' clock in µs since the epoch, as the decimal string a stream entry
-- carries (seconds and µs concatenated: no float, whatever the magnitude).
local function now_us_string()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
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
'0' — the weight and qty of every flat signal, often most of a decision —
is one string comparison (Lua strings are interned: a pointer compare);
then fractions below 1 (weights, probabilities, risk scores), integers
(quantities), larger fractions and '-0'. Its argument is always a string:
FCALL's arguments are, and callers check the argument count first (a
`type` check here was 2.4 % of a call).
]]
local function json_number(s)
  if s == '0' then return 'plain' end
  local find = string.find
  if #s > 300 then return nil end
  if find(s, '^%-?0%.%d+$') or find(s, '^%-?[1-9]%d*$') or find(s, '^%-?[1-9]%d*%.%d+$')
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

-- Why signal i's symbol (and key) is unacceptable, or nil. Checked on a
-- call's first decision; later decisions must name the same symbols.
local function symbol_error(keys, args, i, b, sig_prefix, seen)
  local symbol = args[b + 1]
  if not symbol or symbol == '' then return at(i, symbol, 'symbol is missing') end
  -- The market's symbol syntax; it also makes the symbol JSON-safe as is.
  if #symbol > 16 or not string.find(symbol, '^[A-Z0-9%._]+$') then
    return at(i, symbol, 'symbol must be 1-16 characters of A-Z, 0-9, . or _')
  end
  if seen[symbol] then return at(i, symbol, 'symbol appears twice in the batch') end
  seen[symbol] = true
  if keys[3 + i] ~= sig_prefix .. symbol then
    return at(i, symbol, 'key ' .. keys[3 + i] .. ' is not the signal key of ' .. symbol)
  end
  return nil
end

-- A fraction in [0, 1) written '0.<digits>': what a model's probability
-- and risk score nearly always are. One pattern, and no conversion: the
-- form alone bounds the value (a conversion of 17 digits is `strtod`'s slow
-- path). Any other form goes through `json_number`.
local UNIT_FRACTION = '^0%.%d+$'

-- Why signal i's values are unacceptable, or nil. Runs once per signal, so
-- the error text is built only when there is an error. The common forms
-- ('0' weights and quantities, '0.<digits>' probabilities and risk scores)
-- are checked inline, without a function call: with them a 32-signal
-- call takes ≈ 11 % fewer instructions in Redis (docs/performance.md).
local function values_error(args, i, b)
  local find = string.find
  local symbol, side, weight, qty = args[b + 1], args[b + 2], args[b + 3], args[b + 4]
  local prob, risk = args[b + 5], args[b + 6]
  if not SIDES[side] then return at(i, symbol, 'side must be long, short or flat, got ' .. tostring(side)) end
  if weight ~= '0' and not json_number(weight) then
    return at(i, symbol, 'weight must be a finite JSON number, got ' .. tostring(weight))
  end
  if qty ~= '0' and not json_number(qty) then
    return at(i, symbol, 'qty must be a finite JSON number, got ' .. tostring(qty))
  end
  if #prob > 300 or not find(prob, UNIT_FRACTION) then
    local p = json_number(prob) and prob + 0
    if not p or p < 0 or p > 1 then
      return at(i, symbol, 'return_prob must be a JSON number in [0, 1], got ' .. tostring(prob))
    end
  end
  if (#risk > 300 or not find(risk, UNIT_FRACTION)) and not json_number(risk) then
    return at(i, symbol, 'risk_score must be a finite JSON number, got ' .. tostring(risk))
  end
  -- A JSON number now, so arithmetic converts it ('0', every flat signal's
  -- weight, without the conversion).
  local w = weight == '0' and 0 or weight + 0
  if (side == 'long' and w <= 0) or (side == 'short' and w >= 0) or (side == 'flat' and w ~= 0) then
    return at(i, symbol, 'side ' .. side .. ' does not match weight ' .. weight)
  end
  return nil
end

--[[
A decision is a block of 7 + 6n arguments starting after args[o]:
seq, generated_at_ms, valid_until_ms, stream_maxlen, model_id,
model_version, strategy, then per signal symbol, side, weight, qty,
return_prob, risk_score. Signal i's fields are args[o + 6i + 2 .. o + 6i + 7],
so its base (the index before its symbol) is o + 1 + 6i.
]]
local HEAD, PER = 7, 6
-- Most signals a call may carry: a call's symbols are unpacked into one
-- Lua call (`HMGET`, `HSET`), which Lua bounds at a few thousand values.
local MAX_SIGNALS = 1024
local NEED_KEYS = 'need the ops, hwm and stream keys and at least one signal key'

-- Why the keys do not fit the decision at offset o (its strategy and
-- symbols), or nil. Checked once per call: a call's decisions share its keys.
local function layout_error(keys, args, o, n)
  local strategy = args[o + 7]
  if not strategy or strategy == '' then return 'strategy is missing' end
  if #keys < 4 then return NEED_KEYS end
  -- Keys must follow the layout of the strategy named in ARGV, so a caller
  -- cannot write one strategy's signals under another's mode.
  local base = '{' .. strategy .. '}'
  if keys[1]:sub(-#base - 4) ~= base .. ':ops' then return 'ops key ' .. keys[1] .. ' is not strategy ' .. strategy .. "'s" end
  base = keys[1]:sub(1, -5)
  if keys[2] ~= base .. ':hwm' or keys[3] ~= base .. ':signals' then return 'hwm/stream keys do not match ' .. base end
  local seen, sig_prefix = {}, base .. ':sig:'
  for i = 1, n do
    local err = symbol_error(keys, args, i, o + 1 + i * PER, sig_prefix, seen)
    if err then return err end
  end
  return nil
end

--[[
Layouts that passed `layout_error`, by ops key: the keys and the symbols,
as the strings they were. A daemon sends the same strategy and symbols in
every call, and checking them (a pattern, a concatenation and a set insert
per symbol) is about 6 % of a 32-signal call in Redis. Lua interns every
string, so comparing a call's keys and symbols with a remembered layout is
a pointer comparison per string; anything that differs in the slightest is
checked in full, so the cache can only skip a check whose answer it already
has. At most 64 layouts are kept (then the cache starts over); a reloaded
library starts empty.
]]
local LAYOUTS, LAYOUT_COUNT, MAX_LAYOUTS = {}, 0, 64

local function layout_known(keys, args, o, n)
  local known = LAYOUTS[keys[1]]
  if not known or known.n ~= n or known.strategy ~= args[o + 7] then return false end
  local k, s = known.keys, known.symbols
  for i = 2, n + 3 do
    if keys[i] ~= k[i] then return false end
  end
  for i = 1, n do
    if args[o + 2 + i * PER] ~= s[i] then return false end
  end
  return true
end

-- `layout_error`, skipped for a layout that passed it before.
local function checked_layout_error(keys, args, o, n)
  if layout_known(keys, args, o, n) then return nil end
  local err = layout_error(keys, args, o, n)
  if err then return err end
  if LAYOUT_COUNT >= MAX_LAYOUTS then LAYOUTS, LAYOUT_COUNT = {}, 0 end
  local k, s = {}, {}
  for i = 1, n + 3 do k[i] = keys[i] end
  for i = 1, n do s[i] = args[o + 2 + i * PER] end
  if not LAYOUTS[keys[1]] then LAYOUT_COUNT = LAYOUT_COUNT + 1 end
  LAYOUTS[keys[1]] = { n = n, strategy = args[o + 7], keys = k, symbols = s }
  return nil
end

-- Why the decision at offset o is unacceptable, or nil. A decision after
-- the call's first (at offset `first`) must be for the same strategy and
-- symbols, which `layout_error` checked against the keys.
local function decision_error(args, o, n, first)
  local seq = int_arg(args[o + 1])
  if not seq or seq == 0 then return 'seq must be a positive integer, got ' .. tostring(args[o + 1]) end
  if not int_arg(args[o + 2]) then return 'generated_at_ms must be an integer, got ' .. tostring(args[o + 2]) end
  if not int_arg(args[o + 3]) then return 'valid_until_ms must be an integer, got ' .. tostring(args[o + 3]) end
  local maxlen = int_arg(args[o + 4])
  if not maxlen or maxlen == 0 then return 'stream_maxlen must be a positive integer' end
  local model_id = args[o + 5]
  if not model_id or model_id == '' then return 'model_id is missing' end
  if not int_arg(args[o + 6]) then return 'model_version must be an integer' end
  if o ~= first then
    if args[o + 7] ~= args[first + 7] then
      return 'strategy ' .. tostring(args[o + 7]) .. ' differs from the first decision\'s ' .. args[first + 7]
    end
    for i = 1, n do
      local b = o + 1 + i * PER
      if args[b + 1] ~= args[first + 2 + i * PER] then
        return at(i, args[b + 1], 'symbol differs from the first decision\'s ' .. tostring(args[first + 2 + i * PER]))
      end
    end
  end
  for i = 1, n do
    local err = values_error(args, i, o + 1 + i * PER)
    if err then return err end
  end
  return nil
end

-- The stream entry's JSON object of the signal whose base is b.
local function signal_json(args, b)
  return '{"symbol":"' .. args[b + 1] .. '","side":"' .. args[b + 2] .. '","weight":' .. args[b + 3]
    .. ',"qty":' .. args[b + 4] .. ',"return_prob":' .. args[b + 5] .. ',"risk_score":' .. args[b + 6] .. '}'
end

--[[
Why the call's keys cannot all be written as the guard writes them, or
nil. Redis does not roll a function back: a write that fails leaves the
ones before it in place. So everything that could make a write fail is
checked here, before the first one: the ops, high-water-mark and signal
keys must be hashes (or absent), the stream key a stream (or absent), and
the stream must have room for new IDs (`XADD *` fails only when its last
generated ID is at the largest millisecond and sequence). After this,
HSET and PEXPIREAT cannot fail. `XADD *` is checked against the newest
entry, not the last generated ID (that one only `XINFO STREAM` gives, at
a price paid on every call); so `apply` appends the entries first: a first
`XADD` that fails leaves nothing behind. What remains is a stream whose
last generated ID was set by hand (`XSETID`) to the largest millisecond
with its newest entry deleted, and a call folding several decisions whose
first entry takes the very last ID: its later entries fail after the
first. That takes a deliberate `XSETID` on the stream.
]]
local STREAM_ID_END = '18446744073709551615-'
local function keys_error(keys, n)
  local call = redis.call
  local function wrong(i, want)
    local t = call('TYPE', keys[i])['ok']
    if t ~= want and t ~= 'none' then
      return 'key ' .. keys[i] .. ' holds a ' .. t .. ', not a ' .. want .. ': nothing was written'
    end
    return nil
  end
  local err = wrong(1, 'hash') or wrong(2, 'hash') or wrong(3, 'stream')
  if err then return err end
  for i = 4, n + 3 do
    err = wrong(i, 'hash')
    if err then return err end
  end
  local top = call('XREVRANGE', keys[3], '+', '-', 'COUNT', 1)[1]
  if top and string.sub(top[1], 1, #STREAM_ID_END) == STREAM_ID_END then
    return 'stream ' .. keys[3] .. ' has no stream IDs left after ' .. top[1] .. ': nothing was written'
  end
  return nil
end

--[[
Publishes the validated decisions at `offsets`, in order, as if each were
its own call, atomically: each is refused or accepted against Redis' clock,
the mode, the high-water marks and the signals the ones before it in this
call left. Every accepted decision gets its stream entry; the signal hashes,
their expiry and the high-water marks are written once, for the last
accepted decision, which is what consecutive calls would have left (no one
can observe the state between two decisions of one call).
The stream entries are appended first, each stamped with `written_at_us`:
Redis' clock at the write. Nothing of a call is visible to anyone before
the call returns (a function runs atomically), so the stamp is when the
decision became visible, short only of the call's own writes — what lets a
consumer, or a load test, tell pipeline latency from its own lag in
reading.
Reply per decision: {'ok', n} | {'expired', now_ms} | {'stale', symbol,
stored_seq} | {'halted', mode, symbol}.
]]
local function apply(keys, args, offsets, n)
  local call, first = redis.call, offsets[1]
  local now = now_ms()
  local symbols = {}
  for i = 1, n do symbols[i] = args[first + 2 + i * PER] end
  local stored = call('HMGET', keys[2], unpack(symbols))
  local hwm = {}
  -- The marks are usually all one value (the last decision's seq, one
  -- interned string): converted once, not 32 times (16 digits each).
  local prev, prev_n = nil, 0
  for i = 1, n do
    local s = stored[i]
    if s ~= prev then prev, prev_n = s, tonumber(s or '0') or 0 end
    hwm[i] = prev_n
  end
  local mode = call('HGET', keys[1], 'mode')
  if not MODES[mode] then mode = 'halted' end -- absent or unreadable: fail closed
  local replies, entries, last, cur = {}, {}, nil, nil
  for d, o in ipairs(offsets) do
    local seq, reply = tonumber(args[o + 1]), nil
    if tonumber(args[o + 3]) <= now then reply = { 'expired', now } end
    for i = 1, n do
      if reply then break end
      if hwm[i] >= seq then reply = { 'stale', symbols[i], hwm[i] } end
    end
    if not reply and mode == 'halted' then reply = { 'halted', mode, '' } end
    if not reply and mode ~= 'active' then
      -- reduce_only compares with the current signal: the stored one, or
      -- the one an earlier decision of this call left.
      if mode == 'reduce_only' and not cur then
        cur = {}
        for i = 1, n do cur[i] = current_weight(keys[3 + i], now) end
      end
      for i = 1, n do
        local b = o + 1 + i * PER
        local weight = tonumber(args[b + 3])
        if mode == 'flatten' and args[b + 2] ~= 'flat' then reply = { 'halted', mode, symbols[i] } break end
        if mode == 'reduce_only' then
          local grows = math.abs(weight) > math.abs(cur[i])
          local flips = weight ~= 0 and (weight > 0) ~= (cur[i] > 0)
          if grows or flips then reply = { 'halted', mode, symbols[i] } break end
        end
      end
    end
    if not reply then
      local json = {}
      for i = 1, n do
        hwm[i] = seq
        local b = o + 1 + i * PER
        if cur then cur[i] = tonumber(args[b + 3]) end
        json[i] = signal_json(args, b)
      end
      entries[#entries + 1] = { o, '[' .. table.concat(json, ',') .. ']' }
      last, reply = o, { 'ok', n }
    end
    replies[d] = reply
  end
  if last then
    -- The stream entries first: an `XADD *` is the one write whose failure
    -- `keys_error` cannot rule out entirely (see there), and the first
    -- write of a call that fails leaves nothing behind.
    local written = now_us_string()
    for _, e in ipairs(entries) do
      local o = e[1]
      call('XADD', keys[3], 'MAXLEN', '~', args[o + 4], '*',
        'strategy', args[o + 7], 'seq', args[o + 1], 'model_id', args[o + 5], 'model_version', args[o + 6],
        'generated_at_ms', args[o + 2], 'valid_until_ms', args[o + 3], 'n', n,
        'signals', e[2], 'written_at_us', written)
    end
    local s_seq, model_id, model_version = args[last + 1], args[last + 5], args[last + 6]
    local s_gen, s_valid = args[last + 2], args[last + 3]
    local marks = {}
    for i = 1, n do
      local b, key = last + 1 + i * PER, keys[3 + i]
      call('HSET', key,
        'seq', s_seq, 'side', args[b + 2], 'weight', args[b + 3], 'qty', args[b + 4],
        'return_prob', args[b + 5], 'risk_score', args[b + 6],
        'model_id', model_id, 'model_version', model_version,
        'generated_at_ms', s_gen, 'valid_until_ms', s_valid)
      call('PEXPIREAT', key, s_valid)
      marks[2 * i - 1] = symbols[i]
      marks[2 * i] = s_seq
    end
    call('HSET', keys[2], unpack(marks))
  end
  return replies
end

--[[
KEYS: ops, hwm, stream, sig_1 .. sig_n
ARGV: one decision (seq, generated_at_ms, valid_until_ms, stream_maxlen,
      model_id, model_version, strategy, then per signal: symbol, side,
      weight, qty, return_prob, risk_score)
Reply: {'ok', n} | {'expired', now_ms} | {'stale', symbol, stored_seq}
     | {'halted', mode, symbol}; errors: BADINPUT <what>
Everything is validated before the first write: the arguments, the keys'
layout, and the keys' types (`keys_error`), so an error never leaves a
half-written call.
]]
local function publish(keys, args)
  local n = #keys - 3
  if n > MAX_SIGNALS then return bad('at most ' .. MAX_SIGNALS .. ' signals per call, got ' .. n) end
  if n >= 1 and #args ~= HEAD + PER * n then
    return bad(string.format('expected %d signal fields for %d signal keys, got %d', PER * n, n, #args - HEAD))
  end
  local err = decision_error(args, 0, n, 0) or checked_layout_error(keys, args, 0, n) or keys_error(keys, n)
  if err then return bad(err) end
  return apply(keys, args, { 0 }, n)[1]
end

--[[
Several decisions of one strategy, for the same symbols, in one call: what
a publisher sends when decisions queue up. The signal hashes are written
once per call instead of once per decision.
KEYS: as `publish`.
ARGV: count, then `count` decision blocks as `publish`'s ARGV, seq
      increasing.
Reply: one reply per decision, in order: `publish`'s replies, and
{'bad_input', what} for a malformed decision, which writes nothing (the
others go on, as separate calls would). Error BADINPUT <what> when the call
itself is malformed (keys, counts, the first decision's strategy or
symbols): nothing is written.
]]
local function publish_many(keys, args)
  local count, n = int_arg(args[1]), #keys - 3
  if n > MAX_SIGNALS then return bad('at most ' .. MAX_SIGNALS .. ' signals per call, got ' .. n) end
  if not count or count == 0 then return bad('count must be a positive integer, got ' .. tostring(args[1])) end
  if n < 1 then return bad(NEED_KEYS) end
  local size = HEAD + PER * n
  if #args ~= 1 + count * size then
    return bad(string.format('expected %d decisions of %d fields for %d signal keys, got %d fields',
      count, size, n, #args - 1))
  end
  local err = checked_layout_error(keys, args, 1, n)
  if err then return bad('decision 1: ' .. err) end
  err = keys_error(keys, n)
  if err then return bad(err) end
  local replies, offsets, positions = {}, {}, {}
  for d = 1, count do
    local o = 1 + (d - 1) * size
    err = decision_error(args, o, n, 1)
    if err then
      replies[d] = { 'bad_input', err }
    else
      offsets[#offsets + 1], positions[#positions + 1] = o, d
    end
  end
  if #offsets > 0 then
    local applied = apply(keys, args, offsets, n)
    for k, d in ipairs(positions) do replies[d] = applied[k] end
  end
  return replies
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

Only a Redis user that may write the strategy's mode-writer key
(`ns:{S}:mode_writer`, never written) may change a mode: the daemon's user
must be able to write the ops key (it is a declared key of the publish
call, and Redis asks write access of every key a function declares), so
the key's own permission cannot tell the control plane from the daemon.
(`mlcore_contract::acl` grants the mode-writer key to the control plane
alone.)
]]
local function set_mode(keys, args)
  local writer = string.gsub(keys[1], ':ops$', ':mode_writer')
  if writer == keys[1] or not redis.acl_check_cmd('HSET', writer, 'f', 'v') then
    return redis.error_reply('NOPERM this Redis user may not change ops modes (no write access to ' .. writer .. ')')
  end
  local expected = int_arg(args[1])
  if not expected then return bad('expected_version must be a non-negative integer') end
  if not MODES[args[2]] then return bad('mode must be active, reduce_only, halted or flatten, got ' .. tostring(args[2])) end
  for i, name in ipairs({ 'reason', 'actor', 'request_id', 'strategy', 'events_channel' }) do
    if not args[i + 2] or args[i + 2] == '' then return bad(name .. ' is missing') end
  end
  local t = redis.call('TYPE', keys[1])['ok']
  if t ~= 'hash' and t ~= 'none' then
    return bad('key ' .. keys[1] .. ' holds a ' .. t .. ', not a hash: nothing was written')
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

--[[
A one-time code (TOTP) step spent by a principal, once: both the control
plane's API and break-glass record here what each principal used, so a
code cannot be replayed on either, nor after a restart.
KEYS: the steps hash (`ns:second_factor`)
ARGV: principal, step
Reply: {'ok'} | {'replayed', newest_step_used}
]]
local function spend_code(keys, args)
  local step = int_arg(args[2])
  if not args[1] or args[1] == '' then return bad('principal is missing') end
  if not step then return bad('step must be a non-negative integer') end
  local t = redis.call('TYPE', keys[1])['ok']
  if t ~= 'hash' and t ~= 'none' then
    return bad('key ' .. keys[1] .. ' holds a ' .. t .. ', not a hash: nothing was written')
  end
  local used = tonumber(redis.call('HGET', keys[1], args[1]) or '-1') or -1
  if step <= used then return { 'replayed', used } end
  redis.call('HSET', keys[1], args[1], step)
  return { 'ok' }
end

local function info(keys, args)
  return { 'mlcore_guard', VERSION, REVISION }
end

redis.register_function { function_name = 'mlcore_publish_v2', callback = publish }
redis.register_function { function_name = 'mlcore_publish_many_v2', callback = publish_many }
redis.register_function { function_name = 'mlcore_read_v2', callback = read, flags = { 'no-writes' } }
redis.register_function { function_name = 'mlcore_set_mode_v2', callback = set_mode }
redis.register_function { function_name = 'mlcore_spend_code_v2', callback = spend_code }
redis.register_function { function_name = 'mlcore_info_v2', callback = info, flags = { 'no-writes' } }
