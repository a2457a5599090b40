-- Record operations of stockstore's Redis stores, each atomic on the server.
--
-- User values are never decoded here (Redis' cmsgpack is lossy): a record is opaque
-- bytes behind a 25-byte header: the big-endian version (8 bytes), 'E' if the record
-- expires or 'N' if it never does (1), the expiry in epoch ms (8, signed; 0 after 'N'),
-- and the stamp of the server run that filled it into a cache tier (8; zeros: a
-- source's write).  "Never" has a flag of its own: every expiry, 0 too, is a time.
-- Layout 'm' stores header .. payload as a string; layout 'h' a hash whose field "\255"
-- holds header .. class tag and whose other fields are the encoded attributes.  A
-- header alone is a tombstone: it keeps its version so that older fills are refused.
-- Both layouts may share a namespace: a key of the other layout's type is read (and
-- overwritten, deleted, listed) as a record of that layout; only a key that is neither
-- type is foreign, and its reply names it (an error reply for that record alone).
--
-- One call handles many records: KEYS, one per record (on a cluster all in one slot).
-- ARGV  1 layout 'm'|'h', or 'H': 'h' with each record's fields staged (see stage_key);
--       followed by '+' on a single server (not a cluster): the family's mark is kept (see MARK)
--       2 mode   3 now (ms, the client's clock)   4 key prefix
--       5 number of alternate keys ('r': the alternate key's index), then per record:
--       the expected version bytes (modes 'c' and 'p') or the fill token ('F'), one
--       pointer key per alternate key ('' where unset; modes 'w', 'c', 'p', 'f', 'F'),
--       and the body ('d', 'l', 'g' and 'r': none): layout 'm' one value; 'h' their
--       number, the meta field, then attribute field / value pairs; 'H' (whole records
--       only: 'w', 'c', 'f', 'F') the meta field alone, all fields waiting staged.  A body starts with
--       its header: the record's version and expiry are read from there, and the
--       record's key part from KEYS.
-- modes 'w' write   'c' write if the version is still the expected one   'p' as 'c',
--       writing only the given fields ('h')   'f' fill if newer   'F' as 'f', only while
--       the record's fill token is the one given (it is used up)   'i' tombstone (body:
--       its header)   'd' delete   'l' is it live   'g' get   'r' resolve: KEYS are pointers
-- Fill tokens: a chain watches a key it missed here (the client SETs the token key with
-- a PX) before it reads below; 'f', 'i' and 'd' take the token away, and so do an
-- eviction or a restart, which lose it with the data: a late 'F' never lands then.
-- reply per record: 1 and the stored version | 0 refused (not newer, or changed since
--       read) | -1 an alternate key is held by another live record; 'l' 1 if it is live,
--       'd' 1 if it was (with '+': one number, how many of the call's were); 'g' the value
--       (a string) or the fields (a hash), whichever layout
--       holds it, or false, also for a copy of another server run;
--       'r' the holder's key part or false;
--       every mode: an error 'FOREIGN <type> <key>' for a key of neither layout's type

local layout, mode, now, prefix = string.sub(ARGV[1], 1, 1), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local solo = string.sub(ARGV[1], 2) == '+'
-- Staged: the client sends, in one MULTI/EXEC with this call last, a DEL of the staging
-- keys and an HSET of each record's whole hash (meta field and attributes) to its staging
-- key (stage_key); a record written RENAMEs its staging key over its own (one step,
-- whatever it held), one refused drops it.
-- The fields go to Redis as plain HSETs, never through Lua's ARGV, and the transaction
-- keeps the write as atomic as the script alone: a reader sees the old record or the new.
local staged = layout == 'H'
if staged then layout = 'h' end
local nalt = tonumber(ARGV[5])
-- Indexes (families declaring __stockstore_indexes__; nidx 0 costs nothing): ARGV 6 is
-- their number, then each attribute's name as spelled in key names.  Keys, all under the
-- record prefix (so in the family's hash slot on a cluster):
--   i:z:<attr>  zset, every score 0: member V .. K, V the attribute's value in an
--               order-keeping byte form (stockstore.backends.redis: index_value), K the
--               record's encoded primary key; ZRANGE BYLEX answers every filter
--   i:v:<attr>  hash K -> V: what a record holds now, so a write removes its old entries
--   i:k         hash <key part> -> K        i:a  zset of every K (score 0: key order)
--   i:e         zset <key part> by expiry (epoch ms): a query drops what has expired
--   i:m         hash <attr> -> 1: the indexes built (see reindex in the client)
-- Every write mode that stores a record ('w' 'c' 'p' 'f' 'F') takes, after the body, K
-- and nidx values V ('' where the record is in no index of that attribute).
local nidx = tonumber(ARGV[6] or '0') or 0
local IZ, IV = {}, {}
for j = 1, nidx do
  IZ[j] = prefix .. 'i:z:' .. ARGV[6 + j]
  IV[j] = prefix .. 'i:v:' .. ARGV[6 + j]
end
local IK, IA, IE = prefix .. 'i:k', prefix .. 'i:a', prefix .. 'i:e'
local META = '\255'
local HEADER = 25
local EXPIRES, NEVER = 'E', 'N'

-- Lua's numbers are doubles: big-endian integers of 8 bytes, read in halves, exact below
-- 2^53 (versions are, and the client writes no expiry beyond +-(2^53 - 1)).
local function u32(s, at)
  local a, b, c, d = string.byte(s, at, at + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

local function u64(s, at)
  return u32(s, at) * 4294967296 + u32(s, at + 4)
end

local function i64(s, at)
  local high = u32(s, at)
  if high >= 2147483648 then high = high - 4294967296 end
  return high * 4294967296 + u32(s, at + 4)
end

-- A header's expiry: epoch ms, or nil when it never expires.
local function expiry(h)
  if string.sub(h, 9, 9) == EXPIRES then return i64(h, 10) end
  return nil
end

local function be64(n)
  local out = {}
  for i = 8, 1, -1 do
    out[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(out)
end

-- This server run: the first 8 bytes of its run_id, which every restart changes.  A copy
-- filled into a cache tier carries it, so a copy from before a restart (an old snapshot,
-- or a replica promoted before it had every write) is never taken for a current one.
local run
local function boot()
  if not run then
    local id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
    run = string.gsub(string.sub(id, 1, 16), '%x%x', function(x) return string.char(tonumber(x, 16)) end)
  end
  return run
end
local SOURCE = string.rep('\0', 8)  -- the stamp of what a source of truth writes: always current

-- The family's mark (single servers only: on a cluster it would be in another hash slot
-- than the records).  '1' says every record key of the family holds a live record: none
-- is a tombstone, a fill (a cache tier's copy, of this run or an earlier one) or a record
-- that expires, and no fill token is held.  Listing and deleting then need no header.
-- Every write of such a thing deletes the mark first, in the same call (the client does
-- so too before its own SETs of tokens and expiring records), and an eviction or a flush
-- only loses it.  The client sets it (mode 'P') only where it found the family empty
-- while a nonce of its own stood in the mark, untouched.
local MARK = prefix .. 'p'
local unmarked = false
local function unmark()
  if solo and not unmarked then
    redis.call('DEL', MARK)
    unmarked = true
  end
end

local function pure()
  return solo and redis.call('GET', MARK) == '1'
end

local OTHER = layout == 'm' and 'h' or 'm'
local TYPES = {m = 'string', h = 'hash'}


-- The first HEADER + 1 bytes of a record held in layout `as` (see head), or the error
-- Redis answers for a key of another type.
local function head_as(name, as)
  if as == 'm' then return redis.pcall('GETRANGE', name, 0, HEADER) end
  local meta = redis.pcall('HGET', name, META)
  if type(meta) == 'table' then return meta end
  return string.sub(meta or '', 1, HEADER + 1)
end

-- The first HEADER + 1 stored bytes: '' when missing, a header alone for a tombstone,
-- one byte more for a record; and whether the other layout holds it.  The key's TYPE
-- is asked only when this layout's command meets another type.  A key of neither
-- layout's type: nil and its type.
local function head(name)
  local h = head_as(name, layout)
  if type(h) == 'string' then return h, false end
  local kind = redis.call('TYPE', name)['ok']
  if kind == TYPES[OTHER] then return head_as(name, OTHER), true end
  return nil, kind
end

-- Whether a header is of this run (or of the source of truth's own writes).
local function current(h)
  local stamp = string.sub(h, 18, 25)
  return stamp == SOURCE or stamp == boot()
end

-- A record (not a tombstone) of this run that has not expired: its flag says 'N', or
-- 'E' and a time still to come (any other flag is not a stockstore header: not live).
local function live(h)
  if not h or #h <= HEADER or not current(h) then return false end
  local flag = string.sub(h, 9, 9)
  return flag == NEVER or (flag == EXPIRES and i64(h, 10) > now)
end

local MAX_VERSION = 2 ^ 62  -- as the client's: a larger one is not a stockstore header, and counts for nothing

local function version(h)
  if #h < HEADER then return 0 end
  local v = u64(h, 1)
  if v > MAX_VERSION then return 0 end
  return v
end

-- Redis expires keys by its own clock: hand it the time left by the client's clock, so
-- clock skew between them moves when Redis frees memory, never what a read returns.
local function ttl(expires)
  return string.format('%d', math.max(1, expires - now))
end

-- Does the live record `holder` hold pointer `ptr` as its alternate key `index`?
local function holds(holder, index, ptr)
  return live(head(prefix .. 'r:' .. holder)) and redis.call('HGET', prefix .. 'x:' .. holder, index) == ptr
end

-- Drop the pointers `owner` holds, and its list of them.
local function free(owner)
  local list = prefix .. 'x:' .. owner
  local held = redis.call('HGETALL', list)
  for i = 2, #held, 2 do
    if redis.call('GET', held[i]) == owner then redis.call('DEL', held[i]) end
  end
  redis.call('DEL', list)
end

-- The record being handled, set for each one by the loop at the end (upvalues of the
-- functions below, so that no closure is made per record): its key, key part, version
-- and expiry (from the body's header; nil: never), and where its pointers and body are in ARGV.
local key, me, v, expires, ptrs, body, last, idx, stamped
-- A fill's (mode 'f') token keys, deleted together once the call's records are handled.
local used = {}

-- The fill token's key, in the record's hash slot: the family's tag where it has one, else
-- the record's whole name as the tag (names hold no braces; stockstore.backends.redis: token_key).
local TAGGED = string.find(prefix, '{', 1, true) ~= nil
local function token_key()
  if TAGGED then return prefix .. 't:' .. me end
  return prefix .. 't:{' .. key .. '}'
end

-- Where a staged write's fields wait, in the record's hash slot as the token is
-- (stockstore.backends.redis: _stage_key).
local function stage_key()
  if TAGGED then return prefix .. 's:' .. me end
  return prefix .. 's:{' .. key .. '}'
end

-- The reply for a key of neither layout's type: an error for that record alone.
local function foreign(kind)
  return {err = 'FOREIGN ' .. kind .. ' ' .. key}
end

-- Index entries of the call's records, added together (flush): a command per index key
-- for the whole call, not several per record.  Nothing else reads them meanwhile but
-- unindex, which flushes first when its record's entries wait (a key twice in a call).
local adds, added, waiting = {}, {}, {}  -- key -> {command, args}; keys in order; key parts queued

local function add(name, command, a, b)
  local pending = adds[name]
  if not pending then
    pending = {command, {}}
    adds[name] = pending
    added[#added + 1] = name
  end
  local args = pending[2]
  args[#args + 1] = a
  args[#args + 1] = b
end

local function flush()
  for _, name in ipairs(added) do
    local command, args = adds[name][1], adds[name][2]
    for i = 1, #args, 4000 do
      redis.call(command, name, unpack(args, i, math.min(i + 3999, #args)))
    end
  end
  adds, added, waiting = {}, {}, {}
end

-- Drop every index entry of the record with key part `m`.
local function unindex(m)
  if nidx == 0 then return end
  if waiting[m] then flush() end
  local k = redis.call('HGET', IK, m)
  if not k then return end
  for j = 1, nidx do
    local held = redis.call('HGET', IV[j], k)
    if held then
      redis.call('ZREM', IZ[j], held .. k)
      redis.call('HDEL', IV[j], k)
    end
  end
  redis.call('ZREM', IA, k)
  redis.call('ZREM', IE, m)
  redis.call('HDEL', IK, m)
end

-- Index the record `m` (encoded key ARGV[at], values ARGV[at + j]) expiring at `ends`
-- (nil: never), in place of what it was indexed under; added by the call's flush.
local function index(m, at, ends)
  unindex(m)
  local k = ARGV[at]
  waiting[m] = true
  add(IK, 'HSET', m, k)
  add(IA, 'ZADD', 0, k)
  if ends then add(IE, 'ZADD', ends, m) end
  for j = 1, nidx do
    local value = ARGV[at + j]
    if value ~= '' then
      add(IV[j], 'HSET', k, value)
      add(IZ[j], 'ZADD', 0, value .. k)
    end
  end
end

local function store(first, partial)
  if expires or mode == 'i' or mode == 'f' or mode == 'F' then unmark() end
  if layout == 'm' then
    if expires then redis.call('SET', key, first, 'PX', ttl(expires)) else redis.call('SET', key, first) end
    if stamped then redis.call('SETRANGE', key, 17, boot()) end  -- the header's stamp (bytes 18 to 25)
    return
  end
  if staged then  -- RENAME drops what the key held, of either layout, and the new hash has no expiry
    redis.call('RENAME', stage_key(), key)
    if first ~= ARGV[body] then redis.call('HSET', key, META, first) end  -- a new version, or a fill's stamp
    if expires then redis.call('PEXPIRE', key, ttl(expires)) end
    return
  end
  if not partial then redis.call('DEL', key) end
  redis.call('HSET', key, META, first)
  for i = body + 1, last, 500 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 499, last)))
  end
  if expires then redis.call('PEXPIRE', key, ttl(expires)) else redis.call('PERSIST', key) end
end

local function claim()
  free(me)
  local list = prefix .. 'x:' .. me
  for i = 1, nalt do
    local ptr = ARGV[ptrs + i]
    if ptr ~= '' then
      if expires then redis.call('SET', ptr, me, 'PX', ttl(expires)) else redis.call('SET', ptr, me) end
      redis.call('HSET', list, i, ptr)
    end
  end
  if expires and redis.call('EXISTS', list) == 1 then redis.call('PEXPIRE', list, ttl(expires)) end
end

local function conflict()
  for i = 1, nalt do
    local ptr = ARGV[ptrs + i]
    if ptr ~= '' then
      local holder = redis.call('GET', ptr)
      if holder and holder ~= me and holds(holder, tostring(i), ptr) then return true end
    end
  end
  return false
end

-- What a read takes in layout `as`: the string, or the hash's header field (false when
-- missing), or the error Redis answers for a key of another type.
local function whole(as)
  if as == 'm' then return redis.pcall('GET', key) end
  return redis.pcall('HGET', key, META)
end

local function record(expected)
  if mode == 'r' then
    local holder = redis.call('GET', key)
    if holder and holds(holder, ARGV[5], key) then return holder end
    return false
  end

  if mode == 'g' then  -- a read: what is held in either layout, unless a copy from another server run
    local as, held = layout, whole(layout)
    if type(held) == 'table' then
      local kind = redis.call('TYPE', key)['ok']
      if kind ~= TYPES[OTHER] then return foreign(kind) end
      as, held = OTHER, whole(OTHER)
    end
    if not held or (#held >= HEADER and not current(held)) then return false end
    if as == 'm' then return held end
    return redis.call('HGETALL', key)
  end

  local h, other = head(key)
  if not h then return foreign(other) end
  local old = version(h)

  local first = ARGV[body]
  v, expires = u64(first, 1), expiry(first)
  if mode == 'i' then
    if nalt > 0 then free(me) end
    unindex(me)
    redis.call('DEL', token_key())
    store(be64(math.max(v, old)) .. string.sub(first, 9, 17) .. boot(), false)
    return 1
  end

  if mode == 'F' then  -- only while the token is the one given: any change meanwhile took it away
    local tkey = token_key()
    local held = redis.call('GET', tkey)  -- the token, then when it ends (ms, the client's clock)
    if not held or string.sub(held, 1, 16) ~= expected or i64(held, 17) <= now then return 0 end
    redis.call('DEL', tkey)
  elseif mode == 'f' then
    used[#used + 1] = token_key()
  end
  if mode == 'f' or mode == 'F' then
    -- Refused when what is held is newer, or this very version and current.
    if #h >= HEADER and not (old < v or (old == v and #h > HEADER and not live(h))) then return 0 end
    if layout == 'm' then
      stamped = true  -- store() writes the stamp in place: a copy of the record in Lua costs more
    else
      first = string.sub(first, 1, 17) .. boot() .. string.sub(first, HEADER + 1)
    end
    for i = 1, nalt do  -- a cache yields alternate keys to the newer record it is filled with
      local ptr = ARGV[ptrs + i]
      local holder = ptr ~= '' and redis.call('GET', ptr)
      if holder and holder ~= me and live(head(prefix .. 'r:' .. holder)) then
        free(holder)
        unindex(holder)
        redis.call('DEL', prefix .. 'r:' .. holder)
      end
    end
  else
    -- A copy from another server run counts as absent, as it did for the read.
    if expected and (current(h) and string.sub(h, 1, 8) or '') ~= expected then return 0 end
    -- Fields to change in a hash that the other layout has made a string since it was
    -- read: refused, so the client reads it again and writes it whole.
    if mode == 'p' and other then return 0 end
    if nalt > 0 and conflict() then return -1 end
    if v <= old then
      v = old + 1
      first = be64(v) .. string.sub(first, 9)
    end
  end
  if nalt > 0 then claim() end
  store(first, mode == 'p')
  if nidx > 0 then index(me, idx, expires) end
  return {1, v}
end

local skip = #prefix + 3  -- the key part follows prefix .. 'r:'

-- Listing and deleting take whole pages of records (thousands a call): one header read a
-- record and nothing else (none where the family is marked), and a delete drops every
-- record and fill token of the call in a few DELs at the end.  A key listed twice in one
-- call (SCAN may) is deleted and counted once.
local function listed()
  local replies = {}
  for r = 1, #KEYS do
    key = KEYS[r]
    local h, other = head(key)
    if h then replies[r] = live(h) and 1 or 0 else replies[r] = foreign(other) end
  end
  return replies
end

-- 'L' one page of the family's records by SCAN (single servers): ARGV after the attribute
-- names: the cursor and the COUNT.  Reply: the next cursor, then the names of the live
-- records, all the page's where the family is marked.
local function page()
  local at = 7 + nidx
  local found = redis.call('SCAN', ARGV[at], 'MATCH', prefix .. 'r:*', 'COUNT', ARGV[at + 1])
  local names = found[2]
  local out = {found[1]}
  if pure() then
    for i = 1, #names do out[i + 1] = names[i] end
    return out
  end
  for _, name in ipairs(names) do
    key = name
    local h, other = head(name)
    if not h then return foreign(other) end
    if live(h) then out[#out + 1] = name end
  end
  return out
end

local function deleted()
  if solo and nalt == 0 and nidx == 0 and pure() then  -- each record live, no token held: UNLINK counts them
    local count = 0
    for i = 1, #KEYS, 500 do
      count = count + redis.call('UNLINK', unpack(KEYS, i, math.min(i + 499, #KEYS)))
    end
    return count
  end
  local replies, doomed, seen = {}, {}, {}
  for r = 1, #KEYS do
    key = KEYS[r]
    local h, other = head(key)
    if not h then
      replies[r] = foreign(other)
    elseif seen[key] then
      replies[r] = 0
    else
      seen[key] = true
      me = string.sub(key, skip)
      if nalt > 0 then free(me) end
      unindex(me)
      replies[r] = live(h) and 1 or 0
      doomed[#doomed + 1] = key
      doomed[#doomed + 1] = token_key()
    end
  end
  for i = 1, #doomed, 500 do
    redis.call('DEL', unpack(doomed, i, math.min(i + 499, #doomed)))
  end
  if not solo then return replies end
  local count = 0
  for r = 1, #KEYS do
    if type(replies[r]) == 'table' then return replies[r] end  -- a foreign key's error, once the rest are gone
    count = count + replies[r]
  end
  return count
end

-- 'P' mark the family (see MARK): ARGV after the attribute names: the nonce the client
-- put in the mark, and '1' if it then found the family empty ('': the nonce goes).
-- Reply: 1 if marked.
local function marked()
  if redis.call('GET', MARK) ~= ARGV[7 + nidx] then return 0 end
  if ARGV[8 + nidx] ~= '1' then
    redis.call('DEL', MARK)
    return 0
  end
  redis.call('SET', MARK, '1')
  return 1
end

-- The encoded key K of an index member V .. K: V is 2 bytes for a bool, 17 for a number,
-- and a string's escaped bytes end at its first '\0\0'.
local function cut(m)
  local rank = string.byte(m, 1)
  if rank == 0 then return string.sub(m, 3) end
  if rank == 1 then return string.sub(m, 18) end
  local e = string.find(m, '\0\0', 2, true)
  return string.sub(m, e + 2)
end

-- Forget what has expired by the client's clock (as reads judge it): Redis drops the
-- records by its own, the index learns it here, before any query reads it.
local function prune()
  local gone = redis.call('ZRANGE', IE, '-inf', now, 'BYSCORE')
  for i = 1, #gone do unindex(gone[i]) end
end

local function flip(s)  -- the bytes turned around: descending order of prefix-free strings
  return (string.gsub(s, '.', function(c) return string.char(255 - string.byte(c)) end))
end

local function unlink(names)
  for i = 1, #names, 500 do
    redis.call('UNLINK', unpack(names, i, math.min(i + 499, #names)))
  end
end

-- 'Q' query: ARGV after the attribute names: offset, limit (-1: all), '1' to count only,
-- then the conditions (attribute number, number of ranges, min and max of each, in
-- ZRANGE BYLEX form over the attribute's members), the order (number of attributes,
-- each attribute number and '1' if descending), and '1' when there is one condition of
-- one value (its members are then in key order already).  Reply: the encoded keys, or the count.
local function query()
  prune()
  local at = 7 + nidx
  local start, limit, counting = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), ARGV[at + 2] == '1'
  local conds = {}
  at = at + 4
  for c = 1, tonumber(ARGV[at - 1]) do
    local ranges = {}
    for r = 1, tonumber(ARGV[at + 1]) do ranges[r] = {ARGV[at + 2 * r], ARGV[at + 2 * r + 1]} end
    conds[c] = {tonumber(ARGV[at]), ranges}
    at = at + 2 + 2 * #ranges
  end
  local order = {}
  for o = 1, tonumber(ARGV[at]) do order[o] = {tonumber(ARGV[at + 2 * o - 1]), ARGV[at + 2 * o] == '1'} end
  local single = ARGV[at + 2 * #order + 1] == '1'

  local function sliced(n)
    local left = math.max(0, n - start)
    if limit >= 0 then left = math.min(left, limit) end
    return left
  end
  if #conds == 0 and #order == 0 then
    if counting then return sliced(redis.call('ZCARD', IA)) end
    return redis.call('ZRANGE', IA, '-', '+', 'BYLEX', 'LIMIT', start, limit)
  end
  if counting and #conds == 1 and #conds[1][2] == 1 then
    local range = conds[1][2][1]
    return sliced(redis.call('ZLEXCOUNT', IZ[conds[1][1]], range[1], range[2]))
  end
  if #conds == 1 and #conds[1][2] == 1 and #order == 1 and order[1][1] == conds[1][1] and not order[1][2] then
    -- One range of the attribute sorted on, ascending: its members are in that order already
    -- (value, then key), and every one of them holds the attribute.
    local range = conds[1][2][1]
    local found = redis.call('ZRANGE', IZ[conds[1][1]], range[1], range[2], 'BYLEX', 'LIMIT', start, limit)
    for i = 1, #found do found[i] = cut(found[i]) end
    return found
  end
  if single and #order == 0 then
    local zset, range = IZ[conds[1][1]], conds[1][2][1]
    if counting then return sliced(redis.call('ZLEXCOUNT', zset, range[1], range[2])) end
    local found = redis.call('ZRANGE', zset, range[1], range[2], 'BYLEX', 'LIMIT', start, limit)
    for i = 1, #found do found[i] = cut(found[i]) end
    return found
  end

  -- The smallest condition first; each further one keeps what it also matches.
  local sizes = {}
  for c = 1, #conds do
    local n = 0
    for _, range in ipairs(conds[c][2]) do n = n + redis.call('ZLEXCOUNT', IZ[conds[c][1]], range[1], range[2]) end
    sizes[c] = n
  end
  local list
  if #conds == 0 then
    list = redis.call('ZRANGE', IA, '-', '+', 'BYLEX')
  else
    local best = 1
    for c = 2, #conds do if sizes[c] < sizes[best] then best = c end end
    list = {}
    for _, range in ipairs(conds[best][2]) do
      for _, m in ipairs(redis.call('ZRANGE', IZ[conds[best][1]], range[1], range[2], 'BYLEX')) do
        list[#list + 1] = cut(m)
      end
    end
    for c = 1, #conds do
      if c ~= best and #list > 0 then
        local also = {}
        for _, range in ipairs(conds[c][2]) do
          for _, m in ipairs(redis.call('ZRANGE', IZ[conds[c][1]], range[1], range[2], 'BYLEX')) do also[cut(m)] = true end
        end
        local kept = {}
        for _, k in ipairs(list) do if also[k] then kept[#kept + 1] = k end end
        list = kept
      end
    end
  end
  if counting then return sliced(#list) end
  if #list == 0 or sliced(#list) == 0 then return {} end

  -- Order by Redis' own byte order: a scratch zset of sort members, each the order's
  -- values (present: '\0' and V, V turned around when descending; absent: '\1') and K.
  local scratch, members, keyof = prefix .. 'i:q', {}, {}
  for i, k in ipairs(list) do
    local m = k
    if #order > 0 then
      local parts = {}
      for o, by in ipairs(order) do
        local held = redis.call('HGET', IV[by[1]], k)
        if not held then parts[o] = '\1' elseif by[2] then parts[o] = '\0' .. flip(held) else parts[o] = '\0' .. held end
      end
      m = table.concat(parts) .. k
      keyof[m] = k
    end
    members[2 * i - 1], members[2 * i] = 0, m
  end
  redis.call('DEL', scratch)
  for i = 1, #members, 1000 do
    redis.call('ZADD', scratch, unpack(members, i, math.min(i + 999, #members)))
  end
  local found = redis.call('ZRANGE', scratch, '-', '+', 'BYLEX', 'LIMIT', start, limit)
  redis.call('UNLINK', scratch)
  if #order > 0 then for i = 1, #found do found[i] = keyof[found[i]] end end
  return found
end

-- 'X' reindex: per record the version read (8 bytes; '' to only drop a record that is
-- gone), K and the values.  A record still at that version is indexed; one that is no
-- longer live leaves the index; one written since was indexed by its writer.
local function reindexed()
  local replies, at = {}, 7 + nidx
  for r = 1, #KEYS do
    key = KEYS[r]
    me = string.sub(key, skip)
    local h = head(key)
    if not (h and live(h)) then
      unindex(me)
      replies[r] = 0
    elseif ARGV[at] ~= '' and string.sub(h, 1, 8) == ARGV[at] then
      index(me, at + 1, expiry(h))
      replies[r] = 1
    else
      replies[r] = 0
    end
    at = at + 2 + nidx
  end
  flush()
  return replies
end

local function scan(match)
  local names, seen, cursor = {}, {}, '0'
  repeat
    local page = redis.call('SCAN', cursor, 'MATCH', match, 'COUNT', 1000)
    cursor = page[1]
    for _, name in ipairs(page[2]) do
      if not seen[name] then
        seen[name] = true
        names[#names + 1] = name
      end
    end
  until cursor == '0'
  return names
end

-- The record names of the family under base: from its i:k where every record is in it (a
-- family whose indexes are built, or a staged one), else by SCAN, which walks the whole
-- keyspace, other families' and namespaces' keys too, while the server waits.
local function record_names(base, indexed)
  if not indexed then return scan(base .. 'r:*') end
  local names = redis.call('HKEYS', base .. 'i:k')
  for i = 1, #names do names[i] = base .. 'r:' .. names[i] end
  return names
end

-- 'S' switch (reset): ARGV after the attribute names: the staging prefix, under which the
-- new records, their pointers and their index were written, and the reset's token, staged
-- as <stage>t.  In one step, the family's records, pointers and index go (UNLINK: their
-- memory is freed off the main thread) and the staged ones take their names (RENAME keeps
-- each expiry); <prefix>sw keeps the token of the last switch.  Reply: how many records;
-- -1, changing nothing, if the token is not staged (this switch was made already, and a
-- retry after its reply was lost must not remove what it put in place; or another reset of
-- the family took the staging over).
local function switch()
  local stage, token = ARGV[7 + nidx], ARGV[8 + nidx]
  if redis.call('GET', stage .. 't') ~= token then return -1 end
  redis.call('DEL', stage .. 't')
  redis.call('SET', prefix .. 'sw', token)
  unmark()  -- the staged records may expire
  local old = record_names(prefix, nidx > 0 and redis.call('HLEN', prefix .. 'i:m') > 0)
  if nalt > 0 then
    for _, name in ipairs(old) do free(string.sub(name, skip)) end
  end
  unlink(old)
  local doomed = {IK, IA, IE}
  for _, attr in ipairs(redis.call('HKEYS', prefix .. 'i:m')) do
    doomed[#doomed + 1] = prefix .. 'i:z:' .. attr
    doomed[#doomed + 1] = prefix .. 'i:v:' .. attr
  end
  for j = 1, nidx do
    doomed[#doomed + 1] = IZ[j]
    doomed[#doomed + 1] = IV[j]
  end
  doomed[#doomed + 1] = prefix .. 'i:m'
  unlink(doomed)
  local new = record_names(stage, nidx > 0)
  local cut_at = #stage + 3
  for _, name in ipairs(new) do
    local part = string.sub(name, cut_at)
    redis.call('RENAME', name, prefix .. 'r:' .. part)
    if nalt > 0 then
      local list = stage .. 'x:' .. part
      local held = redis.call('HGETALL', list)
      local mine = prefix .. 'x:' .. part
      for i = 1, #held, 2 do
        local ptr = prefix .. string.sub(held[i + 1], #stage + 1)
        redis.call('RENAME', held[i + 1], ptr)
        redis.call('HSET', mine, held[i], ptr)
      end
      local left = redis.call('PTTL', list)
      if left > 0 then redis.call('PEXPIRE', mine, left) end
      redis.call('DEL', list)
    end
  end
  for _, name in ipairs({IK, IA, IE, unpack(IZ)}) do
    local staged = stage .. string.sub(name, #prefix + 1)
    if redis.call('EXISTS', staged) == 1 then redis.call('RENAME', staged, name) end
  end
  for j = 1, nidx do
    local staged = stage .. string.sub(IV[j], #prefix + 1)
    if redis.call('EXISTS', staged) == 1 then redis.call('RENAME', staged, IV[j]) end
    redis.call('HSET', prefix .. 'i:m', ARGV[6 + j], 1)
  end
  return #new
end

if mode == 'Q' then return query() end
if mode == 'X' then return reindexed() end
if mode == 'S' then return switch() end
if mode == 'l' then return listed() end
if mode == 'L' then return page() end
if mode == 'P' then return marked() end
if mode == 'd' then return deleted() end

local guarded = mode == 'c' or mode == 'p' or mode == 'F'
local pointed = mode == 'w' or mode == 'f' or guarded
local bodied = mode ~= 'r' and mode ~= 'g'
local replies = {}
local at = 7 + nidx
local indexed = nidx > 0 and pointed
for r = 1, #KEYS do
  key = KEYS[r]
  me = string.sub(key, skip)
  stamped = false
  local expected = nil
  if guarded then
    expected = ARGV[at]
    at = at + 1
  end
  ptrs = at - 1  -- ARGV[ptrs + i] is the pointer of alternate key i
  if pointed then at = at + nalt end
  body, last = at, at - 1
  if bodied and (layout == 'm' or staged) then
    last = at
    at = at + 1
  elseif bodied then
    body = at + 1
    last = body + tonumber(ARGV[at]) - 1
    at = last + 1
  end
  if indexed then
    idx = at
    at = at + 1 + nidx
  end
  local reply = record(expected)
  if staged and not (type(reply) == 'table' and reply[1] == 1) then
    redis.call('DEL', stage_key())  -- refused: its staged fields go
  end
  replies[r] = reply
end
flush()
for i = 1, #used, 1000 do
  redis.call('DEL', unpack(used, i, math.min(i + 999, #used)))
end
return replies
