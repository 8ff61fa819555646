//! The cluster's Redis layout and the atomic operations on it: leases with fencing tokens, numbered input and event streams, snapshots.
//!
//! Per room `r` (names are prefixed `convene:`):
//! - `room:{r}:lease`  the owner's `node/token`, expiring after the lease
//! - `room:{r}:fence`  the last token handed out; only its holder may append
//! - `room:{r}:in`     inputs, entry ids `0-n` (n from `room:{r}:inputs`), published on `in:{r}`
//! - `room:{r}:ev`     events, entry ids `0-seq`, bounded, published on `ev:{r}`
//! - `room:{r}:snap`   the last snapshot: state, the input it covers, its seq
//!
//! Numbered ids make gaps visible and repairs a range read, and Redis refuses an id that
//! does not increase: a second line of defence behind the fence.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value};

/// A Redis call that failed or took too long: the caller answers `unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis did not answer in time")]
    Timeout,
    #[error("fenced: another node owns the room now")]
    Fenced,
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// The receiving node has not read what fills its inbox yet: retry shortly.
    #[error("the receiving node's inbox is full of unread messages")]
    InboxFull,
}

impl From<redis::ParsingError> for StoreError {
    fn from(error: redis::ParsingError) -> Self {
        StoreError::Reply(error.to_string())
    }
}

/// One Redis call may take this long before the node treats Redis as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

pub fn lease_key(room: &str) -> String {
    format!("convene:room:{room}:lease")
}
pub fn fence_key(room: &str) -> String {
    format!("convene:room:{room}:fence")
}
pub fn inputs_key(room: &str) -> String {
    format!("convene:room:{room}:in")
}
pub fn input_counter_key(room: &str) -> String {
    format!("convene:room:{room}:inputs")
}
pub fn events_key(room: &str) -> String {
    format!("convene:room:{room}:ev")
}
/// The last input whose answers went out with an append.
pub fn applied_key(room: &str) -> String {
    format!("convene:room:{room}:applied")
}
pub fn snapshot_key(room: &str) -> String {
    format!("convene:room:{room}:snap")
}
pub fn inputs_channel(room: &str) -> String {
    format!("convene:in:{room}")
}
pub fn events_channel(room: &str) -> String {
    format!("convene:ev:{room}")
}
pub fn node_channel(node: &str) -> String {
    format!("convene:node:{node}")
}
pub fn gone_key(node: &str) -> String {
    format!("convene:gone:{node}")
}
/// A node's numbered inbox: replies, close orders, call answers and relayed media for it.
pub fn node_inbox_key(node: &str) -> String {
    format!("convene:nodes:{node}:inbox")
}
pub fn node_key(node: &str) -> String {
    format!("convene:nodes:{node}")
}
pub const NODES_SET: &str = "convene:nodes";
pub const ERA_KEY: &str = "convene:era";

/// Records inputs: numbers them, appends them, publishes them in one message.
const SUBMIT: &str = r#"
local first = redis.call('INCRBY', KEYS[2], #ARGV - 1) - (#ARGV - 1) + 1
local message = {tostring(first)}
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '0-' .. (first + i - 2), 'i', ARGV[i])
  message[#message + 1] = ARGV[i]
end
redis.call('PUBLISH', ARGV[1], table.concat(message, '\n'))
return first
"#;

/// Takes a free lease: the fence counter rises with every takeover.
const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. token .. '/' .. ARGV[3], 'PX', ARGV[2])
return token
"#;

/// Renews the lease while the fence is still ours (even if the key lapsed while Redis was away).
const RENEW: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. ARGV[2] .. '/' .. ARGV[4], 'PX', ARGV[3])
return 1
"#;

/// Frees the lease and tells the room's other nodes, so one takes it at once.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// Published on a room's event channel when its owner hands it back.
pub const RELEASED: &str = "released";

