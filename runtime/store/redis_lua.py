"""Lua shared by the Redis store's scripts: key layout, argument reading, common steps.

Key layout (all under `fnrun:`):

| key | type | holds |
| --- | --- | --- |
| `ev:{event}` | hash | `e` event JSON, `n` live-delivery counter (see below) |
| `idx` | stream | per event: `e` id, `y` type, `t` event time (µs), `c` targets; MINID |
| `fns` | set | functions that ever had a delivery |
| `q:{fn}` | stream + group `g` | deliveries: `e` event id; re-adds: `d` first id, `n` attempts |
| `a:{fn}` | hash | attempts per delivery (`d`) of entries re-added before `n` existed |
| `z:{fn}` | sorted set | retries waiting, member `"d:attempts event"`, score = due (ms) |
| `r:{fn}` | stream + group `g` | due retries (moved from `z:{fn}`); claims read it first |
| `dl:{id}`, `dz`, `dz:{fn}` | hash, sorted sets | dead letters and their indexes by time |
| `run:{invocation}` | string | a run record's JSON (`runtime.store.runs`), with its `seq` |
| `runseq` | string | the last run record's `seq` (INCR) |
| `runs` | sorted set | run records by `seq`, member `"invocation started_ms status fn event"` |
| `runs:f:{fn}`, `runs:s:{status}`, `runs:e:{event}` | sorted sets | invocations by `seq` |
| `tick:{key}` | string | last schedule tick fired (epoch seconds) |
| `k:{key}` | string | idempotency keys, with TTL |
| `node:{consumer}` | string | heartbeat of a live node, with TTL |
| `wake` | stream | per script call that enqueued: `f` the functions, space-separated; capped |

Live deliveries of an event, in as few commands as possible: publish writes
only the body (`HSETNX`, which is also the idempotency check) and puts the
target count `c` in the index entry; `n` then counts settled deliveries down
(and redeliveries up) from 0, so live = `c` + `n`. Once retention passes a
live event, pruning sets `n` to MARK + live, and the settle that brings `n`
back to MARK deletes the event: one HINCRBY per settle. An index entry
without `c` (re-indexed by pruning, or written before `c` existed) means `n`
is absolute.

A delivery's stable id is the stream entry id it was first published under
(`d`); a retry re-adds it to the stream under a new entry id that carries `d`.
Attempts cost no write at claim: an attempt is the attempts used before its
entry (`n`, 0 when fresh) plus the entry's delivery count in the consumer
group's PEL, which Redis keeps through a kill -9 of the node; re-adding an
entry (retry, requeue) writes the sum into the new entry's `n`.
Scripts read ARGV flat (no JSON decoding of inputs) and touch keys derived
from their arguments, which is fine on a single Redis (not Redis Cluster).
"""

from __future__ import annotations

