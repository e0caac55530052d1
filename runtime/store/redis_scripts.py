"""Lua scripts of the Redis store's delivery path: each one is one atomic step.

Publish, claim, settle (success, failure, release) and reclaim of dead
nodes' work; the key layout and the shared Lua are in `redis_lua`, the
operations scripts (dead letters, replay, retention) in `redis_upkeep`.
"""

from __future__ import annotations

from runtime.store import redis_flow_lua, redis_upkeep
from runtime.store.redis_lua import PRELUDE

PUBLISH = PRELUDE + """
local out = publish_many()
wake()
return out
"""

CLAIM = PRELUDE + """
local fn, me, limit, now, min_idle = arg(), arg(), tonumber(arg()), arg(), tonumber(arg())
local q, r, z, a = P .. 'q:' .. fn, P .. 'r:' .. fn, P .. 'z:' .. fn, P .. 'a:' .. fn
for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, limit)) do
  local sp = string.find(m, ' ', 1, true)
  local head, eid = string.sub(m, 1, sp - 1), string.sub(m, sp + 1)
  local colon = string.find(head, ':', 1, true)
  if colon then
    enqueue_retry(fn, eid, string.sub(head, 1, colon - 1), tonumber(string.sub(head, colon + 1)))
  else  -- written before members carried attempts: they are in `a:{fn}`
    enqueue_retry(fn, eid, head, tonumber(redis.call('HGET', a, head) or '0'))
  end
  redis.call('ZREM', z, m)
end
-- Due retries first (r), then fresh deliveries (q); each stream in order.
local streams = {}
if redis.call('EXISTS', r) == 1 then streams[#streams + 1] = {r, 'r'} end
if redis.call('EXISTS', q) == 1 then streams[#streams + 1] = {q, ''} end
local got = {}
if min_idle >= 0 then
  for _, s in ipairs(streams) do
    if #got < limit then
      local res = redis.call('XAUTOCLAIM', s[1], G, me, min_idle, '0-0', 'COUNT', limit - #got)
      for _, e in ipairs(res[2]) do
        local p = redis.call('XPENDING', s[1], G, e[1], e[1], 1)  -- taken over: counted again
        e.delivered = p[1] and p[1][4] or 1
        e.s = s
        got[#got + 1] = e
      end
    end
  end
end
for _, s in ipairs(streams) do
  if #got < limit then
    local res = redis.call('XREADGROUP', 'GROUP', G, me, 'COUNT', limit - #got,
      'STREAMS', s[1], '>')
    if res then for _, e in ipairs(res[1][2]) do e.s = s; got[#got + 1] = e end end
  end
end
local out = {}
for _, e in ipairs(got) do
  local f = fields(e[2])
  local d = f['d'] or e[1]
  local body = redis.call('HGET', P .. 'ev:' .. f['e'], 'e')
  if body then
    out[#out + 1] = {e.s[2] .. e[1], d, used_before(fn, f) + (e.delivered or 1), body}
  else
    -- The event is gone (dropped by hand): nothing left to deliver.
    redis.call('XACK', e.s[1], G, e[1])
    redis.call('XDEL', e.s[1], e[1])
  end
end
return out
"""

SUCCEED = PRELUDE + """
local fn, me, entry, d, eid = arg(), arg(), arg(), arg(), arg()
local hist, hmax = arg(), tonumber(arg())
local q
q, entry = stream_of(fn, entry)
record(fn, eid, hist)
flush_runs(hmax)
-- Not ours any more: another node took the delivery over (lease passed) and
-- settles it itself; its emits, not ours, are the ones to keep.
if not owns(q, entry, me) then return 0 end
redis.call('XACK', q, G, entry)
redis.call('XDEL', q, entry)
redis.call('HDEL', P .. 'a:' .. fn, d)
release_event(eid)
publish_many()
wake()
return 1
"""

ID_LESS = """
-- Stream ids order by milliseconds, then sequence.
local function id_less(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local ma, mb = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  if ma ~= mb then return ma < mb end
  return tonumber(string.sub(a, da + 1)) < tonumber(string.sub(b, db + 1))
end
-- Entries of ours other than the batch's that one range may hold (prefetched
-- or being settled by another call); past that, ownership is asked per entry.
local OTHERS = 2048
"""