/// Adds a message to a node's numbered inbox and publishes it (pub/sub may lose it; the
/// node reads gaps back). The inbox keeps at most a byte budget and a number of entries
/// (counted in `:bytes`) and lapses a while after its last message: it must not grow with
/// what one node's sessions send. Room for a new message is made from what the node has
/// read (`:read`, which it records in batches); unread messages are never dropped to make
/// room: with `refuse` the message is refused instead (returns 0: the sender answers its
/// client), without (an owner's fenced answers, already committed) the oldest unread one
/// goes, and is counted in `:lost`. The numbering (`:sent`) lives longer, so a quiet node's
/// numbers never restart.
const INBOX_ADD: &str = r#"
local function inbox_add(node, payload, budget, entries, keep_ms, refuse)
  local base = 'convene:nodes:' .. node
  local inbox = base .. ':inbox'
  local read = tonumber(redis.call('GET', inbox .. ':read') or 0)
  local bytes = tonumber(redis.call('GET', inbox .. ':bytes') or 0)
  local length = redis.call('XLEN', inbox)
  while length > 0 and (bytes + #payload > budget or length >= entries) do
    local first = redis.call('XRANGE', inbox, '-', '+', 'COUNT', 1)[1]
    if tonumber(string.sub(first[1], 3)) > read then
      if refuse then return 0 end
      redis.call('INCR', inbox .. ':lost')
      redis.call('PEXPIRE', inbox .. ':lost', keep_ms)
    end
    redis.call('XDEL', inbox, first[1])
    bytes = bytes - #first[2][2]
    length = length - 1
  end
  if length == 0 then bytes = 0 end
  local m = redis.call('INCR', base .. ':sent')
  redis.call('PEXPIRE', base .. ':sent', 86400000)
  redis.call('XADD', inbox, '0-' .. m, 'm', payload)
  redis.call('SET', inbox .. ':bytes', bytes + #payload, 'PX', keep_ms)
  redis.call('PEXPIRE', inbox, keep_ms)
  redis.call('PUBLISH', 'convene:node:' .. node, m .. ' ' .. payload)
  return m
end
"#;

/// Appends a batch of events (ARGV[8..8+2n): seq, envelope), records the last input it
/// answers (ARGV[5]: a takeover repeats no answer up to it), and publishes it with the
/// owner's messages to nodes (the rest: node id, payload; kept as `SEND` keeps them, within
/// ARGV[6..=7]: the inbox bounds), all only if the fence is ours.
const APPEND: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED') end
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '0-' .. ARGV[8 + 2 * i], 'e', ARGV[9 + 2 * i])
end
redis.call('SET', KEYS[3], ARGV[5])
if n > 0 then redis.call('PUBLISH', ARGV[3], ARGV[7 + 2 * n + 1]) end
local budget, entries, keep_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8 + 2 * n + 1]
for i = 7 + 2 * n + 3, #ARGV, 2 do
  inbox_add(ARGV[i], ARGV[i + 1], budget, entries, keep_ms, false)
end
return 1
"#;

/// Sends a node a message (ARGV: node, payload, inbox bytes, entries, retention ms): its
/// number, or 0 when the node's unread messages fill its inbox.
const SEND: &str = r#"
return inbox_add(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], true)
"#;

/// Stores a snapshot and drops the inputs it covers.
const SNAPSHOT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED') end
redis.call('HSET', KEYS[2], 'state', ARGV[2], 'input', ARGV[3], 'seq', ARGV[4])
redis.call('XTRIM', KEYS[3], 'MINID', '0-' .. (tonumber(ARGV[3]) + 1))
return 1
"#;

/// Registers a node; answers whether an owner let its sessions go meanwhile (it was presumed
/// dead: paused, or cut off from Redis while others were not).
const HEARTBEAT: &str = r#"
local gone = redis.call('GET', KEYS[3])
if gone then redis.call('DEL', KEYS[3]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if gone then return 1 end
return 0
"#;

pub struct Scripts {
    submit: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    append: Script,
    send: Script,
    snapshot: Script,
    heartbeat: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            submit: Script::new(SUBMIT),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            append: Script::new(&format!("{INBOX_ADD}{APPEND}")),
            send: Script::new(&format!("{INBOX_ADD}{SEND}")),
            snapshot: Script::new(SNAPSHOT),
            heartbeat: Script::new(HEARTBEAT),
        }
    }
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.to_string().contains("FENCED") => Err(StoreError::Fenced),
        Ok(Err(e)) => Err(StoreError::Redis(e)),
        Err(_) => Err(StoreError::Timeout),
    }
}

/// One fenced append: the owner's events for a batch of inputs, and its messages to nodes.
pub struct Append<'a> {
    pub token: u64,
    /// The event stream's bound.
    pub max_events: usize,
    /// (seq, envelope JSON).
    pub events: &'a [(u64, String)],
    /// The last input the batch answers.
    pub applied: u64,
    /// The events' pub/sub message.
    pub batch: &'a str,
    /// (node id, payload).
    pub messages: &'a [(String, String)],
}

/// A stored snapshot.
pub struct Snapshot {
    pub state: String,
    pub input: u64,
    pub seq: u64,
}

/// What a node's inbox stream keeps.
#[derive(Clone, Copy, Debug)]
pub struct InboxBounds {
    pub bytes: usize,
    pub entries: usize,
    pub retention_ms: u64,
}

/// Redis as the cluster uses it: a multiplexed connection that reconnects by itself.
#[derive(Clone)]
pub struct Store {
    pub conn: ConnectionManager,
    scripts: std::sync::Arc<Scripts>,
    inbox: InboxBounds,
}

