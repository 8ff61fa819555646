//! Scheduled convenings: the plan kept in the store, the room's lobby until the host starts it, the start at `starts_at` (`auto_start`), and the one place an end is handed on (`on_end`).
//!
//! The store is the truth and this node keeps every convening in memory too (a few
//! thousand rows at most, `limits.convenings.max_convenings`), so a join asks a map, not
//! the database. A room may be forgotten after `empty_room_ttl_s`: its lobby is set again
//! (`gate`) before anyone joins it, so forgetting loses nothing.

mod plan;
pub mod rfc3339;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_core::room::actor::RoomHandle;
use convene_core::room::operator::{Operation, RoomReport};
use convene_core::room::registry::Rooms;
use convene_signaling::{Lobby, Millis};
use convene_store::{Store, StoreError};
use serde::Deserialize;

pub use plan::{Breakouts, Convening, Kind, Plan, PlanSettings, State};

/// `[limits.convenings]`: what one convening, and all of them, may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConveningLimits {
    /// Convenings not yet ended, on this node's store.
    pub max_convenings: usize,
    /// Presenters plus moderators named in one plan.
    pub max_staff: usize,
    /// Teams in one breakout plan, and identities in all its teams together.
    pub max_teams: usize,
    pub max_team_members: usize,
    /// How far ahead a convening may start, and how long it may last.
    pub max_days_ahead: u64,
    pub max_hours_long: u64,
    /// Days its record is kept after it ends: the default, and the most a plan may ask.
    pub default_retention_days: u32,
    pub max_retention_days: u32,
}

/// The scheduler's clock: the wall clock, shifted by `CONVENE_SCHEDULE_CLOCK_OFFSET_MS`
/// (tests only: a convening a week ahead opens without waiting a week).
#[derive(Clone, Copy, Debug, Default)]
pub struct ScheduleClock {
    offset_ms: i64,
}

