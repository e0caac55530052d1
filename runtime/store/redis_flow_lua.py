"""Lua scripts of flow control on the Redis store (SPEC 12); see `redis_flow`.

Key layout (under `fnrun:`), per function `fn` with flow rules:

| key | type | holds |
| --- | --- | --- |
| `fi:{fn}` | hash | delivery `m` (first id, sortable) -> cjson `{e, k, a, u}`: event, key, |
|  |  | attempts used, due (ms) |
| `fk:{fn}:{key}` | sorted set | the key's waiting deliveries: score 0 (`order: key`: |
|  |  | members sort in publish order) or due |
| `fr:{fn}` | sorted set | keys that may start one now: score = due of the key's head |
| `fb:{fn}` | hash | key -> deliveries of that key running |
| `fx:{fn}` | hash | running delivery -> node (consumer name) |
| `fl:{fn}` | sorted set | running delivery -> lease end (ms); past it, another node takes it over |
| `fs:{fn}:{key}` | sorted set | starts within the rate period (score = ms) |

Times stored here (due `u`, rate log scores, lease ends) are Redis's clock
(`TIME`), so every node measures one rate window, one quiet period and one
lease, whatever its own clock says; a node's `now` moves it only by how far
its (injectable) clock is ahead of its wall clock, which tests use to jump ahead.

Fresh deliveries arrive in `q:{fn}` (and dead-letter replays, with their
first id); a flow claim moves them into the structures above in stream
order (*admission*), computing each one's key from its event once. Every
script starts with the function's rules: fn, per-key limit (0 = none),
order (1/0).
"""

from __future__ import annotations

from runtime.store.redis_lua import PRELUDE

FLOW = PRELUDE + """
local fn, klimit, order = arg(), tonumber(arg()), arg() == '1'
local FI, FR, FB, FX, FL = P .. 'fi:' .. fn, P .. 'fr:' .. fn, P .. 'fb:' .. fn,
  P .. 'fx:' .. fn, P .. 'fl:' .. fn
local function fk(key) return P .. 'fk:' .. fn .. ':' .. key end

-- A delivery's first stream id `ms-seq`, written so that members sort in publish order.
local function member(d)
  local dash = string.find(d, '-', 1, true)
  return string.format('%015d-%010d', tonumber(string.sub(d, 1, dash - 1)),
    tonumber(string.sub(d, dash + 1)))
end
local function first_id(m)
  local dash = string.find(m, '-', 1, true)
  return tonumber(string.sub(m, 1, dash - 1)) .. '-' .. tonumber(string.sub(m, dash + 1))
end

local function info_of(m)
  local raw = redis.call('HGET', FI, m)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- Is `key` able to start its head now or later? Keep `fr` saying so.
local function refresh(key)
  local busy = tonumber(redis.call('HGET', FB, key) or '0')
  local head = redis.call('ZRANGE', fk(key), 0, 0)
  if #head == 0 or (klimit > 0 and busy >= klimit) then
    redis.call('ZREM', FR, key)
    return
  end
  local info = info_of(head[1])
  redis.call('ZADD', FR, info.u, key)
end

local function wait(m, info)
  redis.call('HSET', FI, m, cjson.encode(info))
  redis.call('ZADD', fk(info.k), order and 0 or info.u, m)
  refresh(info.k)
end

-- A running delivery stops running (settled, given back or taken over).
local function unrun(m, info)
  redis.call('HDEL', FX, m)
  redis.call('ZREM', FL, m)
  if redis.call('HINCRBY', FB, info.k, -1) <= 0 then redis.call('HDEL', FB, info.k) end
end

local function ours(m, me) return redis.call('HGET', FX, m) == me end

-- Redis's clock (ms), plus `ahead`: how far the caller's clock runs ahead of its wall.
local function clock(ahead)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ahead
end
"""

