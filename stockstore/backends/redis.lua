-- Record operations of stockstore's Redis stores, each atomic on the server.
--
-- User values are never decoded here (Redis' cmsgpack is lossy): a record is opaque
-- bytes behind a 16-byte header, big-endian version and expiry in epoch ms (0: never).
-- Layout 'm' stores header .. payload as a string; layout 'h' a hash whose field "\255"
-- holds header .. class tag and whose other fields are the encoded attributes.  A
-- header alone is a tombstone: it keeps its version so that older fills are refused.
--
-- One call handles many records (KEYS, one per record; on a cluster all in one slot).
-- ARGV  1 layout 'm'|'h'   2 mode   3 now (ms, the client's clock)   4 key prefix
--       5 number of alternate keys, then per record: version, expiry or tombstone end
--       (ms, '0': never), expected version bytes ('c', 'p'), key part, one pointer key
--       per alternate key ('' where unset), number of body arguments, the body: 'm' the
--       value; 'h' the meta field, then attribute field / value pairs
-- modes 'w' write   'c' write if the version is still the expected one   'p' as 'c',
--       writing only the given fields ('h')   'f' fill if newer   'i' tombstone
--       'd' delete   'r' resolve: KEYS are pointers, the record group's key part is the
--       pointer's alternate-key index
-- reply per record: 1 and the stored version | 0 refused (not newer, or changed since
--       read) | -1 an alternate key is held by another live record; 'd' 1 if it was live;
--       'r' the holder's key part or false

local layout, mode, now, prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local nalt = tonumber(ARGV[5])
local META = '\255'

local function u64(s, at)
  local n = 0
  for i = at, at + 7 do n = n * 256 + string.byte(s, i) end
  return n
end

local function be64(n)
  local out = {}
  for i = 8, 1, -1 do
    out[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(out)
end

-- The first 17 stored bytes: '' when missing, 16 for a tombstone, 17 for a record.
local function head(key)
  if layout == 'm' then return redis.call('GETRANGE', key, 0, 16) end
  return string.sub(redis.call('HGET', key, META) or '', 1, 17)
end

local function live(h)
  if #h < 17 then return false end
  local expires = u64(h, 9)
  return expires == 0 or expires > now
end

local function version(h)
  if #h < 16 then return 0 end
  return u64(h, 1)
end

-- Redis expires keys by its own clock: hand it the time left by the client's clock, so
-- clock skew between them moves when Redis frees memory, never what a read returns.
local function ttl(expires)
  return string.format('%d', math.max(1, tonumber(expires) - now))
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

-- One record: its key and where its group starts in ARGV.
local function record(key, at)
  local v, expires, expected, me = tonumber(ARGV[at]), ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local ptrs = at + 3  -- ARGV[ptrs + i] is the pointer of alternate key i
  local body = ptrs + nalt + 2
  local last = body + tonumber(ARGV[ptrs + nalt + 1]) - 1

  if mode == 'r' then
    local holder = redis.call('GET', key)
    if holder and holds(holder, me, key) then return holder end
    return false
  end

  local h = head(key)
  local old = version(h)

  local function store(first, partial)
    if layout == 'm' then
      if expires ~= '0' then redis.call('SET', key, first, 'PX', ttl(expires)) else redis.call('SET', key, first) end
      return
    end
    if not partial then redis.call('DEL', key) end
    redis.call('HSET', key, META, first)
    for i = body + 1, last, 500 do
      redis.call('HSET', key, unpack(ARGV, i, math.min(i + 499, last)))
    end
    if expires ~= '0' then redis.call('PEXPIRE', key, ttl(expires)) else redis.call('PERSIST', key) end
  end

  local function claim()
    free(me)
    local list = prefix .. 'x:' .. me
    for i = 1, nalt do
      local ptr = ARGV[ptrs + i]
      if ptr ~= '' then
        if expires ~= '0' then redis.call('SET', ptr, me, 'PX', ttl(expires)) else redis.call('SET', ptr, me) end
        redis.call('HSET', list, i, ptr)
      end
    end
    if expires ~= '0' and redis.call('EXISTS', list) == 1 then redis.call('PEXPIRE', list, ttl(expires)) end
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

  if mode == 'd' then
    if nalt > 0 then free(me) end
    redis.call('DEL', key)
    return live(h) and 1 or 0
  end

  if mode == 'i' then
    if nalt > 0 then free(me) end
    store(be64(math.max(v, old)) .. be64(tonumber(expires)), false)
    return 1
  end

  local first = ARGV[body]
  if mode == 'f' then
    if #h >= 16 and not (old < v or (old == v and #h == 17 and not live(h))) then return 0 end
    for i = 1, nalt do  -- a cache yields alternate keys to the newer record it is filled with
      local ptr = ARGV[ptrs + i]
      local holder = ptr ~= '' and redis.call('GET', ptr)
      if holder and holder ~= me then
        free(holder)
        redis.call('DEL', prefix .. 'r:' .. holder)
      end
    end
  else
    if (mode == 'c' or mode == 'p') and string.sub(h, 1, 8) ~= expected then return 0 end
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

local replies = {}
local at = 6
for r = 1, #KEYS do
  replies[r] = record(KEYS[r], at)
  at = at + 5 + nalt + tonumber(ARGV[at + 4 + nalt])
end
return replies