PRELUDE = """
local P = 'fnrun:'
local G = 'g'
local MARK = 1000000000000
local argi = 0
local function arg() argi = argi + 1; return ARGV[argi] end

-- Functions known to have a stream and group in this call, and to wake.
local known, woken = {}, {}
local function enqueue(fn, eid, d, used)
  local q = P .. 'q:' .. fn
  woken[fn] = true
  if not known[fn] then
    known[fn] = true
    if redis.call('SADD', P .. 'fns', fn) == 1 then
      redis.pcall('XGROUP', 'CREATE', q, G, '0', 'MKSTREAM')
    end
  end
  if d then return redis.call('XADD', q, '*', 'e', eid, 'd', d, 'n', used or 0) end
  return redis.call('XADD', q, '*', 'e', eid)
end

-- A due retry goes to `r:{fn}`, which claims read before `q:{fn}`: at the tail
-- of `q:{fn}` it waited behind the whole backlog (issue 17 point 12).
local function enqueue_retry(fn, eid, d, used)
  local r = P .. 'r:' .. fn
  woken[fn] = true
  if redis.call('EXISTS', r) == 0 then redis.pcall('XGROUP', 'CREATE', r, G, '0', 'MKSTREAM') end
  return redis.call('XADD', r, '*', 'e', eid, 'd', d, 'n', used)
end

-- The stream and entry id of a claimed entry as the store hands it out:
-- `r:{fn}` entries are written with an `r` before their id.
local function stream_of(fn, entry)
  if string.sub(entry, 1, 1) == 'r' then return P .. 'r:' .. fn, string.sub(entry, 2) end
  return P .. 'q:' .. fn, entry
end

-- Tell every node's wake-up listener (redis_wake) which functions got
-- deliveries in this call: one short entry per call, in a capped stream.
local function wake()
  local names = {}
  for fn in pairs(woken) do names[#names + 1] = fn end
  if #names > 0 then
    redis.call('XADD', P .. 'wake', 'MAXLEN', '~', 100, '*', 'f', table.concat(names, ' '))
  end
end

-- Reads one published item from ARGV: id, body, type, time (µs), n, targets...
local function publish_one()
  local eid, body, typ, at, n = arg(), arg(), arg(), arg(), tonumber(arg())
  local first = argi
  argi = argi + n
  if redis.call('HSETNX', P .. 'ev:' .. eid, 'e', body) == 0 then return 0 end
  redis.call('XADD', P .. 'idx', '*', 'e', eid, 'y', typ, 't', at, 'c', n)
  for i = first + 1, first + n do enqueue(ARGV[i], eid, false) end
  return 1
end

local function publish_many()
  local count = tonumber(arg())
  local out = {}
  for i = 1, count do out[i] = publish_one() end
  return out
end

-- One delivery fewer keeps event `eid` alive; the last one deletes it if
-- retention has already passed it (n back at MARK).
local function release_event(eid)
  local k = P .. 'ev:' .. eid
  if redis.call('HINCRBY', k, 'n', -1) == MARK then redis.call('DEL', k) end
end

-- Forget run records: members of `runs` (see the key layout), with their indexes.
local function drop_runs(members)
  for _, m in ipairs(members) do
    local inv, _, status, fn, eid = string.match(m, '^(%S+) (%S+) (%S+) (%S+) (.*)$')
    redis.call('DEL', P .. 'run:' .. inv)
    redis.call('ZREM', P .. 'runs:f:' .. fn, inv)
    redis.call('ZREM', P .. 'runs:s:' .. status, inv)
    redis.call('ZREM', P .. 'runs:e:' .. eid, inv)
  end
  if #members > 0 then redis.call('ZREM', P .. 'runs', unpack(members)) end
end

-- Keep at most `hmax` run records (plus up to TRIM_EVERY between two trims).
local TRIM_EVERY = 256
local function trim_runs(hmax)
  local over = redis.call('ZCARD', P .. 'runs') - hmax
  if over > 0 then drop_runs(redis.call('ZRANGE', P .. 'runs', 0, math.min(over, 4096) - 1)) end
end

-- Keep a run record: `hist` is "invocation started_ms status", a newline, then
-- its JSON without the seq (see `redis_records.record_json`). Queued, and
-- written with the call's others by `flush_runs`, in a few commands.
local runs_q = {}
local function record(fn, eid, hist)
  local nl = string.find(hist, '\\n', 1, true)
  local inv, started, status = string.match(string.sub(hist, 1, nl - 1), '^(%S+) (%S+) (%S+)$')
  runs_q[#runs_q + 1] = {inv = inv, fn = fn, eid = eid, status = status, started = started,
                         body = string.sub(hist, nl + 2)}
end

local function zadd_later(per, key, seq, member)
  local t = per[key]
  if not t then
    t = {}
    per[key] = t
  end
  t[#t + 1] = seq
  t[#t + 1] = member
end

-- Write the queued run records: bodies with their seq, and the four indexes.
local function flush_runs(hmax)
  local n = #runs_q
  if n == 0 then return end
  local last = redis.call('INCRBY', P .. 'runseq', n)
  local first = last - n + 1
  local bodies, per = {}, {}
  for i, r in ipairs(runs_q) do
    local seq = first + i - 1
    bodies[#bodies + 1] = P .. 'run:' .. r.inv
    bodies[#bodies + 1] = '{"seq":' .. seq .. ',' .. r.body
    zadd_later(per, P .. 'runs', seq, table.concat({r.inv, r.started, r.status, r.fn, r.eid}, ' '))
    zadd_later(per, P .. 'runs:f:' .. r.fn, seq, r.inv)
    zadd_later(per, P .. 'runs:s:' .. r.status, seq, r.inv)
    zadd_later(per, P .. 'runs:e:' .. r.eid, seq, r.inv)
  end
  redis.call('MSET', unpack(bodies))
  for key, args in pairs(per) do redis.call('ZADD', key, unpack(args)) end
  runs_q = {}
  if math.floor(last / TRIM_EVERY) > math.floor((first - 1) / TRIM_EVERY) then trim_runs(hmax) end
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

-- Attempts a delivery had used when stream entry `f` (its fields) was added:
-- its `n`; entries re-added before `n` existed kept theirs in `a:{fn}`.
local function used_before(fn, f)
  if f['n'] then return tonumber(f['n']) end
  if f['d'] then return tonumber(redis.call('HGET', P .. 'a:' .. fn, f['d']) or '0') end
  return 0
end

-- Take a running entry back and put it at the tail of its stream as pending
-- again, with the attempts it used: those before it plus `delivered` (its PEL count).
local function requeue(fn, q, id, delivered)
  local found = redis.call('XRANGE', q, id, id)
  redis.call('XACK', q, G, id)
  if #found == 0 then return 0 end
  local f = fields(found[1][2])
  redis.call('XDEL', q, id)
  local used = used_before(fn, f) + delivered
  if q == P .. 'r:' .. fn then
    enqueue_retry(fn, f['e'], f['d'], used)
  else
    enqueue(fn, f['e'], f['d'] or id, used)
  end
  return 1
end
"""