CLAIM = FLOW + """
local me, room, now, lease = arg(), tonumber(arg()), tonumber(arg()), tonumber(arg())
now = clock(now - tonumber(arg()))  -- the node's now minus its wall: both its clock
local total, rate, period, keyed = tonumber(arg()), tonumber(arg()), tonumber(arg()), arg() == '1'
local admit_max, debounce, hmax = tonumber(arg()), tonumber(arg()), tonumber(arg())
local depth = tonumber(arg())
local path = {}
for i = 1, depth do path[i] = arg() end

local function key_of(ev)
  local v = ev
  for _, part in ipairs(path) do
    if type(v) ~= 'table' then return '' end
    local nv = v[part]
    if nv == nil and tonumber(part) then nv = v[tonumber(part) + 1] end
    v = nv
    if v == nil or v == cjson.null then return '' end
  end
  local t, s = type(v), nil
  if t == 'string' then s = v
  elseif t == 'boolean' then s = v and 'true' or 'false'
  elseif t == 'number' then
    if v == math.floor(v) and math.abs(v) < 1e15 then s = string.format('%d', v)
    else s = string.format('%.17g', v) end
  else s = cjson.encode(v) end
  return string.sub(s, 1, 256)
end

-- Take over deliveries of dead nodes (heartbeat gone) and past their lease.
local function requeue(m)
  local info = info_of(m)
  if not info then
    redis.call('HDEL', FX, m)
    redis.call('ZREM', FL, m)
    return
  end
  unrun(m, info)
  info.u = now
  wait(m, info)
end
local alive = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', FL, '-inf', now)) do requeue(m) end
local running = redis.call('HGETALL', FX)
for i = 1, #running, 2 do
  local node = running[i + 1]
  if alive[node] == nil then alive[node] = redis.call('EXISTS', P .. 'node:' .. node) == 1 end
  if not alive[node] then requeue(running[i]) end
end

-- Debounce: a newer event of the key replaces what waits; a run record says so.
local function supersede(m, info, by)
  redis.call('ZREM', fk(info.k), m)
  redis.call('HDEL', FI, m)
  release_event(info.e)
  local inv = string.sub(redis.sha1hex(fn .. ' ' .. m), 1, 12)
  local body = cjson.encode({invocation = inv, event_id = info.e, event_type = info.y or '',
    ['function'] = fn, attempt = 0, status = 'superseded', started = now / 1000, duration = 0,
    error = 'superseded by event ' .. by, traceback = cjson.null, result = cjson.null,
    emitted = {}, logs = {}})
  record(fn, info.e, inv .. ' ' .. string.format('%d', now) .. ' superseded\\n' .. body)
end

local function ms_of(d) return tonumber(string.sub(d, 1, string.find(d, '-', 1, true) - 1)) end

-- Admission, in stream order: retries left in `r:{fn}` first, then `q:{fn}`.
local admitted = 0
for _, s in ipairs({P .. 'r:' .. fn, P .. 'q:' .. fn}) do
  if admitted < admit_max and redis.call('EXISTS', s) == 1 then
    for _, e in ipairs(redis.call('XRANGE', s, '-', '+', 'COUNT', admit_max - admitted)) do
      local f = fields(e[2])
      local body = redis.call('HGET', P .. 'ev:' .. f['e'], 'e')
      if body then
        local d = f['d'] or e[1]
        local m = member(d)
        if redis.call('HEXISTS', FI, m) == 0 then
          local ev = cjson.decode(body)
          local info = {e = f['e'], k = key_of(ev), a = used_before(fn, f), u = now}
          if debounce > 0 then
            info.y, info.u = ev['type'], ms_of(d) + debounce
            for _, old in ipairs(redis.call('ZRANGE', fk(info.k), 0, -1)) do
              supersede(old, info_of(old), f['e'])
            end
          end
          wait(m, info)
        end
      end
      redis.call('XACK', s, G, e[1])
      redis.call('XDEL', s, e[1])
      admitted = admitted + 1
    end
  end
end

local out, ready_at = {}, ''
room = math.min(room, total - redis.call('HLEN', FX))
if room > 0 then
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', FR, '-inf', now, 'LIMIT', 0, room * 4 + 64)) do
    local busy = tonumber(redis.call('HGET', FB, key) or '0')
    while #out < room and (klimit == 0 or busy < klimit) do
      local head = redis.call('ZRANGE', fk(key), 0, 0)
      if #head == 0 then break end
      local m = head[1]
      local info = info_of(m)
      if info.u > now then break end
      if rate > 0 then
        local log = P .. 'fs:' .. fn .. ':' .. (keyed and key or '')
        redis.call('ZREMRANGEBYSCORE', log, '-inf', now - period)
        if redis.call('ZCARD', log) >= rate then
          local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
          local free = tonumber(oldest[2]) + period
          if ready_at == '' or free < ready_at then ready_at = free end
          break
        end
        redis.call('ZADD', log, now, m)
        redis.call('PEXPIRE', log, period + 1000)
      end
      redis.call('ZREM', fk(key), m)
      busy = redis.call('HINCRBY', FB, key, 1)
      redis.call('HSET', FX, m, me)
      redis.call('ZADD', FL, now + lease, m)
      info.a = info.a + 1
      redis.call('HSET', FI, m, cjson.encode(info))
      local body = redis.call('HGET', P .. 'ev:' .. info.e, 'e')
      if body then
        out[#out + 1] = {first_id(m), info.a, body}
      else  -- the event is gone (dropped by hand): nothing left to deliver
        unrun(m, info)
        redis.call('HDEL', FI, m)
      end
    end
    refresh(key)
    if #out >= room then break end
  end
end
flush_runs(hmax)
local nxt = redis.call('ZRANGEBYSCORE', FR, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local due = nxt[2] or ''
if ready_at ~= '' then ready_at = string.format('%d', ready_at) end
return {out, ready_at, due, string.format('%d', now)}
"""

