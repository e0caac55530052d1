"""Lua scripts of the Redis store: each one is one atomic step of the delivery model.

Key layout (all under `fnrun:`):

| key | type | holds |
| --- | --- | --- |
| `ev:{event}` | hash | `e` event JSON, `n` live deliveries, `p` 1 once retention passed |
| `idx` | stream | per event: `e` id, `y` type, `t` event time (µs); by store time, MINID |
| `fns` | set | functions that ever had a delivery |
| `q:{fn}` | stream + group `g` | deliveries: `e` event id, `d` first entry id (set on re-adds) |
| `a:{fn}` | hash | attempts per delivery (`d`), counted at claim, so kill -9 keeps them |
| `z:{fn}` | sorted set | retries waiting, member `"d event"`, score = due (ms) |
| `dl:{id}`, `dz`, `dz:{fn}` | hash, sorted sets | dead letters and their indexes by time |
| `h`, `h:{fn}` | lists | invocation history, newest first, bounded by LTRIM |
| `tick:{key}` | string | last schedule tick fired (epoch seconds) |
| `k:{key}` | string | idempotency keys, with TTL |
| `node:{consumer}` | string | heartbeat of a live node, with TTL |

A delivery's stable id is the stream entry id it was first published under
(`d`); a retry re-adds it to the stream under a new entry id that carries `d`.
Scripts read ARGV flat (no JSON decoding of inputs) and touch keys derived
from their arguments, which is fine on a single Redis (not Redis Cluster).
"""

from __future__ import annotations

PRELUDE = """
local P = 'fnrun:'
local G = 'g'
local argi = 0
local function arg() argi = argi + 1; return ARGV[argi] end

local function enqueue(fn, eid, d)
  local q = P .. 'q:' .. fn
  if redis.call('SADD', P .. 'fns', fn) == 1 then
    redis.pcall('XGROUP', 'CREATE', q, G, '0', 'MKSTREAM')
  end
  if d then return redis.call('XADD', q, '*', 'e', eid, 'd', d) end
  return redis.call('XADD', q, '*', 'e', eid)
end

-- Reads one published item from ARGV: id, body, type, time (µs), n, targets...
local function publish_one()
  local eid, body, typ, at, n = arg(), arg(), arg(), arg(), tonumber(arg())
  local targets = {}
  for i = 1, n do targets[i] = arg() end
  local k = P .. 'ev:' .. eid
  if redis.call('EXISTS', k) == 1 then return 0 end
  redis.call('HSET', k, 'e', body, 'n', n)
  redis.call('XADD', P .. 'idx', '*', 'e', eid, 'y', typ, 't', at)
  for _, fn in ipairs(targets) do enqueue(fn, eid, false) end
  return 1
end

local function publish_many()
  local count = tonumber(arg())
  local out = {}
  for i = 1, count do out[i] = publish_one() end
  return out
end

-- One delivery fewer keeps event `eid` alive; drop it once none is left and
-- retention has already passed it.
local function release_event(eid)
  local k = P .. 'ev:' .. eid
  local n = redis.call('HINCRBY', k, 'n', -1)
  if n <= 0 and redis.call('HGET', k, 'p') == '1' then redis.call('DEL', k) end
end

local function record(fn, entry, hmax, hmax_fn)
  redis.call('LPUSH', P .. 'h', entry)
  redis.call('LTRIM', P .. 'h', 0, hmax - 1)
  redis.call('LPUSH', P .. 'h:' .. fn, entry)
  redis.call('LTRIM', P .. 'h:' .. fn, 0, hmax_fn - 1)
end

-- Is `id` running on consumer `me`? After a lease passed, another node may
-- hold the very same entry (XAUTOCLAIM keeps ids), and XACK ignores owners.
local function owns(q, id, me)
  local p = redis.call('XPENDING', q, G, id, id, 1)
  return #p == 1 and p[1][2] == me
end

local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Take a running entry back and put it at the tail as pending again.
local function requeue(fn, q, id)
  local found = redis.call('XRANGE', q, id, id)
  redis.call('XACK', q, G, id)
  if #found == 0 then return 0 end
  local f = fields(found[1][2])
  redis.call('XDEL', q, id)
  enqueue(fn, f['e'], f['d'] or id)
  return 1
end
"""

