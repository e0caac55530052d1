"""Lua scripts for the Redis store's operations: dead letters, replay, retention, sync calls.

Rarely run, unlike the delivery scripts in `redis_scripts`; they share the
prelude (key layout and the live-delivery counter) of `redis_lua`.
"""

from __future__ import annotations

from runtime.store.redis_lua import PRELUDE

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
wake()
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
wake()
return done
"""

PRUNE_EVENTS = PRELUDE + """
-- Retention: forget up to `batch` index entries stored up to `last_ms`.
-- An event whose deliveries are still live stays (and stays replayable):
-- it is indexed again at the tail (without `c`: `n` is absolute from now
-- on), marked so the last delivery deletes it.
local last_ms, batch = arg(), tonumber(arg())
local idx = P .. 'idx'
local old = redis.call('XRANGE', idx, '-', last_ms, 'COUNT', batch)
for _, e in ipairs(old) do
  local f = fields(e[2])
  local k = P .. 'ev:' .. f['e']
  local n = tonumber(redis.call('HGET', k, 'n') or '0')
  local live = n + tonumber(f['c'] or '0')
  if n >= MARK / 2 then live = n - MARK end
  if live <= 0 then
    redis.call('DEL', k)
  else
    redis.call('HSET', k, 'n', string.format('%d', MARK + live))
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

PRUNE_RUNS = PRELUDE + """
-- Retention: forget up to `batch` of the oldest run records started before
-- `cutoff_ms`, stopping at the first one kept.
local cutoff, batch = tonumber(arg()), tonumber(arg())
local gone = {}
for _, m in ipairs(redis.call('ZRANGE', P .. 'runs', 0, batch - 1)) do
  if tonumber(string.match(m, '^%S+ (%S+) ')) >= cutoff then break end
  gone[#gone + 1] = m
end
drop_runs(gone)
return #gone
"""

RECORD = PRELUDE + """
-- Run records of sync calls (no delivery): ARGV hmax, count, then per call
-- its function, event id and record (see `record`).
local hmax, count = tonumber(arg()), tonumber(arg())
for i = 1, count do
  local fn, eid = arg(), arg()
  record(fn, eid, arg())
end
flush_runs(hmax)
return count
"""

SCRIPTS = {
    "record": RECORD,
    "dead_replay": DEAD_REPLAY,
    "dead_drop": DEAD_DROP,
    "redeliver": REDELIVER,
    "prune_events": PRUNE_EVENTS,
    "prune_runs": PRUNE_RUNS,
}
