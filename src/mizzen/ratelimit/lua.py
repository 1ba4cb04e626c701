"""The algorithms of algorithms.py and priority.py, written again in Lua for Redis: one script call decides
one descriptor atomically (read state, decide, write state, set its expiry), so several rate-limit service
instances can share counters. The arithmetic is the same expression for expression (IEEE doubles on both
sides, state stored with %.17g so it round-trips exactly); tests/ratelimit/test_redis_parity.py feeds both
the same request sequences and compares every decision.

KEYS[1] the limit's counter, KEYS[2] the priority class's counter (priority only).
ARGV: algorithm (state kind), limit, period, capacity, hits, max_delay ('' none), now ('' = Redis TIME),
priority ('1'/'0'), class limit ('' = no reserved share), class capacity.
Returns {allowed, remaining, reset_after, retry_after, delay, from_reserve} as strings.
"""
from __future__ import annotations

SCRIPT = r"""
local EPS = 1e-9
local HUGE = math.huge
local function fmt(x) return string.format('%.17g', x) end
local function floor0(x) local v = math.floor(x + EPS); if v < 0 then return 0 end; return v end
local function load(key)
  local v = redis.call('GET', key)
  if not v then return nil end
  local t = {}
  for w in string.gmatch(v, '%S+') do t[#t + 1] = tonumber(w) end
  return t
end
local function save(key, t, ttl)
  local parts = {}
  for i, x in ipairs(t) do parts[i] = fmt(x) end
  local ms = math.ceil(ttl * 1000) + 1000
  redis.call('SET', key, table.concat(parts, ' '), 'PX', ms)
end

local function fixed(key, r, now, hits, force)
  local p, lim = r.period, r.limit
  local start = math.floor(now / p) * p
  local st = load(key)
  local count = 0
  if st and st[1] == start then count = st[2] end
  local reset = start + p - now
  if force or count + hits <= lim then
    count = count + hits
    save(key, {start, count}, start + p - now)
    return {1, math.max(0, lim - count), reset, 0, 0}
  end
  local retry = reset
  if hits > lim then retry = HUGE end
  return {0, math.max(0, lim - count), reset, retry, 0}
end

local function sliding(key, r, now, hits, force)
  local p, lim = r.period, r.limit
  local start = math.floor(now / p) * p
  local st = load(key)
  local prev, cur = 0, 0
  if st then
    if st[1] == start then prev, cur = st[2], st[3]
    elseif st[1] == start - p then prev, cur = st[3], 0 end
  end
  local elapsed = now - start
  local used = prev * (1.0 - elapsed / p) + cur
  local function reset()
    if cur > 0 then return 2 * p - elapsed elseif prev > 0 then return p - elapsed else return 0 end
  end
  if force or used + hits <= lim + EPS then
    cur = cur + hits
    used = used + hits
    save(key, {start, prev, cur}, start + 2 * p - now)
    return {1, floor0(lim - used), reset(), 0, 0}
  end
  local retry
  if hits > lim then retry = HUGE
  elseif cur + hits <= lim and prev > 0 then
    retry = math.max(p * (1.0 - (lim - cur - hits) / prev) - elapsed, 0)
  else
    local tn = 0
    if cur > 0 then tn = p * (1.0 - (lim - hits) / cur) end
    retry = (p - elapsed) + math.max(tn, 0)
  end
  return {0, floor0(lim - used), reset(), retry, 0}
end

local function slog(key, r, now, hits, force)
  local p, lim = r.period, r.limit
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - p))
  local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local used, log = 0, {}
  for i = 1, #entries, 2 do
    local h = tonumber(string.match(entries[i], '^[^:]*:(%d+):'))
    used = used + h
    log[#log + 1] = {tonumber(entries[i + 1]), h}
  end
  if force or used + hits <= lim then
    local n = redis.call('ZCARD', key)
    redis.call('ZADD', key, fmt(now), fmt(now) .. ':' .. string.format('%d', hits) .. ':' .. n)
    redis.call('PEXPIRE', key, math.ceil(p * 1000) + 1000)
    used = used + hits
    local first = now
    if #log > 0 then first = log[1][1] end
    return {1, math.max(0, lim - used), first + p - now, 0, 0}
  end
  local need, freed, retry = used + hits - lim, 0, HUGE
  if hits <= lim then
    for _, e in ipairs(log) do
      freed = freed + e[2]
      if freed >= need then retry = e[1] + p - now; break end
    end
  end
  local reset = 0
  if #log > 0 then reset = log[1][1] + p - now end
  return {0, math.max(0, lim - used), reset, retry, 0}
end

local function token(key, r, now, hits, force, maxd)
  local rate, cap = r.limit / r.period, r.cap
  local st = load(key)
  local tokens = cap
  if st then tokens = math.min(cap, st[1] + math.max(0.0, now - st[2]) * rate) end
  if tokens + EPS >= hits then
    tokens = tokens - hits
    save(key, {tokens, now}, (cap - tokens) / rate)
    return {1, floor0(tokens), (cap - tokens) / rate, 0, 0}
  end
  local wait = (hits - tokens) / rate
  if force then
    tokens = math.max(tokens - hits, -cap)
    save(key, {tokens, now}, (cap - tokens) / rate)
    return {1, 0, (cap - tokens) / rate, 0, 0}
  end
  if maxd and wait <= maxd + EPS and hits <= cap then
    tokens = tokens - hits
    save(key, {tokens, now}, (cap - tokens) / rate)
    return {1, 0, (cap - tokens) / rate, 0, wait}
  end
  if hits > cap then wait = HUGE elseif maxd then wait = wait - maxd end
  return {0, floor0(tokens), (cap - tokens) / rate, wait, 0}
end

local function lmeter(key, r, now, hits, force)
  local rate, cap = r.limit / r.period, r.cap
  local st = load(key)
  local level = 0.0
  if st then level = math.max(0.0, st[1] - math.max(0.0, now - st[2]) * rate) end
  if force or level + hits <= cap + EPS then
    level = math.min(level + hits, 2.0 * cap)
    save(key, {level, now}, level / rate)
    return {1, floor0(cap - level), level / rate, 0, 0}
  end
  local retry = HUGE
  if hits <= cap then retry = (level + hits - cap) / rate end
  return {0, floor0(cap - level), level / rate, retry, 0}
end

local function lqueue(key, r, now, hits, force, maxd)
  local t, lim = r.period / r.limit, r.limit
  local bound = maxd or 0.0
  local st = load(key)
  local start = now
  if st then start = math.max(now, st[1]) end
  local delay = start - now
  if force or delay <= bound + EPS then
    local nxt = start + hits * t
    if force then nxt = math.min(nxt, now + bound + lim * t) end
    save(key, {nxt}, nxt - now)
    local free = 0
    if nxt - now <= bound + EPS then free = floor0((bound - (nxt - now)) / t + 1) end
    return {1, free, nxt - now, 0, delay}
  end
  return {0, 0, start - now, delay - bound, 0}
end

local function gcra(key, r, now, hits, force, maxd)
  local t, cap = r.period / r.limit, r.cap
  local st = load(key)
  local tat = now
  if st then tat = math.max(st[1], now) end
  local new_tat = tat + hits * t
  local allow_at = new_tat - cap * t
  local wait = allow_at - now
  if wait <= EPS or force or (maxd and wait <= maxd + EPS and hits <= cap) then
    if force then new_tat = math.min(new_tat, now + 2 * cap * t) end
    local delay = 0.0
    if maxd and not force then delay = math.max(0.0, wait) end
    save(key, {new_tat}, new_tat - now)
    return {1, floor0((cap * t - (new_tat - now)) / t), new_tat - now, 0, delay}
  end
  local retry = HUGE
  if hits <= cap then retry = wait - (maxd or 0.0) end
  return {0, floor0((cap * t - (tat - now)) / t), tat - now, retry, 0}
end

local ALGS = {fixed_window = fixed, sliding_window = sliding, sliding_log = slog, token_bucket = token,
              leaky_bucket = lmeter, leaky_bucket_queue = lqueue, gcra = gcra}

local function out(res, reserve)
  return {tostring(res[1]), string.format('%d', res[2]), fmt(res[3]), fmt(res[4]), fmt(res[5]), tostring(reserve)}
end

local alg = ALGS[ARGV[1]]
if not alg then return redis.error_reply('unknown algorithm ' .. ARGV[1]) end
local r = {limit = tonumber(ARGV[2]), period = tonumber(ARGV[3]), cap = tonumber(ARGV[4])}
local hits = tonumber(ARGV[5])
local maxd = nil
if ARGV[6] ~= '' then maxd = tonumber(ARGV[6]) end
local now
if ARGV[7] ~= '' then now = tonumber(ARGV[7]) else
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) + tonumber(tm[2]) / 1000000
end
if ARGV[8] ~= '1' then return out(alg(KEYS[1], r, now, hits, false, maxd), 0) end
local cd = nil
if ARGV[9] ~= '' then
  local cr = {limit = tonumber(ARGV[9]), period = r.period, cap = tonumber(ARGV[10])}
  cd = alg(KEYS[2], cr, now, hits, false, nil)
  if cd[1] == 1 then
    local pd = alg(KEYS[1], r, now, hits, true, nil)
    return out({1, pd[2], pd[3], 0, 0}, 1)
  end
end
local pd = alg(KEYS[1], r, now, hits, false, nil)
if pd[1] == 1 then return out(pd, 0) end
local retry = pd[4]
if cd then retry = math.min(retry, cd[4]) end
return out({0, pd[2], pd[3], retry, 0}, 0)
"""