PUBLISH = PRELUDE + """
return publish_many()
"""

CLAIM = PRELUDE + """
local fn, me, limit, now, min_idle = arg(), arg(), tonumber(arg()), arg(), tonumber(arg())
local q, z, a = P .. 'q:' .. fn, P .. 'z:' .. fn, P .. 'a:' .. fn
for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, limit)) do
  local sp = string.find(m, ' ', 1, true)
  enqueue(fn, string.sub(m, sp + 1), string.sub(m, 1, sp - 1))
  redis.call('ZREM', z, m)
end
if redis.call('EXISTS', q) == 0 then return {} end
local got = {}
if min_idle >= 0 then
  local r = redis.call('XAUTOCLAIM', q, G, me, min_idle, '0-0', 'COUNT', limit)
  for _, e in ipairs(r[2]) do got[#got + 1] = e end
end
if #got < limit then
  local r = redis.call('XREADGROUP', 'GROUP', G, me, 'COUNT', limit - #got, 'STREAMS', q, '>')
  if r then for _, e in ipairs(r[1][2]) do got[#got + 1] = e end end
end
local out = {}
for _, e in ipairs(got) do
  local f = fields(e[2])
  local d = f['d'] or e[1]
  local body = redis.call('HGET', P .. 'ev:' .. f['e'], 'e')
  if body then
    local n = redis.call('HINCRBY', a, d, 1)
    out[#out + 1] = {e[1], d, n, body}
  else
    -- The event is gone (dropped by hand): nothing left to deliver.
    redis.call('XACK', q, G, e[1])
    redis.call('XDEL', q, e[1])
  end
end
return out
"""

SUCCEED = PRELUDE + """
local fn, me, entry, d, eid = arg(), arg(), arg(), arg(), arg()
local hist, hmax, hmax_fn = arg(), tonumber(arg()), tonumber(arg())
local q = P .. 'q:' .. fn
record(fn, hist, hmax, hmax_fn)
-- Not ours any more: another node took the delivery over (lease passed) and
-- settles it itself; its emits, not ours, are the ones to keep.
if not owns(q, entry, me) then return 0 end
redis.call('XACK', q, G, entry)
redis.call('XDEL', q, entry)
redis.call('HDEL', P .. 'a:' .. fn, d)
release_event(eid)
publish_many()
return 1
"""

SUCCEED_MANY = PRELUDE + """
-- SUCCEED for a batch of deliveries in one call, with the per-delivery
-- commands merged where order allows: one LPUSH/LTRIM pair per history list,
-- one XACK, XDEL and HDEL per function. Each item's emits are published only
-- if the item is still ours, exactly as SUCCEED does.
-- ARGV: me, hmax, hmax_fn, count, then per item: fn, entry, d, eid, hist,
-- publish_many arguments (count, items...).
local me, hmax, hmax_fn, count = arg(), tonumber(arg()), tonumber(arg()), tonumber(arg())
local all, per_fn, done, out = {}, {}, {}, {}
for i = 1, count do
  local fn, entry, d, eid, hist = arg(), arg(), arg(), arg(), arg()
  local q = P .. 'q:' .. fn
  all[#all + 1] = hist
  per_fn[fn] = per_fn[fn] or {}
  table.insert(per_fn[fn], hist)
  if owns(q, entry, me) then
    done[fn] = done[fn] or {entries = {}, ds = {}}
    table.insert(done[fn].entries, entry)
    table.insert(done[fn].ds, d)
    release_event(eid)
    publish_many()
    out[i] = 1
  else
    local n = tonumber(arg())
    for _ = 1, n do
      argi = argi + 4
      argi = argi + tonumber(arg())
    end
    out[i] = 0
  end
end
redis.call('LPUSH', P .. 'h', unpack(all))
redis.call('LTRIM', P .. 'h', 0, hmax - 1)
for fn, entries in pairs(per_fn) do
  redis.call('LPUSH', P .. 'h:' .. fn, unpack(entries))
  redis.call('LTRIM', P .. 'h:' .. fn, 0, hmax_fn - 1)
end
for fn, t in pairs(done) do
  local q = P .. 'q:' .. fn
  redis.call('XACK', q, G, unpack(t.entries))
  redis.call('XDEL', q, unpack(t.entries))
  redis.call('HDEL', P .. 'a:' .. fn, unpack(t.ds))
end
return out
"""

