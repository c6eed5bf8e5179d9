//! The Lua scripts the broker runs in Redis. Each call is one script, so
//! each is atomic; every key a script touches is one channel's and shares
//! its hash tag. Redis may run a script by its SHA (EVALSHA); redis-rs loads
//! it on NOSCRIPT (after a Redis restart, say) and retries.

/// KEYS: meta, stream. ARGV: publication, history_size, history_ttl_ms
/// (0 = none), meta_ttl_ms (0 = none), new epoch, pub/sub channel.
/// Returns {offset, epoch}.
pub(crate) const PUBLISH: &str = r#"
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', meta, 'e', epoch)
  -- History without its meta belongs to an epoch that is gone.
  redis.call('DEL', stream)
end
local top = redis.call('HINCRBY', meta, 'o', 1)
local off = string.format('%d', top)
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', stream, 'MAXLEN', ARGV[2], off .. '-1', 'd', ARGV[1])
  if ARGV[3] ~= '0' then
    redis.call('PEXPIRE', stream, ARGV[3])
  end
end
if ARGV[4] ~= '0' then
  redis.call('PEXPIRE', meta, ARGV[4])
end
redis.call('PUBLISH', ARGV[6], off .. ':' .. string.len(epoch) .. ':' .. epoch .. ARGV[1])
return {top, epoch}
"#;

/// KEYS: meta, stream. ARGV: since offset ('' = none), since epoch ('' =
/// any, as Centrifugo's `node.history` accepts), limit
/// ('' = all), reverse ('0'/'1'), meta_ttl_ms (0 = none), new epoch.
/// Returns {top offset, epoch, 0} when `since` cannot be served (another
/// epoch, or beyond the top), else {top offset, epoch, 1, entries}.
pub(crate) const HISTORY: &str = r#"
local meta, stream = KEYS[1], KEYS[2]
local m = redis.call('HMGET', meta, 'o', 'e')
local top, epoch = m[1], m[2]
if not epoch then
  epoch = ARGV[6]
  top = '0'
  redis.call('HSET', meta, 'e', epoch)
  redis.call('DEL', stream)
end
if not top then
  top = '0'
end
if ARGV[5] ~= '0' then
  redis.call('PEXPIRE', meta, ARGV[5])
end
local since = nil
if ARGV[1] ~= '' then
  since = tonumber(ARGV[1])
  if (ARGV[2] ~= '' and ARGV[2] ~= epoch) or since > tonumber(top) then
    return {top, epoch, 0}
  end
end
local entries = {}
if ARGV[3] ~= '0' then
  local count = {}
  if ARGV[3] ~= '' then
    count = {'COUNT', ARGV[3]}
  end
  if ARGV[4] == '0' then
    local start = '-'
    if since then
      start = string.format('%d', since + 1)
    end
    entries = redis.call('XRANGE', stream, start, '+', unpack(count))
  elseif not since then
    entries = redis.call('XREVRANGE', stream, '+', '-', unpack(count))
  elseif since > 1 then
    entries = redis.call('XREVRANGE', stream, string.format('%d', since - 1), '-', unpack(count))
  end
end
return {top, epoch, 1, entries}
"#;

/// Shared by the presence scripts: KEYS[1] is the zset of client -> expiry
/// (ms, Redis clock), KEYS[2] the hash of client -> info, KEYS[3] the hash
/// of client -> user. Drops expired clients and returns the Redis time in ms.
const PRESENCE_PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nows = string.format('%d', now)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nows)
local i = 1
while i <= #expired do
  local j = math.min(i + 999, #expired)
  redis.call('HDEL', KEYS[2], unpack(expired, i, j))
  redis.call('HDEL', KEYS[3], unpack(expired, i, j))
  i = j + 1
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', nows)
end
"#;

/// ARGV: client, user, info, ttl_ms.
pub(crate) fn presence_add() -> String {
    format!(
        "{PRESENCE_PRELUDE}{}",
        r#"
local ttl = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], string.format('%d', now + ttl), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
-- The keys live as long as their longest-lived client.
for k = 1, 3 do
  local left = redis.call('PTTL', KEYS[k])
  if left < ttl then
    redis.call('PEXPIRE', KEYS[k], ARGV[4])
  end
end
return 1
"#
    )
}

/// ARGV: client.
pub(crate) fn presence_remove() -> String {
    format!(
        "{PRESENCE_PRELUDE}{}",
        r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"#
    )
}

/// Returns a flat list {client, user, info, ...}.
pub(crate) fn presence_get() -> String {
    format!(
        "{PRESENCE_PRELUDE}{}",
        r#"
local all = redis.call('HGETALL', KEYS[2])
local out = {}
for k = 1, #all, 2 do
  local user = redis.call('HGET', KEYS[3], all[k]) or ''
  out[#out + 1] = all[k]
  out[#out + 1] = user
  out[#out + 1] = all[k + 1]
end
return out
"#
    )
}

/// Returns {clients, distinct users}.
pub(crate) fn presence_stats() -> String {
    format!(
        "{PRESENCE_PRELUDE}{}",
        r#"
local users = redis.call('HVALS', KEYS[3])
local seen, n = {}, 0
for _, u in ipairs(users) do
  if not seen[u] then
    seen[u] = true
    n = n + 1
  end
end
return {redis.call('HLEN', KEYS[2]), n}
"#
    )
}

/// Occupancy (cluster-wide occupied/vacated). KEYS: the channel's holder
/// set, this node's index of held channels. ARGV: node id, channel, '1'
/// holds / '0' lets go. Returns 1 when the holder set went from empty to
/// not empty (holds) or from not empty to empty (lets go), else 0.
pub(crate) const OCCUPANCY_HOLD: &str = r#"
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[2], ARGV[2])
  if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
    return 1
  end
  return 0
end
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 0 then
  return 1
end
return 0
"#;

/// KEYS: the zset of node -> expiry (ms, Redis clock). ARGV: node id,
/// ttl_ms. Returns 1 when the node had lapsed (absent, or expired and
/// perhaps being swept), else 0.
pub(crate) const OCCUPANCY_HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
if old and tonumber(old) > now then
  return 0
end
return 1
"#;

/// KEYS: the zset of nodes. ARGV: key prefix, batch size, the caller's
/// node id. Takes one expired node (not the caller), pops up to a batch
/// of its held channels and removes it from their holder sets; forgets
/// the node once it holds nothing. Returns {} when no node is expired,
/// else {node, channel left empty, ...}. Names the index and holder keys
/// itself (one Redis per shard; not for Redis Cluster). A node that
/// heartbeats again is no longer expired: no further batch touches it.
pub(crate) const OCCUPANCY_SWEEP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now), 'LIMIT', 0, 2)
local node = nil
for _, n in ipairs(dead) do
  if n ~= ARGV[3] then
    node = n
    break
  end
end
if not node then
  return {}
end
local index = ARGV[1] .. ':node:' .. node
local out = {node}
local channels = redis.call('SPOP', index, tonumber(ARGV[2]))
for _, ch in ipairs(channels) do
  local holders = ARGV[1] .. ':{' .. ch .. '}:n'
  if redis.call('SREM', holders, node) == 1 and redis.call('EXISTS', holders) == 0 then
    out[#out + 1] = ch
  end
end
if redis.call('EXISTS', index) == 0 then
  redis.call('ZREM', KEYS[1], node)
end
return out
"#;
