//! The server-side Lua scripts. Each runs atomically on the node that holds
//! the store's hash slot; every one takes the store's keys in one order:
//!
//! | `KEYS[i]` | key | type |
//! | --- | --- | --- |
//! | 1 | `{tag}:rev` | string: the revision |
//! | 2 | `{tag}:val` | hash: key → value |
//! | 3 | `{tag}:ver` | hash: key → version |
//! | 4 | `{tag}:exp` | sorted set: key by expiry (Unix ms, server clock) |
//! | 5 | `{tag}:log` | stream: one entry per revision, id `<revision>-0` |
//! | 6 | `{tag}:done:<batch>` | string: a batch's outcome (apply only) |
//!
//! `ARGV[1]` is always the change log's length (`XADD MAXLEN ~`).
//!
//! Revisions start at the server's clock in microseconds when a store has
//! none, not at 0: after the data is lost (a restart without persistence),
//! the store's revisions start again above every revision a client saw, so
//! watches see a gap and stores re-list instead of ignoring new changes as
//! old ones.
//!
//! A log entry's fields are the changed keys, in the order of their last write
//! in the batch, each with `+<value>` (put), `~<value>` (put with a time to
//! live) or `-` (delete).

use std::sync::OnceLock;

use redis::Script;

/// Helpers every writing script starts with.
const PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(n) return string.format('%.0f', n) end
-- The store's revision. A store without one (new, or its data lost) starts
-- at the server's clock in microseconds, so revisions never go back below
-- what a client saw before the data was lost.
local function current()
  local rev = redis.call('GET', KEYS[1])
  if rev then return tonumber(rev) end
  local t = redis.call('TIME')
  local origin = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[1], num(origin))
  return origin
end
-- Records one revision's changes (a flat key, change list) and returns it.
local function commit(fields)
  local rev = redis.call('INCR', KEYS[1])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[1], num(rev) .. '-0', unpack(fields))
  return rev
