//! A room's whole state as JSON, for failover: another node restores it and replays the inputs recorded after it.
//!
//! Everything in `RoomState` is stored except the limits (configuration, from the
//! restoring node) and the grace-timer index (rebuilt from the members). A snapshot
//! comes back from Redis, so `from_snapshot` checks what would otherwise panic later.

use std::collections::BTreeSet;

use serde::de::Error as _;

use super::{RoomLimits, RoomState};

impl RoomState {
    /// The room's state as JSON. The same state gives the same bytes in any process.
    pub fn to_snapshot(&self) -> String {
        serde_json::to_string(self).expect("room state has string or integer map keys only")
    }

    /// Restores a room from `to_snapshot`'s output, with this node's `limits`. The result
    /// behaves exactly as the room did: same events for the same inputs.
    pub fn from_snapshot(json: &str, limits: RoomLimits) -> Result<RoomState, serde_json::Error> {
        let mut room: RoomState = serde_json::from_str(json)?;
        room.limits = limits;
        room.check().map_err(serde_json::Error::custom)?;
        room.reconnecting = room
            .members
            .iter()
            .filter_map(|(identity, m)| m.disconnected_at.map(|at| (at, identity.clone())))
            .collect::<BTreeSet<_>>();
        Ok(room)
    }

    /// The links between parts that the code indexes without checking.
    fn check(&self) -> Result<(), String> {
        if let Some((key, _)) = self
            .members
            .iter()
            .find(|(key, m)| **key != m.member.identity)
        {
            return Err(format!("member {key:?} is stored under another identity"));
        }
        self.qa.check()?;
        self.polls.check()
    }
}

/// `#[serde(with = "persist::pairs")]` for maps whose keys JSON cannot hold (tuples,
/// enums with data): a list of `[key, value]` pairs, in key order.
pub(super) mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S, K, V>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        s.collect_seq(map)
    }

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}
