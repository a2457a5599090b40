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
-- ARGV  1 layout 'm'|'h', or 'H': 'h' with each record's fields staged (see stage_key)
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
--       read) | -1 an alternate key is held by another live record; 'd' and 'l' 1 if it
--       was or is live; 'g' the value (a string) or the fields (a hash), whichever layout
--       holds it, or false, also for a copy of another server run;
--       'r' the holder's key part or false;
--       every mode: an error 'FOREIGN <type> <key>' for a key of neither layout's type

local layout, mode, now, prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
-- Staged: the client sends, in one MULTI/EXEC with this call last, a DEL of the staging
-- keys and an HSET of each record's whole hash (meta field and attributes) to its staging
-- key (stage_key); a record written RENAMEs its staging key over its own (one step,
-- whatever it held), one refused drops it.
-- The fields go to Redis as plain HSETs, never through Lua's ARGV, and the transaction
-- keeps the write as atomic as the script alone: a reader sees the old record or the new.
local staged = layout == 'H'
if staged then layout = 'h' end
local nalt = tonumber(ARGV[5])
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
local key, me, v, expires, ptrs, body, last

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

local function store(first, partial)
  if layout == 'm' then
    if expires then redis.call('SET', key, first, 'PX', ttl(expires)) else redis.call('SET', key, first) end
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
    redis.call('DEL', token_key())
  end
  if mode == 'f' or mode == 'F' then
    -- Refused when what is held is newer, or this very version and current.
    if #h >= HEADER and not (old < v or (old == v and #h > HEADER and not live(h))) then return 0 end
    first = string.sub(first, 1, 17) .. boot() .. string.sub(first, HEADER + 1)
    for i = 1, nalt do  -- a cache yields alternate keys to the newer record it is filled with
      local ptr = ARGV[ptrs + i]
      local holder = ptr ~= '' and redis.call('GET', ptr)
      if holder and holder ~= me and live(head(prefix .. 'r:' .. holder)) then
        free(holder)
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
  return {1, v}
end

local skip = #prefix + 3  -- the key part follows prefix .. 'r:'

-- Listing and deleting take whole pages of records (thousands a call): one header read a
-- record and nothing else, and a delete drops every record and fill token of the call in
-- a few DELs at the end.  A key listed twice in one call (SCAN may) is deleted and counted once.
local function listed()
  local replies = {}
  for r = 1, #KEYS do
    key = KEYS[r]
    local h, other = head(key)
    if h then replies[r] = live(h) and 1 or 0 else replies[r] = foreign(other) end
  end
  return replies
end

local function deleted()
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
      replies[r] = live(h) and 1 or 0
      doomed[#doomed + 1] = key
      doomed[#doomed + 1] = token_key()
    end
  end
  for i = 1, #doomed, 500 do
    redis.call('DEL', unpack(doomed, i, math.min(i + 499, #doomed)))
  end
  return replies
end

if mode == 'l' then return listed() end
if mode == 'd' then return deleted() end

local guarded = mode == 'c' or mode == 'p' or mode == 'F'
local pointed = mode == 'w' or mode == 'f' or guarded
local bodied = mode ~= 'r' and mode ~= 'g'
local replies = {}
local at = 6
for r = 1, #KEYS do
  key = KEYS[r]
  me = string.sub(key, skip)
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
  local reply = record(expected)
  if staged and not (type(reply) == 'table' and reply[1] == 1) then
    redis.call('DEL', stage_key())  -- refused: its staged fields go
  end
  replies[r] = reply
end
return replies
