#!lua name=mlcore_guard_v3
--[[
ml-assets-core signal guard, contract version 3: one snapshot per strategy,
binary signal records.

v2 wrote 32 hashes of 12 fields, 32 expiries and per-symbol high-water
marks per decision, and checked every number's text with Lua patterns: most
of a decision's cost in Redis was that bookkeeping, not the bytes. v3 pays
per decision:

- the decision's signals travel as one binary string of fixed 24-byte
  records (weight f64, qty f64, return_prob f32, risk_score f32,
  little-endian; the side is the weight's sign, so it cannot disagree with
  it), decoded by Redis' built-in C `struct` library in one call;
  the symbols travel as one comma-separated string, checked once per
  layout (the daemon sends the same one every time);
- one hash per strategy, the snapshot (`{S}:v3:snap`), holds the newest
  accepted decision whole (7 fields, rewritten together, so nothing of an
  older decision survives in it) and expires at the decision's
  `valid_until_ms` (Redis' own expiry: a plain HGETALL cannot read an
  expired snapshot either);
- one high-water mark per strategy (`{S}:v3:seq`, persistent): a decision
  carries all of its strategy's symbols, so ordering per strategy is
  ordering per symbol;
- one stream entry per accepted decision (`{S}:v3:signals`).

Every guarantee of v2 holds: ordering with a persistent high-water mark
(taken over from v2's marks on the first v3 call), `valid_until` checked
against Redis' clock, ops modes enforced here and fail-closed, every check
before the first write (all or nothing), refusals as readable replies.
Function names carry the version; this library is loaded beside
`mlcore_guard_v2` during the migration (docs/redis-contract.md).
]]

local VERSION = 3
local REVISION = 1
local MODES = { active = true, reduce_only = true, halted = true, flatten = true }
local RECORD = 24
local FIELDS = 4
local MAX_INT = 9007199254740992 -- 2^53
local MAX_SIGNALS = 1024
local MAX_DECISIONS = 64
local HEAD = 4 -- strategy, symbols, stream_maxlen, count
local PER = 6  -- seq, generated_at_ms, valid_until_ms, model_id, model_version, records
local NKEYS = 5

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function bad(what)
  return redis.error_reply('BADINPUT ' .. what)
end

-- A non-negative integer in canonical decimal, or nil.
local function int_arg(s)
  local find, byte = string.find, string.byte
  if type(s) ~= 'string' or #s > 16 or not find(s, '^%d+$') or (#s > 1 and byte(s, 1) == 48) then return nil end
  local n = tonumber(s)
  if n == nil or n > MAX_INT then return nil end
  return n
end

-- struct formats by signal count.
local FORMATS = {}
local function format_for(n)
  local f = FORMATS[n]
  if not f then
    f = '<' .. string.rep('ddff', n)
    FORMATS[n] = f
  end
  return f
end

--[[
Symbol lists that passed the check, by the list string itself: Lua interns
strings, so the daemon's list (the same every call) is found by one table
lookup. Holds at most 64 lists, then starts over.
]]
local LISTS, LIST_COUNT = {}, 0

-- The symbols of `list` as an array, or nil and why.
local function symbols_of(list)
  local known = LISTS[list]
  if known then return known end
  if type(list) ~= 'string' or list == '' then return nil, 'symbols are missing' end
  local out, seen = {}, {}
  for s in string.gmatch(list .. ',', '([^,]*),') do
    if #s == 0 or #s > 16 or not string.find(s, '^[A-Z0-9%._]+$') then
      return nil, 'symbol ' .. #out + 1 .. ' (' .. s .. ') must be 1-16 characters of A-Z, 0-9, . or _'
    end
    if seen[s] then return nil, 'symbol ' .. s .. ' appears twice' end
    seen[s] = true
    out[#out + 1] = s
  end
  if #out > MAX_SIGNALS then return nil, 'at most ' .. MAX_SIGNALS .. ' signals per decision, got ' .. #out end
  if LIST_COUNT >= 64 then LISTS, LIST_COUNT = {}, 0 end
  LISTS[list], LIST_COUNT = out, LIST_COUNT + 1
  return out
end

-- Why the keys are not strategy's v3 keys, or nil.
local function keys_layout_check(keys, strategy)
  if #keys ~= NKEYS then return 'need the ops, snapshot, seq, stream and v2 hwm keys (' .. NKEYS .. '), got ' .. #keys end
  local tag = '{' .. strategy .. '}'
  if keys[1]:sub(-#tag - 4) ~= tag .. ':ops' then return 'ops key ' .. keys[1] .. ' is not strategy ' .. strategy .. "'s" end
  local base = keys[1]:sub(1, -5)
  if keys[2] ~= base .. ':v3:snap' or keys[3] ~= base .. ':v3:seq' or keys[4] ~= base .. ':v3:signals'
      or keys[5] ~= base .. ':hwm' then
    return 'snapshot/seq/stream/hwm keys do not match ' .. base
  end
  return nil
end

--[[
`keys_layout_check`, skipped for a layout that passed it before: the
daemon sends the same keys every call, and Lua interns strings, so the
comparison is a pointer compare per key (anything different is checked in
full). At most 64 layouts are kept.
]]
local KEYS_OK, KEYS_COUNT = {}, 0
local function keys_layout_error(keys, strategy)
  local known = KEYS_OK[keys[1]]
  if known and #keys == NKEYS and known[1] == strategy and known[2] == keys[2] and known[3] == keys[3]
      and known[4] == keys[4] and known[5] == keys[5] then
    return nil
  end
  local err = keys_layout_check(keys, strategy)
  if err then return err end
  if KEYS_COUNT >= 64 then KEYS_OK, KEYS_COUNT = {}, 0 end
  KEYS_OK[keys[1]], KEYS_COUNT = { strategy, keys[2], keys[3], keys[4], keys[5] }, KEYS_COUNT + 1
  return nil
end

-- What is wrong with a record's values, or nil.
local function value_error(w, q, p, r)
  if w - w ~= 0 then return 'weight must be finite' end
  if q - q ~= 0 then return 'qty must be finite' end
  if not (p >= 0 and p <= 1) then return 'return_prob must be in [0, 1], got ' .. tostring(p) end
  if r - r ~= 0 then return 'risk_score must be finite' end
  return nil
end

--[[
Decodes and checks decision d's records: the values array, or nil and why.
The common case costs one pass of a few operations per signal: `x * 0` is 0
for a finite x and NaN otherwise, so one sum tells whether every weight,
qty and risk score is finite (no overflow: each term is 0 or NaN); the
probabilities are compared as they come. Only a decision that fails is
walked again, to name the signal and the field.
]]
local function records_of(records, n, d, symbols)
  if type(records) ~= 'string' or #records ~= RECORD * n then
    return nil, 'decision ' .. d .. ': records must be ' .. RECORD * n .. ' bytes for ' .. n .. ' symbols, got '
      .. (type(records) == 'string' and #records or 'none')
  end
  local v = { struct.unpack(format_for(n), records) }
  local nonfinite, range = 0, true
  for b = 1, FIELDS * n, FIELDS do
    local p = v[b + 2]
    nonfinite = nonfinite + v[b] * 0 + v[b + 1] * 0 + v[b + 3] * 0
    range = range and p >= 0 and p <= 1
  end
  if nonfinite == 0 and range then return v end
  for i = 1, n do
    local b = (i - 1) * FIELDS
    local why = value_error(v[b + 1], v[b + 2], v[b + 3], v[b + 4])
    if why then return nil, 'decision ' .. d .. ', signal ' .. i .. ' (' .. symbols[i] .. '): ' .. why end
  end
  return v
end

-- Why decision d's header (at offset o) is unacceptable, or nil.
local function header_error(args, o, d)
  local seq = int_arg(args[o + 1])
  if not seq or seq == 0 then return 'decision ' .. d .. ': seq must be a positive integer, got ' .. tostring(args[o + 1]) end
  if not int_arg(args[o + 2]) then return 'decision ' .. d .. ': generated_at_ms must be an integer' end
  if not int_arg(args[o + 3]) then return 'decision ' .. d .. ': valid_until_ms must be an integer' end
  if not args[o + 4] or args[o + 4] == '' then return 'decision ' .. d .. ': model_id is missing' end
  if not int_arg(args[o + 5]) then return 'decision ' .. d .. ': model_version must be an integer' end
  return nil
end

--[[
Every check runs before the first write (Redis does not roll a function
back), at the price of as few calls as possible — from Lua each costs
about as much as a small command: the reads a decision needs anyway prove
their keys' types (a read of the wrong type fails, caught, before anything
is written): `HGET` the ops hash, `GET` the mark, `HVALS` v2's marks (first
call only). The snapshot is only written, so its type is asked (`TYPE`).
The stream's first `XADD` is the call's first write: if it fails (a key of
another type, no IDs left) nothing was written. Only a call folding several
decisions asks for the stream's newest ID first, so that its later entries
cannot fail after the first (short of an `XSETID` by hand to the very last
ID, as in v2).
]]
local STREAM_ID_END = '18446744073709551615-'

local function failed(r) return type(r) == 'table' and r.err ~= nil end

local function wrong_type(key, want)
  return 'key ' .. key .. ' does not hold a ' .. want .. ': nothing was written'
end

-- The state a call is judged against: Redis' clock (ms, and µs as the
-- stream's stamp), the mode, the high-water mark; or nil and why.
local function read_state(keys, count)
  local pcall = redis.pcall
  local t = pcall('TIME')
  local mode = pcall('HGET', keys[1], 'mode')
  if failed(mode) then return nil, wrong_type(keys[1], 'hash') end
  local mark = pcall('GET', keys[3])
  if failed(mark) then return nil, wrong_type(keys[3], 'string') end
  -- A mark that is not a number fails closed: nothing is written.
  local garbled = function(key) return 'key ' .. key .. ' holds a high-water mark that is not a number: nothing was written' end
  local hwm
  if mark then
    hwm = tonumber(mark)
    if not hwm then return nil, garbled(keys[3]) end
  else
    -- The first v3 call takes over the highest of v2's per-symbol marks,
    -- so a migration cannot let an old decision in.
    local v2 = pcall('HVALS', keys[5])
    if failed(v2) then return nil, wrong_type(keys[5], 'hash') end
    hwm = 0
    for _, v in ipairs(v2) do
      local n = tonumber(v)
      if not n then return nil, garbled(keys[5]) end
      if n > hwm then hwm = n end
    end
  end
  local snap = pcall('TYPE', keys[2])['ok']
  if snap ~= 'hash' and snap ~= 'none' then return nil, wrong_type(keys[2], 'hash') end
  if count > 1 then
    local top = pcall('XREVRANGE', keys[4], '+', '-', 'COUNT', 1)
    if failed(top) then return nil, wrong_type(keys[4], 'stream') end
    if top[1] and string.sub(top[1][1], 1, #STREAM_ID_END) == STREAM_ID_END then
      return nil, 'stream ' .. keys[4] .. ' has no stream IDs left after ' .. top[1][1] .. ': nothing was written'
    end
  end
  if not MODES[mode] then mode = 'halted' end -- absent or unreadable: fail closed
  return {
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
    written = t[1] .. string.format('%06d', tonumber(t[2])),
    mode = mode,
    hwm = hwm,
  }
end

-- The current weights of `symbols` from the snapshot (0 where none, or
-- when the snapshot is no longer valid): what reduce_only compares with.
local function current_weights(keys, symbols, now)
  local h = redis.call('HMGET', keys[2], 'valid_until_ms', 'symbols', 'records')
  local cur = {}
  for i = 1, #symbols do cur[i] = 0 end
  if not h[1] or tonumber(h[1]) <= now or not h[2] or not h[3] then return cur end
  local stored = symbols_of(h[2])
  if not stored or #h[3] ~= RECORD * #stored then return cur end
  local v = { struct.unpack(format_for(#stored), h[3]) }
  local by_symbol = {}
  for i, s in ipairs(stored) do by_symbol[s] = v[(i - 1) * FIELDS + 1] end
  for i, s in ipairs(symbols) do cur[i] = by_symbol[s] or 0 end
  return cur
end

--[[
KEYS: ops, snapshot, seq, stream, v2 hwm (all of one strategy)
ARGV: strategy, symbols (comma-separated), stream_maxlen, count, then
      `count` decisions, seq increasing: seq, generated_at_ms,
      valid_until_ms, model_id, model_version, records
Reply: for one decision (count 1) its reply, for several a list of one per
decision, in order (v2's `publish` and `publish_many` shapes): {'ok', n}
| {'expired', now_ms} | {'stale', '', stored_seq} | {'halted', mode, symbol}.
Error BADINPUT <what> when anything is malformed: nothing is written.
Decisions are judged in order as separate calls would be; the snapshot and
the mark are written once, for the last accepted one.
]]
local function publish(keys, args)
  local strategy, list = args[1], args[2]
  if not strategy or strategy == '' then return bad('strategy is missing') end
  local err = keys_layout_error(keys, strategy)
  if err then return bad(err) end
  local symbols, why = symbols_of(list)
  if not symbols then return bad(why) end
  local n = #symbols
  local maxlen = int_arg(args[3])
  if not maxlen or maxlen == 0 then return bad('stream_maxlen must be a positive integer') end
  local count = int_arg(args[4])
  if not count or count == 0 or count > MAX_DECISIONS then
    return bad('count must be 1-' .. MAX_DECISIONS .. ', got ' .. tostring(args[4]))
  end
  if #args ~= HEAD + PER * count then
    return bad(string.format('expected %d decisions of %d fields, got %d fields', count, PER, #args - HEAD))
  end
  local values = {}
  for d = 1, count do
    local o = HEAD + (d - 1) * PER
    err = header_error(args, o, d)
    if err then return bad(err) end
    values[d], why = records_of(args[o + 6], n, d, symbols)
    if not values[d] then return bad(why) end
  end
  local state
  state, err = read_state(keys, count)
  if not state then return bad(err) end

  local call = redis.call
  local now, mode, hwm = state.now, state.mode, state.hwm
  local replies, accepted, cur = {}, {}, nil
  for d = 1, count do
    local o = HEAD + (d - 1) * PER
    local v, seq, reply = values[d], tonumber(args[o + 1]), nil
    if tonumber(args[o + 3]) <= now then reply = { 'expired', now }
    elseif seq <= hwm then reply = { 'stale', '', hwm }
    elseif mode == 'halted' then reply = { 'halted', mode, '' }
    elseif mode == 'flatten' then
      for i = 1, n do
        if v[(i - 1) * FIELDS + 1] ~= 0 then reply = { 'halted', mode, symbols[i] } break end
      end
    elseif mode == 'reduce_only' then
      cur = cur or current_weights(keys, symbols, now)
      for i = 1, n do
        local w, c = v[(i - 1) * FIELDS + 1], cur[i]
        if math.abs(w) > math.abs(c) or (w ~= 0 and (w > 0) ~= (c > 0)) then
          reply = { 'halted', mode, symbols[i] }
          break
        end
      end
    end
    if not reply then
      hwm = seq
      if cur then
        for i = 1, n do cur[i] = v[(i - 1) * FIELDS + 1] end
      end
      accepted[#accepted + 1] = o
      reply = { 'ok', n }
    end
    replies[d] = reply
  end
  if #accepted > 0 then
    -- Stream entries first: a first write that fails leaves nothing
    -- behind (`read_state`).
    for k, o in ipairs(accepted) do
      local r = redis.pcall('XADD', keys[4], 'MAXLEN', '~', maxlen, '*',
        'strategy', strategy, 'seq', args[o + 1], 'model_id', args[o + 4], 'model_version', args[o + 5],
        'generated_at_ms', args[o + 2], 'valid_until_ms', args[o + 3], 'symbols', list,
        'records', args[o + 6], 'written_at_us', state.written)
      if failed(r) then
        if k == 1 then return bad('stream ' .. keys[4] .. ': ' .. r.err .. ': nothing was written') end
        return redis.error_reply(r.err)
      end
    end
    local o = accepted[#accepted]
    call('HSET', keys[2], 'seq', args[o + 1], 'generated_at_ms', args[o + 2], 'valid_until_ms', args[o + 3],
      'model_id', args[o + 4], 'model_version', args[o + 5], 'symbols', list, 'records', args[o + 6])
    call('PEXPIREAT', keys[2], args[o + 3])
    call('SET', keys[3], args[o + 1])
  end
  if count == 1 then return replies[1] end
  return replies
end

-- The shortest decimal that reads back as `x`.
local function number(x)
  for _, f in ipairs({ '%.15g', '%.16g', '%.17g' }) do
    local s = string.format(f, x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end

--[[
KEYS: snapshot. ARGV: symbol.
Reply: the symbol's signal as a flat field/value array (seq, side, weight,
qty, return_prob, risk_score, model_id, model_version, generated_at_ms,
valid_until_ms — v2's fields) while the snapshot is valid, else nil; nil
too for a symbol the snapshot does not hold.
]]
local function read(keys, args)
  local h = redis.call('HMGET', keys[1], 'seq', 'generated_at_ms', 'valid_until_ms', 'model_id', 'model_version',
    'symbols', 'records')
  if not h[1] or not h[3] or (tonumber(h[3]) or 0) <= now_ms() then return false end
  local symbols = symbols_of(h[6])
  if not symbols or not h[7] or #h[7] ~= RECORD * #symbols then return false end
  for i, s in ipairs(symbols) do
    if s == args[1] then
      local w, q, p, r = struct.unpack('<ddff', h[7], (i - 1) * RECORD + 1)
      local side = (w > 0 and 'long') or (w < 0 and 'short') or 'flat'
      return { 'seq', h[1], 'side', side, 'weight', number(w), 'qty', number(q),
        'return_prob', number(p), 'risk_score', number(r), 'model_id', h[4], 'model_version', h[5],
        'generated_at_ms', h[2], 'valid_until_ms', h[3] }
    end
  end
  return false
end

--[[
KEYS: ops
ARGV: expected_version, mode, reason, actor, request_id, strategy, events_channel
Reply: {'ok', new_version} | {'conflict', current_version}
As v2's: only a user that may write the strategy's mode-writer key.
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
KEYS: the steps hash. ARGV: principal, step.
Reply: {'ok'} | {'replayed', newest_step_used}. As v2's.
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

redis.register_function { function_name = 'mlcore_publish_v3', callback = publish }
redis.register_function { function_name = 'mlcore_read_v3', callback = read, flags = { 'no-writes' } }
redis.register_function { function_name = 'mlcore_set_mode_v3', callback = set_mode }
redis.register_function { function_name = 'mlcore_spend_code_v3', callback = spend_code }
redis.register_function { function_name = 'mlcore_info_v3', callback = info, flags = { 'no-writes' } }