SUCCEED = FLOW + """
-- ARGV after the rules: me, hmax, count, then per item: "d emits",
-- event id, run record, then its emits' publish_one arguments.
local me, hmax, count = arg(), tonumber(arg()), tonumber(arg())
local out = {}
for i = 1, count do
  local d, emits = string.match(arg(), '^(%S+) (%d+)$')
  local eid, hist = arg(), arg()
  record(fn, eid, hist)
  local m = member(d)
  out[i] = 0
  if ours(m, me) then
    local info = info_of(m)
    unrun(m, info)
    redis.call('HDEL', FI, m)
    refresh(info.k)
    release_event(eid)
    for _ = 1, tonumber(emits) do publish_one() end
    out[i] = 1
  else  -- taken over by another node, whose emits are the ones to keep
    for _ = 1, tonumber(emits) do
      argi = argi + 4
      argi = argi + tonumber(arg())
    end
  end
end
woken[fn] = true
flush_runs(hmax)
wake()
return out
"""

FAIL = FLOW + """
local me, d, eid, hist, hmax = arg(), arg(), arg(), arg(), tonumber(arg())
local retry_at, now, attempts, err, tb = arg(), arg(), arg(), arg(), arg()
record(fn, eid, hist)
flush_runs(hmax)
local m = member(d)
if not ours(m, me) then return 0 end
local info = info_of(m)
unrun(m, info)
woken[fn] = true
if retry_at ~= '' then
  info.u = clock(tonumber(retry_at) - tonumber(now) * 1000)  -- its backoff from now
  wait(m, info)
  wake()
  return 1
end
redis.call('HDEL', FI, m)
refresh(info.k)
local id = fn .. '/' .. d
redis.call('HSET', P .. 'dl:' .. id, 'function', fn, 'event', eid, 'd', d,
  'attempts', attempts, 'error', err, 'traceback', tb, 'failed_at', now)
redis.call('ZADD', P .. 'dz', now, id)
redis.call('ZADD', P .. 'dz:' .. fn, now, id)
wake()
return 2
"""

RELEASE = FLOW + """
-- Give back claimed deliveries that never started: due now, the attempt not counted.
local me, count = arg(), tonumber(arg())
local now = clock(0)
local done = 0
for _ = 1, count do
  local m = member(arg())
  if ours(m, me) then
    local info = info_of(m)
    unrun(m, info)
    info.a, info.u = math.max(info.a - 1, 0), now
    wait(m, info)
    done = done + 1
  end
end
woken[fn] = true
wake()
return done
"""

SCRIPTS = {"flow_claim": CLAIM, "flow_succeed": SUCCEED, "flow_fail": FAIL,
           "flow_release": RELEASE}