FAIL = PRELUDE + """
local fn, me, entry, d, eid = arg(), arg(), arg(), arg(), arg()
local hist, hmax, hmax_fn = arg(), tonumber(arg()), tonumber(arg())
local retry_at, now = arg(), arg()
local attempts, err, tb = arg(), arg(), arg()
local q = P .. 'q:' .. fn
record(fn, hist, hmax, hmax_fn)
if not owns(q, entry, me) then return 0 end
redis.call('XACK', q, G, entry)
redis.call('XDEL', q, entry)
if retry_at ~= '' then
  redis.call('ZADD', P .. 'z:' .. fn, retry_at, d .. ' ' .. eid)
  return 1
end
local id = fn .. '/' .. d
redis.call('HDEL', P .. 'a:' .. fn, d)
redis.call('HSET', P .. 'dl:' .. id, 'function', fn, 'event', eid, 'd', d,
  'attempts', attempts, 'error', err, 'traceback', tb, 'failed_at', now)
redis.call('ZADD', P .. 'dz', now, id)
redis.call('ZADD', P .. 'dz:' .. fn, now, id)
return 2
"""

RELEASE = PRELUDE + """
local me, count = arg(), tonumber(arg())
local done = 0
for i = 1, count do
  local fn, entry, d = arg(), arg(), arg()
  local q = P .. 'q:' .. fn
  if owns(q, entry, me) and requeue(fn, q, entry) == 1 then
    redis.call('HINCRBY', P .. 'a:' .. fn, d, -1)
    done = done + 1
  end
end
return done
"""

REAP = PRELUDE + """
-- Requeue running deliveries of dead nodes (heartbeat gone), of this node
-- when `mine` is 1 (it is starting), and, when min_idle >= 0, of any node
-- that has held one longer than min_idle ms.
local fn, me, mine, min_idle = arg(), arg(), arg(), tonumber(arg())
local q = P .. 'q:' .. fn
if redis.call('EXISTS', q) == 0 then return 0 end
local moved = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', q, G)) do
  local info = fields(c)
  local name = info['name']
  local dead = name ~= me and redis.call('EXISTS', P .. 'node:' .. name) == 0
  if dead or (name == me and mine == '1') then
    for _, p in ipairs(redis.call('XPENDING', q, G, '-', '+', 1000, name)) do
      moved = moved + requeue(fn, q, p[1])
    end
    if redis.call('XPENDING', q, G, '-', '+', 1, name)[1] == nil then
      redis.call('XGROUP', 'DELCONSUMER', q, G, name)
    end
  end
end
if min_idle >= 0 then
  for _, p in ipairs(redis.call('XPENDING', q, G, 'IDLE', min_idle, '-', '+', 1000)) do
    moved = moved + requeue(fn, q, p[1])
  end
end
return moved
"""

NEXT_DUE = PRELUDE + """
-- Earliest due time (ms) of a pending delivery: the first entry no consumer
-- has read yet, else the earliest retry.
local fn = arg()
local q, z = P .. 'q:' .. fn, P .. 'z:' .. fn
local best = false
if redis.call('EXISTS', q) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', q)) do
    local info = fields(g)
    if info['name'] == G then
      local nxt = redis.call('XRANGE', q, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
      if #nxt > 0 then
        best = tonumber(string.sub(nxt[1][1], 1, string.find(nxt[1][1], '-', 1, true) - 1))
      end
    end
  end
end
local r = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
if #r > 0 and (not best or tonumber(r[2]) < best) then best = tonumber(r[2]) end
if not best then return false end
return tostring(best)
"""