impl ScheduleClock {
    pub fn from_env() -> ScheduleClock {
        let offset_ms = std::env::var("CONVENE_SCHEDULE_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if offset_ms != 0 {
            tracing::warn!(
                offset_ms,
                "the schedule's clock is shifted (a test setting)"
            );
        }
        ScheduleClock { offset_ms }
    }
    pub fn now(&self) -> Millis {
        (crate::auth::unix_now_ms() as i64).saturating_add(self.offset_ms) as Millis
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConveningError {
    #[error("convening {0:?} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the room refused: {0}")]
    Room(String),
}

/// The node's convenings; cheap to clone.
#[derive(Clone)]
pub struct Convenings {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when the node keeps rooms in memory only (`store.durable_log = false` and no
    /// `store.url`): convenings then last as long as the process.
    store: Option<Store>,
    /// The record (attendance, Q&A, polls, chat) of convenings on this node, with a store.
    recorder: Option<Arc<crate::record::Recorder>>,
    by_id: Mutex<BTreeMap<String, Convening>>,
    /// Serialises changes, so the store and the map agree and two starts do not race.
    writing: tokio::sync::Mutex<()>,
    /// The room (this very actor) each lobby was last set in, and for which plan: a join
    /// into an already gated room costs a map lookup, not an input to the room's log.
    gated: Mutex<BTreeMap<String, (RoomHandle, Convening)>>,
    limits: ConveningLimits,
    clock: ScheduleClock,
}

impl Convenings {
    /// Loads every convening from `store` (if any).
    pub async fn open(
        store: Option<Store>,
        recorder: Option<Arc<crate::record::Recorder>>,
        limits: ConveningLimits,
        clock: ScheduleClock,
    ) -> Result<Convenings, StoreError> {
        let mut by_id = BTreeMap::new();
        if let Some(store) = &store {
            // Ad-hoc convenings (no planned start) are the record's: opened and ended with
            // their rooms, never scheduled here.
            for row in store
                .convenings()
                .await?
                .iter()
                .filter(|r| r.starts_at.is_some())
            {
                match Convening::from_row(row) {
                    Ok(c) => {
                        by_id.insert(c.id.clone(), c);
                    }
                    Err(error) => {
                        tracing::error!(id = %row.id, %error, "a stored convening cannot be read")
                    }
                }
            }
        }
        Ok(Convenings {
            inner: Arc::new(Inner {
                store,
                recorder,
                by_id: Mutex::new(by_id),
                writing: tokio::sync::Mutex::new(()),
                gated: Mutex::new(BTreeMap::new()),
                limits,
                clock,
            }),
        })
    }

    pub fn limits(&self) -> &ConveningLimits {
        &self.inner.limits
    }
    pub fn now(&self) -> Millis {
        self.inner.clock.now()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Convening>> {
        self.inner.by_id.lock().expect("convenings lock")
    }

    pub fn list(&self) -> Vec<Convening> {
        let mut all: Vec<Convening> = self.map().values().cloned().collect();
        all.sort_by(|a, b| (a.starts_at, &a.id).cmp(&(b.starts_at, &b.id)));
        all
    }

    pub fn get(&self, id: &str) -> Option<Convening> {
        self.map().get(id).cloned()
    }

    /// The convening a room is waiting for or running, if any.
    pub fn in_room(&self, room: &str) -> Option<Convening> {
        self.map()
            .values()
            .filter(|c| c.room == room && c.state != State::Ended)
            .min_by_key(|c| (c.state != State::Live, c.starts_at))
            .cloned()
    }

    /// Is this room holding attendees in a lobby? (WHEP viewers are refused then.)
    pub fn lobby(&self, room: &str) -> Option<Lobby> {
        self.in_room(room)
            .filter(|c| c.state == State::Scheduled)
            .map(|c| c.lobby())
    }

    async fn save(&self, c: &Convening) -> Result<(), ConveningError> {
        if let Some(store) = &self.inner.store {
            store.put_convening(&c.to_row()).await?;
        }
        self.map().insert(c.id.clone(), c.clone());
        Ok(())
    }

    /// Stores a new convening (its room is gated at once, so early joiners wait).
    pub async fn create(&self, rooms: &Rooms, c: Convening) -> Result<(), ConveningError> {
        {
            let _writing = self.inner.writing.lock().await;
            let pending = self
                .map()
                .values()
                .filter(|c| c.state != State::Ended)
                .count();
            if pending >= self.inner.limits.max_convenings {
                return Err(ConveningError::Conflict(format!(
                    "{pending} convenings are scheduled or live; the limit is {} (limits.convenings.max_convenings)",
                    self.inner.limits.max_convenings
                )));
            }
            if let Some(other) = self.in_room(&c.room) {
                return Err(ConveningError::Conflict(format!(
                    "room {:?} already has convening {} ({}): one at a time per room",
                    c.room,
                    other.id,
                    other.state.as_str()
                )));
            }
            self.save(&c).await?;
        }
        self.gate(rooms, &c.room).await;
        Ok(())
    }

    /// Replaces a convening that has not started (`PATCH`); the room's lobby follows.
    pub async fn replace(&self, rooms: &Rooms, c: Convening) -> Result<(), ConveningError> {
        {
            let _writing = self.inner.writing.lock().await;
            let old = self.scheduled(&c.id)?;
            if old.room != c.room {
                if let Some(other) = self.in_room(&c.room) {
                    return Err(ConveningError::Conflict(format!(
                        "room {:?} already has convening {}",
                        c.room, other.id
                    )));
                }
            }
            self.save(&c).await?;
        }
        self.gate(rooms, &c.room).await;
        Ok(())
    }

    fn scheduled(&self, id: &str) -> Result<Convening, ConveningError> {
        let c = self
            .get(id)
            .ok_or_else(|| ConveningError::NotFound(id.to_string()))?;
        if c.state != State::Scheduled {
            return Err(ConveningError::Conflict(format!(
                "convening {id} is {}: only a scheduled one may change",
                c.state.as_str()
            )));
        }
        Ok(c)
    }

    /// Cancels a convening that has not started: it is deleted, and its room opens.
    pub async fn cancel(&self, rooms: &Rooms, id: &str) -> Result<(), ConveningError> {
        let _writing = self.inner.writing.lock().await;
        let c = self.scheduled(id)?;
        if let Some(store) = &self.inner.store {
            // A rehearsal may have been recorded: a cancelled convening keeps nothing.
            store.delete_record(id).await?;
            store.delete_convening(id).await?;
        }
        self.map().remove(id);
        if let Some(handle) = rooms.get(&c.room) {
            let _ = handle.operate(Operation::Open).await;
        }
        Ok(())
    }

    /// Sets the room's lobby if its convening has not started: before any join, and when
    /// the convening is created or changed. Without one, nothing happens.
    pub async fn gate(&self, rooms: &Rooms, room: &str) {
        let Some(lobby) = self.lobby(room) else {
            return;
        };
        let Some(c) = self.get(&lobby.convening_id) else {
            return;
        };
        let gated = |handle: &RoomHandle| {
            let gated = self.inner.gated.lock().expect("gated lock");
            gated
                .get(room)
                .is_some_and(|(h, planned)| h.same_room(handle) && *planned == c)
        };
        if rooms.get(room).is_some_and(|h| gated(&h)) {
            return;
        }
        // A forgotten room may exit between the lookup and the question: ask a fresh one.
        for _ in 0..2 {
            let handle = rooms.get_or_start(room);
            if handle.operate(c.settings_operation()).await.is_err() {
                continue;
            }
            if handle
                .operate(Operation::Schedule {
                    lobby: lobby.clone(),
                })
                .await
                .is_ok()
            {
                let mut gated = self.inner.gated.lock().expect("gated lock");
                gated.insert(room.to_string(), (handle, c));
                return;
            }
        }
        tracing::warn!(room, "could not set the room's lobby");
    }

    /// The host starts it (or its `starts_at` came, with `auto_start`): the lobby opens.
    pub async fn start(&self, rooms: &Rooms, id: &str) -> Result<RoomReport, ConveningError> {
        let _writing = self.inner.writing.lock().await;
        let mut c = self.scheduled(id)?;
        let now = self.now();
        c.state = State::Live;
        c.started_at = Some(now);
        c.updated_at = now;
        self.save(&c).await?;
        let handle = rooms.get_or_start(&c.room);
        let _ = handle.operate(c.settings_operation()).await;
        let report = handle
            .operate(Operation::Open)
            .await
            .map_err(|_| ConveningError::Room("the room closed".into()))?
            .map_err(|denied| ConveningError::Room(denied.message))?;
        tracing::info!(convening = id, room = %c.room, "convening started");
        Ok(report)
    }

    /// The host ends it: everyone sees that it ended and is let go (their leaving is the
    /// record's last rows), then its record closes (`on_end`). A scheduled convening may be
    /// ended without starting (nobody came).
    pub async fn end(&self, rooms: &Rooms, id: &str) -> Result<Convening, ConveningError> {
        let _writing = self.inner.writing.lock().await;
        let mut c = self
            .get(id)
            .ok_or_else(|| ConveningError::NotFound(id.to_string()))?;
        if c.state == State::Ended {
            return Err(ConveningError::Conflict(format!(
                "convening {id} has already ended"
            )));
        }
        if let Some(handle) = rooms.get(&c.room) {
            let end = Operation::End {
                reason: Some(format!("{} has ended", c.title)),
            };
            let _ = handle.operate(end).await;
        }
        let now = self.now();
        if c.state == State::Live {
            on_end(self.inner.recorder.as_deref(), &c.id, now).await?;
        }
        c.state = State::Ended;
        c.ended_at = Some(now);
        c.updated_at = now;
        self.save(&c).await?;
        tracing::info!(convening = id, room = %c.room, "convening ended");
        Ok(c)
    }

    /// Sets every scheduled convening's lobby now, then starts those with `auto_start` when
    /// their `starts_at` comes (checked every `every`).
    pub fn run(&self, rooms: Rooms, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            for c in this.list() {
                if c.state == State::Scheduled {
                    this.gate(&rooms, &c.room).await;
                }
            }
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = this.now();
                let due: Vec<String> = this
                    .list()
                    .into_iter()
                    .filter(|c| {
                        c.state == State::Scheduled
                            && c.plan.settings.auto_start
                            && c.starts_at <= now
                    })
                    .map(|c| c.id)
                    .collect();
                for id in due {
                    if let Err(error) = this.start(&rooms, &id).await {
                        tracing::warn!(convening = %id, %error, "automatic start failed");
                    }
                }
            }
        })
    }
}

/// A live convening ended at `ended_at` (unix ms): the one place its end is handed to the
/// record, which writes what was queued, marks it ended and sends `convening.ended` (once).
pub async fn on_end(
    recorder: Option<&crate::record::Recorder>,
    convening_id: &str,
    ended_at: Millis,
) -> Result<(), StoreError> {
    if let Some(recorder) = recorder {
        recorder.end(convening_id, ended_at).await?;
    }
    Ok(())
}

impl Convening {
    fn lobby(&self) -> Lobby {
        Lobby {
            convening_id: self.id.clone(),
            title: self.title.clone(),
            starts_at: self.starts_at,
            auto_start: self.plan.settings.auto_start,
        }
    }
}