SUCCEED_MANY = PRELUDE + ID_LESS + """
-- SUCCEED for a batch of deliveries in one call, with the per-delivery
-- commands merged where order allows: one XPENDING (ownership) per stream
-- over the batch's id range, one XACK, XDEL and HDEL per stream. Each
-- item's emits are published only if the item is still ours, exactly as
-- SUCCEED does; its run record is kept either way, as SUCCEED keeps it.
-- ARGV: me, hmax, count, then per item: "fn entry d emits" (one
-- argument: each argument costs the client more than this match costs
-- here), eid, hist, then its emits' publish_one arguments.
local me, hmax, count = arg(), tonumber(arg()), tonumber(arg())
-- per_q: entries per stream (a function's deliveries may come from `q:{fn}`
-- and, retries, from `r:{fn}`).
local items, per_q = {}, {}
for i = 1, count do
  local fn, entry, d, emits = string.match(arg(), '^(%S+) (%S+) (%S+) (%d+)$')
  local q, id = stream_of(fn, entry)
  local it = {fn = fn, q = q, entry = id, d = d, eid = arg(), emits = tonumber(emits)}
  record(fn, it.eid, arg())
  it.at = argi
  for _ = 1, it.emits do
    argi = argi + 4
    argi = argi + tonumber(arg())
  end
  items[i] = it
  local t = per_q[q]
  if not t then
    t = {fn = fn, entries = {}, mine = {}, done = {}, ds = {}}
    per_q[q] = t
  end
  t.entries[#t.entries + 1] = id
end
flush_runs(hmax)
for q, t in pairs(per_q) do
  local lo, hi = t.entries[1], t.entries[1]
  for _, e in ipairs(t.entries) do
    if id_less(e, lo) then lo = e end
    if id_less(hi, e) then hi = e end
  end
  local limit = #t.entries + OTHERS
  local rows = redis.call('XPENDING', q, G, lo, hi, limit, me)
  for _, row in ipairs(rows) do t.mine[row[1]] = true end
  if #rows == limit then  -- more of ours in that range than expected: ask each
    for _, e in ipairs(t.entries) do t.mine[e] = t.mine[e] or owns(q, e, me) end
  end
end
local out = {}
for i, it in ipairs(items) do
  local t = per_q[it.q]
  out[i] = 0
  if t.mine[it.entry] then
    t.done[#t.done + 1], t.ds[#t.ds + 1] = it.entry, it.d
    release_event(it.eid)
    argi = it.at
    for _ = 1, it.emits do publish_one() end
    out[i] = 1
  end
end
for q, t in pairs(per_q) do
  if #t.done > 0 then
    redis.call('XACK', q, G, unpack(t.done))
    redis.call('XDEL', q, unpack(t.done))
    redis.call('HDEL', P .. 'a:' .. t.fn, unpack(t.ds))
  end
end
wake()
return out
"""


FAIL = PRELUDE + """
local fn, me, entry, d, eid = arg(), arg(), arg(), arg(), arg()
local hist, hmax = arg(), tonumber(arg())
local retry_at, now = arg(), arg()
local attempts, err, tb = arg(), arg(), arg()
local q
q, entry = stream_of(fn, entry)
record(fn, eid, hist)
flush_runs(hmax)
if not owns(q, entry, me) then return 0 end
redis.call('XACK', q, G, entry)
redis.call('XDEL', q, entry)
redis.call('HDEL', P .. 'a:' .. fn, d)
if retry_at ~= '' then
  redis.call('ZADD', P .. 'z:' .. fn, retry_at, d .. ':' .. attempts .. ' ' .. eid)
  return 1
end
local id = fn .. '/' .. d
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
  local fn = arg()
  local q, entry = stream_of(fn, arg())
  local p = redis.call('XPENDING', q, G, entry, entry, 1)
  -- Never started: its last delivery is not an attempt used.
  if #p == 1 and p[1][2] == me and requeue(fn, q, entry, p[1][4] - 1) == 1 then
    done = done + 1
  end
end
wake()
return done
"""

REAP = PRELUDE + """
-- Requeue running deliveries of dead nodes (heartbeat gone), of this node
-- when `mine` is 1 (it is starting), and, when min_idle >= 0, of any node
-- that has held one longer than min_idle ms.
local fn, me, mine, min_idle = arg(), arg(), arg(), tonumber(arg())
local moved = 0
for _, q in ipairs({P .. 'r:' .. fn, P .. 'q:' .. fn}) do
  if redis.call('EXISTS', q) == 1 then
    for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', q, G)) do
      local info = fields(c)
      local name = info['name']
      local dead = name ~= me and redis.call('EXISTS', P .. 'node:' .. name) == 0
      if dead or (name == me and mine == '1') then
        for _, p in ipairs(redis.call('XPENDING', q, G, '-', '+', 1000, name)) do
          moved = moved + requeue(fn, q, p[1], p[4])
        end
        if redis.call('XPENDING', q, G, '-', '+', 1, name)[1] == nil then
          redis.call('XGROUP', 'DELCONSUMER', q, G, name)
        end
      end
    end
    if min_idle >= 0 then
      for _, p in ipairs(redis.call('XPENDING', q, G, 'IDLE', min_idle, '-', '+', 1000)) do
        moved = moved + requeue(fn, q, p[1], p[4])
      end
    end
  end
end
wake()
return moved
"""

NEXT_DUE = PRELUDE + """
-- Earliest due time (ms) of a pending delivery: the first entry no consumer
-- has read yet, else the earliest retry.
local fn = arg()
local z = P .. 'z:' .. fn
local best = false
for _, q in ipairs({P .. 'r:' .. fn, P .. 'q:' .. fn}) do
  if redis.call('EXISTS', q) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', q)) do
      local info = fields(g)
      if info['name'] == G then
        local nxt = redis.call('XRANGE', q, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
        if #nxt > 0 then
          local ms = tonumber(string.sub(nxt[1][1], 1, string.find(nxt[1][1], '-', 1, true) - 1))
          if not best or ms < best then best = ms end
        end
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
local new = publish_one()
wake()
return new
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
    **redis_flow_lua.SCRIPTS,
    **redis_upkeep.SCRIPTS,
}
"""Script name -> Lua source; the store loads them once and calls them by SHA."""