FIRE_TICK = PRELUDE + """
local key, tick = arg(), arg()
local k = P .. 'tick:' .. key
local last = redis.call('GET', k)
if last and tonumber(last) >= tonumber(tick) then return 0 end
redis.call('SET', k, tick)
return publish_one()
"""

DEAD_REPLAY = PRELUDE + """
local count, done = tonumber(arg()), 0
for i = 1, count do
  local id = arg()
  local dl = P .. 'dl:' .. id
  local f = redis.call('HMGET', dl, 'function', 'event', 'd')
  if f[1] then
    redis.call('DEL', dl)
    redis.call('ZREM', P .. 'dz', id)
    redis.call('ZREM', P .. 'dz:' .. f[1], id)
    enqueue(f[1], f[2], f[3])
    done = done + 1
  end
end
return done
"""

DEAD_DROP = PRELUDE + """
local count, done = tonumber(arg()), 0
for i = 1, count do
  local id = arg()
  local dl = P .. 'dl:' .. id
  local f = redis.call('HMGET', dl, 'function', 'event')
  if f[1] then
    redis.call('DEL', dl)
    redis.call('ZREM', P .. 'dz', id)
    redis.call('ZREM', P .. 'dz:' .. f[1], id)
    release_event(f[2])
    done = done + 1
  end
end
return done
"""

REDELIVER = PRELUDE + """
local fn, count, done = arg(), tonumber(arg()), 0
for i = 1, count do
  local eid = arg()
  local k = P .. 'ev:' .. eid
  if redis.call('EXISTS', k) == 1 then
    redis.call('HINCRBY', k, 'n', 1)
    enqueue(fn, eid, false)
    done = done + 1
  end
end
return done
"""

PRUNE_EVENTS = PRELUDE + """
-- Retention: forget up to `batch` index entries stored up to `last_ms`.
-- An event whose deliveries are still live stays (and stays replayable):
-- it is indexed again at the tail, marked so the last delivery deletes it.
local last_ms, batch = arg(), tonumber(arg())
local idx = P .. 'idx'
local old = redis.call('XRANGE', idx, '-', last_ms, 'COUNT', batch)
for _, e in ipairs(old) do
  local f = fields(e[2])
  local k = P .. 'ev:' .. f['e']
  local n = tonumber(redis.call('HGET', k, 'n') or '0')
  if n <= 0 then
    redis.call('DEL', k)
  else
    redis.call('HSET', k, 'p', '1')
    redis.call('XADD', idx, '*', 'e', f['e'], 'y', f['y'], 't', f['t'])
  end
end
if #old > 0 then
  local id = old[#old][1]
  local dash = string.find(id, '-', 1, true)
  local next_id = string.sub(id, 1, dash) .. tostring(tonumber(string.sub(id, dash + 1)) + 1)
  redis.call('XTRIM', idx, 'MINID', next_id)
end
return #old
"""

PRUNE_HISTORY = """
-- Drop history entries started before `cutoff` (epoch s) from the tail of a list.
local key, cutoff, dropped = ARGV[1], tonumber(ARGV[2]), 0
while true do
  local last = redis.call('LINDEX', key, -1)
  if not last or tonumber(cjson.decode(last)['started']) >= cutoff then break end
  redis.call('RPOP', key)
  dropped = dropped + 1
end
return dropped
"""

SCRIPTS = {
    "publish": PUBLISH,
    "claim": CLAIM,
    "succeed": SUCCEED,
    "succeed_many": SUCCEED_MANY,
    "fail": FAIL,
    "release": RELEASE,
    "reap": REAP,
    "next_due": NEXT_DUE,
    "fire_tick": FIRE_TICK,
    "dead_replay": DEAD_REPLAY,
    "dead_drop": DEAD_DROP,
    "redeliver": REDELIVER,
    "prune_events": PRUNE_EVENTS,
    "prune_history": PRUNE_HISTORY,
}
"""Script name -> Lua source; the store loads them once and calls them by SHA."""
