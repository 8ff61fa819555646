//! Revoked access tokens (by `jti`) and audience links (by id), per room, until they would have expired: in memory on one node, in Redis for a cluster so every node refuses them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::unix_now;
use crate::cluster::store::Store;
use crate::cluster::StoreError;

/// Why a revocation was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("room {0:?} already holds {1} revoked tokens; wait for some to expire")]
    Full(String, usize),
    #[error("the revocation list is unreachable: {0}")]
    Store(#[from] StoreError),
}

/// The deny list. Entries are `(room, id)` with the expiry of what they deny; an expired
/// entry denies nothing and is dropped.
#[derive(Clone)]
pub struct Revocations {
    redis: Option<Store>,
    local: Arc<Mutex<HashMap<String, HashMap<String, u64>>>>,
    per_room: usize,
}

/// `convene:revoked:{room}`: a sorted set of ids scored by their expiry.
fn key(room: &str) -> String {
    format!("convene:revoked:{room}")
}

/// Drops expired entries, refuses a new one past the cap, adds it, and keeps the set as
/// long as its latest entry.
const REVOKE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], tonumber(last[2]) + 60)
return 1
";

impl Revocations {
    pub fn new(redis: Option<Store>, per_room: usize) -> Revocations {
        Revocations {
            redis,
            local: Default::default(),
            per_room: per_room.max(1),
        }
    }

    /// Denies `id` in `room` until `exp` (Unix seconds). Revoking twice is fine.
    pub async fn revoke(&self, room: &str, id: &str, exp: u64) -> Result<(), RevokeError> {
        let now = unix_now();
        if let Some(store) = &self.redis {
            let mut conn = store.conn.clone();
            let added: i64 = tokio::time::timeout(
                std::time::Duration::from_millis(1500),
                redis::Script::new(REVOKE)
                    .key(key(room))
                    .arg(now)
                    .arg(id)
                    .arg(exp)
                    .arg(self.per_room)
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(StoreError::from)?;
            return match added {
                1 => Ok(()),
                _ => Err(RevokeError::Full(room.to_string(), self.per_room)),
            };
        }
        let mut local = self.local.lock().expect("revocations lock");
        let entries = local.entry(room.to_string()).or_default();
        entries.retain(|_, e| *e > now);
        if !entries.contains_key(id) && entries.len() >= self.per_room {
            return Err(RevokeError::Full(room.to_string(), self.per_room));
        }
        entries.insert(id.to_string(), exp);
        Ok(())
    }

    /// Whether `id` is denied in `room` now.
    pub async fn is_revoked(&self, room: &str, id: &str) -> Result<bool, StoreError> {
        let now = unix_now();
        if let Some(store) = &self.redis {
            let mut conn = store.conn.clone();
            let score: Option<f64> = tokio::time::timeout(
                std::time::Duration::from_millis(1500),
                redis::cmd("ZSCORE")
                    .arg(key(room))
                    .arg(id)
                    .query_async(&mut conn),
            )
            .await
            .map_err(|_| StoreError::Timeout)??;
            return Ok(score.is_some_and(|exp| exp as u64 > now));
        }
        let local = self.local.lock().expect("revocations lock");
        Ok(local
            .get(room)
            .and_then(|entries| entries.get(id))
            .is_some_and(|exp| *exp > now))
    }
}