end
-- Removes up to 1000 keys whose time is up, in one revision of their own.
local function expire_due(now)
  local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
  if #due == 0 then return current() end
  local fields = {}
  for _, k in ipairs(due) do
    fields[#fields + 1] = k
    fields[#fields + 1] = '-'
  end
  redis.call('HDEL', KEYS[2], unpack(due))
  redis.call('HDEL', KEYS[3], unpack(due))
  redis.call('ZREM', KEYS[4], unpack(due))
  return commit(fields)
end
";

/// Applies a batch. `ARGV[2]`: `1` for all-or-nothing; `ARGV[3]`: seconds to
/// keep the outcome for retries; then five arguments per op: `p` or `d`, the
/// key, the value (empty for a delete), the time to live in milliseconds
/// (empty for none), and the precondition (empty, `a` for absent, or
/// `v<version>`).
///
/// Returns `<revision>,<outcome>,...` with one outcome per op: `A<version>`
/// applied, `C` or `C<version>` conflict (the key's actual version), `X`
/// aborted. A batch id seen before gets its recorded answer and changes
/// nothing, so a batch resent after a lost answer applies once.
const APPLY: &str = r"
local done = redis.call('GET', KEYS[6])
if done then return done end
local now = now_ms()
local cur = expire_due(now)
local n = (#ARGV - 3) / 5
local function op(i)
  local b = 3 + (i - 1) * 5
  return ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
end
local function version_of(k)
  local v = redis.call('HGET', KEYS[3], k)
  if v and redis.call('HEXISTS', KEYS[2], k) == 1 then return tonumber(v) end
  return nil
end
local function holds(pre, actual)
  if pre == '' then return true end
  if pre == 'a' then return actual == nil end
  return actual ~= nil and num(actual) == string.sub(pre, 2)
end
local function conflict(actual)
  if actual then return 'C' .. num(actual) end
  return 'C'
end
local function finish(rev, out)
  table.insert(out, 1, num(rev))
  local answer = table.concat(out, ',')
  redis.call('SET', KEYS[6], answer, 'EX', ARGV[3])
  return answer
end
local out = {}
if ARGV[2] == '1' then
  local shadow = {}
  local failed = nil
  for i = 1, n do
    local kind, k, _, _, pre = op(i)
    local actual
    local s = shadow[k]
    if s == nil then actual = version_of(k) elseif s == false then actual = nil else actual = -1 end
    if not holds(pre, actual) then
      failed = i
      break
    end
    shadow[k] = (kind == 'p')
  end
  if failed then
    local _, k = op(failed)
    local actual = version_of(k)
    for i = 1, n do
      if i == failed then out[i] = conflict(actual) else out[i] = 'X' end
    end
    return finish(cur, out)
  end
end
local nextv = cur + 1
local changes = {}
local pos = {}
local function record(k, change)
  local p = pos[k]
  if p then changes[p] = false end
  changes[#changes + 1] = { k, change }
  pos[k] = #changes
end
for i = 1, n do
  local kind, k, v, ttl, pre = op(i)
  local actual = version_of(k)
  if not holds(pre, actual) then
    out[i] = conflict(actual)
  elseif kind == 'p' then
    local old = redis.call('HGET', KEYS[2], k)
    local expiring = redis.call('ZSCORE', KEYS[4], k)
    if ttl == '' and actual and old == v and not expiring then
      out[i] = 'A' .. num(actual)
    else
      redis.call('HSET', KEYS[2], k, v)
      redis.call('HSET', KEYS[3], k, num(nextv))
      if ttl ~= '' then
        redis.call('ZADD', KEYS[4], num(now + tonumber(ttl)), k)
      elseif expiring then
        redis.call('ZREM', KEYS[4], k)
      end
      if ttl ~= '' then record(k, '~' .. v) else record(k, '+' .. v) end
      out[i] = 'A' .. num(nextv)
    end
  else
    if actual or redis.call('HEXISTS', KEYS[2], k) == 1 or redis.call('HEXISTS', KEYS[3], k) == 1 then
      redis.call('HDEL', KEYS[2], k)
      redis.call('HDEL', KEYS[3], k)
      redis.call('ZREM', KEYS[4], k)
      record(k, '-')
      out[i] = 'A' .. num(nextv)
    else
      out[i] = 'A' .. num(cur)
    end
  end
end
local fields = {}
for _, c in ipairs(changes) do
  if c then
    fields[#fields + 1] = c[1]
    fields[#fields + 1] = c[2]
  end
end
local rev = cur
if #fields > 0 then rev = commit(fields) end
return finish(rev, out)
";

/// Removes keys whose time is up; returns milliseconds until the next key
/// expires, or -1 when none will.
const REAP: &str = r"
local now = now_ms()
expire_due(now)
local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if #first == 0 then return -1 end
local wait = tonumber(first[2]) - now
if wait < 0 then wait = 0 end
return math.floor(wait)
";

/// Reads one key (`ARGV[2]`): `{value, version}`, or an empty array when the
/// key is missing or its time is up. Writes nothing.
const READ: &str = r"
local k = ARGV[2]
local v = redis.call('HGET', KEYS[2], k)
local ver = redis.call('HGET', KEYS[3], k)
if not v or not ver then return {} end
local exp = redis.call('ZSCORE', KEYS[4], k)
if exp and tonumber(exp) <= now_ms() then return {} end
return { v, ver }
";

/// Lists the keys starting with `ARGV[2]`: `{revision, key, value, version,
/// ...}`, as of one revision, leaving out keys whose time is up. Writes
/// nothing but the first revision of a store that has none.
const LIST: &str = r"
local now = now_ms()
local rev = num(current())
local p = ARGV[2]
local out = { rev }
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local k = all[i]
  if p == '' or string.sub(k, 1, #p) == p then
    local ver = redis.call('HGET', KEYS[3], k)
    if ver then
      local exp = redis.call('ZSCORE', KEYS[4], k)
      if not exp or tonumber(exp) > now then
        out[#out + 1] = k
        out[#out + 1] = all[i + 1]
        out[#out + 1] = ver
      end
    end
  end
end
return out
";

/// The log after revision `ARGV[2]`, at most `ARGV[3]` entries:
/// `{revision, 'ok', entries}`, or `{revision, 'gap'}` when the log no longer
/// holds the next revision (trimmed) or the store's revision is behind `from`
/// (its data was lost). Writes nothing but the first revision of a store
/// that has none.
const SINCE: &str = r"
local rev = current()
local from = tonumber(ARGV[2])
if from > rev then return { num(rev), 'gap' } end
if from == rev then return { num(rev), 'ok', {} } end
local first = num(from + 1) .. '-0'
local entries = redis.call('XRANGE', KEYS[5], first, '+', 'COUNT', ARGV[3])
if #entries == 0 or entries[1][1] ~= first then return { num(rev), 'gap' } end
return { num(rev), 'ok', entries }
";

/// The scripts, compiled once (each is sent by hash, and loaded on `NOSCRIPT`).
pub(crate) struct Scripts {
    pub(crate) apply: Script,
    pub(crate) reap: Script,
    pub(crate) read: Script,
    pub(crate) list: Script,
    pub(crate) since: Script,
}

pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            apply: with_prelude(APPLY),
            reap: with_prelude(REAP),
            read: with_prelude(READ),
            list: with_prelude(LIST),
            since: with_prelude(SINCE),
        }
    })
}