impl Store {
    pub fn new(conn: ConnectionManager, inbox: InboxBounds) -> Store {
        Store {
            conn,
            scripts: Default::default(),
            inbox,
        }
    }

    /// Records inputs; returns the number of the first.
    pub async fn submit(&self, room: &str, inputs: &[String]) -> Result<u64, StoreError> {
        let mut call = self.scripts.submit.prepare_invoke();
        call.key(inputs_key(room))
            .key(input_counter_key(room))
            .arg(inputs_channel(room));
        for input in inputs {
            call.arg(input);
        }
        let mut conn = self.conn.clone();
        timed(call.invoke_async(&mut conn)).await
    }

    /// A fencing token if the lease was free.
    pub async fn acquire(
        &self,
        room: &str,
        node: &str,
        lease_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn.clone();
        timed(
            self.scripts
                .acquire
                .key(lease_key(room))
                .key(fence_key(room))
                .arg(node)
                .arg(lease_ms)
                .arg(crate::auth::unix_now_ms())
                .invoke_async(&mut conn),
        )
        .await
    }

    /// False when another node took the room.
    pub async fn renew(
        &self,
        room: &str,
        node: &str,
        token: u64,
        lease_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let kept: i64 = timed(
            self.scripts
                .renew
                .key(lease_key(room))
                .key(fence_key(room))
                .arg(node)
                .arg(token)
                .arg(lease_ms)
                .arg(crate::auth::unix_now_ms())
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(kept == 1)
    }

    pub async fn release(&self, room: &str, token: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = timed(
            self.scripts
                .release
                .key(lease_key(room))
                .key(fence_key(room))
                .arg(token)
                .arg(events_channel(room))
                .arg(RELEASED)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    /// The last input answered with an append (0: none).
    pub async fn applied(&self, room: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let applied: Option<u64> = timed(
            redis::cmd("GET")
                .arg(applied_key(room))
                .query_async(&mut conn),
        )
        .await?;
        Ok(applied.unwrap_or(0))
    }

    /// The lease holder's node id and when it last renewed (unix ms), if the room has a
    /// live owner.
    pub async fn owner(&self, room: &str) -> Result<Option<(String, u64)>, StoreError> {
        let mut conn = self.conn.clone();
        let lease: Option<String> = timed(
            redis::cmd("GET")
                .arg(lease_key(room))
                .query_async(&mut conn),
        )
        .await?;
        Ok(lease.and_then(|l| {
            let mut parts = l.split('/');
            let node = parts.next()?.to_string();
            let renewed = parts.nth(1).and_then(|t| t.parse().ok()).unwrap_or(0);
            Some((node, renewed))
        }))
    }

    /// Appends events and sends the owner's messages, if `token` still holds the fence.
    pub async fn append(&self, room: &str, append: &Append<'_>) -> Result<(), StoreError> {
        let &Append {
            token,
            max_events,
            events,
            applied,
            batch,
            messages,
        } = append;
        let mut call = self.scripts.append.prepare_invoke();
        call.key(fence_key(room))
            .key(events_key(room))
            .key(applied_key(room))
            .arg(token)
            .arg(max_events)
            .arg(events_channel(room))
            .arg(events.len())
            .arg(applied)
            .arg(self.inbox.bytes)
            .arg(self.inbox.entries);
        for (seq, envelope) in events {
            call.arg(seq).arg(envelope);
        }
        call.arg(batch).arg(self.inbox.retention_ms);
        for (node, payload) in messages {
            call.arg(node).arg(payload);
        }
        let mut conn = self.conn.clone();
        let _: i64 = timed(call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    pub async fn save_snapshot(
        &self,
        room: &str,
        token: u64,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = timed(
            self.scripts
                .snapshot
                .key(fence_key(room))
                .key(snapshot_key(room))
                .key(inputs_key(room))
                .arg(token)
                .arg(&snapshot.state)
                .arg(snapshot.input)
                .arg(snapshot.seq)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    pub async fn load_snapshot(&self, room: &str) -> Result<Option<Snapshot>, StoreError> {
        let mut conn = self.conn.clone();
        let (state, input, seq): (Option<String>, Option<u64>, Option<u64>) = timed(
            redis::cmd("HMGET")
                .arg(snapshot_key(room))
                .arg("state")
                .arg("input")
                .arg("seq")
                .query_async(&mut conn),
        )
        .await?;
        Ok(match (state, input, seq) {
            (Some(state), Some(input), Some(seq)) => Some(Snapshot { state, input, seq }),
            _ => None,
        })
    }

    /// Entries numbered `from..=to` of a numbered stream, with their one field's value.
    pub async fn range(
        &self,
        key: &str,
        from: u64,
        to: Option<u64>,
        count: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let mut conn = self.conn.clone();
        let end = to.map_or_else(|| "+".to_string(), |t| format!("0-{t}"));
        let reply: Value = timed(
            redis::cmd("XRANGE")
                .arg(key)
                .arg(format!("0-{from}"))
                .arg(end)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn),
        )
        .await?;
        parse_entries(reply)
    }

    /// The number of a numbered stream's last entry (0 when empty).
    pub async fn last_number(&self, key: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = timed(
            redis::cmd("XREVRANGE")
                .arg(key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn),
        )
        .await?;
        Ok(parse_entries(reply)?.first().map_or(0, |(n, _)| *n))
    }

    /// The last `count` entries, oldest first.
    pub async fn tail(&self, key: &str, count: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = timed(
            redis::cmd("XREVRANGE")
                .arg(key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn),
        )
        .await?;
        let mut entries = parse_entries(reply)?;
        entries.reverse();
        Ok(entries)
    }

    /// Registers this node for `ttl_ms`; whether an owner let its sessions go meanwhile.
    pub async fn heartbeat(&self, node: &str, info: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let gone: i64 = timed(
            self.scripts
                .heartbeat
                .key(node_key(node))
                .key(NODES_SET)
                .key(gone_key(node))
                .arg(info)
                .arg(ttl_ms)
                .arg(node)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(gone == 1)
    }

    /// Sends `payload` to a node's inbox, unless its unread messages fill it.
    pub async fn send(&self, node: &str, payload: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let number: i64 = timed(
            self.scripts
                .send
                .arg(node)
                .arg(payload)
                .arg(self.inbox.bytes)
                .arg(self.inbox.entries)
                .arg(self.inbox.retention_ms)
                .invoke_async(&mut conn),
        )
        .await?;
        if number == 0 {
            return Err(StoreError::InboxFull);
        }
        Ok(())
    }

    /// Records that this node has read its inbox up to `number`: senders may drop what is
    /// up to it to make room. Called in batches, not per message.
    pub async fn record_read(&self, node: &str, number: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Value = timed(
            redis::cmd("SET")
                .arg(format!("{}:read", node_inbox_key(node)))
                .arg(number)
                .arg("PX")
                .arg(self.inbox.retention_ms)
                .query_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    /// The inbox byte budget (the reader records its position every quarter of it).
    pub fn inbox_bounds(&self) -> InboxBounds {
        self.inbox
    }

    /// Tells a node, if it comes back, that its sessions were let go.
    pub async fn mark_gone(&self, node: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Value = timed(
            redis::cmd("SET")
                .arg(gone_key(node))
                .arg(1)
                .arg("PX")
                .arg(600_000)
                .query_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    /// Live nodes' registrations; lapsed ones leave the set.
    pub async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> =
            timed(redis::cmd("SMEMBERS").arg(NODES_SET).query_async(&mut conn)).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let infos: Vec<Option<String>> =
            timed(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
        let gone: Vec<&String> = ids
            .iter()
            .zip(&infos)
            .filter(|(_, info)| info.is_none())
            .map(|(id, _)| id)
            .collect();
        if !gone.is_empty() {
            let _: Result<i64, _> = timed(
                redis::cmd("SREM")
                    .arg(NODES_SET)
                    .arg(&gone)
                    .query_async(&mut conn),
            )
            .await;
        }
        Ok(infos.into_iter().flatten().collect())
    }

    /// This deployment's era: an id stored once; a Redis that lost its data has none (or
    /// another), and every node starts over.
    pub async fn era(&self, mine: &str) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let _: Value = timed(
            redis::cmd("SET")
                .arg(ERA_KEY)
                .arg(mine)
                .arg("NX")
                .query_async(&mut conn),
        )
        .await?;
        let era: Option<String> =
            timed(redis::cmd("GET").arg(ERA_KEY).query_async(&mut conn)).await?;
        era.ok_or_else(|| StoreError::Reply("era vanished".into()))
    }
}

/// `[[id, [field, value]], ...]` with ids `0-n`.
fn parse_entries(reply: Value) -> Result<Vec<(u64, String)>, StoreError> {
    let Value::Array(entries) = reply else {
        return Err(StoreError::Reply(format!("{reply:?}")));
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err(StoreError::Reply("stream entry".into()));
        };
        let mut parts = parts.into_iter();
        let id: String = match parts.next() {
            Some(v) => redis::from_redis_value(v)?,
            None => return Err(StoreError::Reply("stream entry id".into())),
        };
        let number = id
            .split_once('-')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .ok_or_else(|| StoreError::Reply(format!("stream id {id}")))?;
        let fields: Vec<String> = match parts.next() {
            Some(v) => redis::from_redis_value(v)?,
            None => Vec::new(),
        };
        let value = fields.into_iter().nth(1).unwrap_or_default();
        out.push((number, value));
    }
    Ok(out)
}
