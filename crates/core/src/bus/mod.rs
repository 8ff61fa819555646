//! This node's fan-out: bounded lanes of sequenced envelopes that sessions read at their own pace, and the per-room event log behind resume.
//!
//! A room's events travel on lanes ([`Lane`]): one for the whole room, one per place (main
//! room, each breakout) and one for staff; a person's direct lane is their sessions' own
//! queue (see `session::hub`). A lane keeps its recent envelopes, so a session that moves to
//! another place reads the new place's lane from the move's `seq` on, and one that falls a
//! whole lane behind learns it lagged instead of silently missing events.

mod log;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

pub use log::{EventLog, GapTooOld};

use crate::wire::{Envelope, Lane, Place};

/// A reader asked for events that this lane no longer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagged;

/// One lane: the newest `capacity` envelopes in `seq` order, and a wake-up for readers.
pub struct LaneRing {
    events: RwLock<VecDeque<Arc<Envelope>>>,
    /// The highest `seq` pushed, written after the push so a reader that sees it finds the event.
    head: AtomicU64,
    /// The highest `seq` dropped off the front.
    evicted_through: AtomicU64,
    wake: watch::Sender<u64>,
    capacity: usize,
}

impl LaneRing {
    pub fn new(capacity: usize) -> LaneRing {
        LaneRing {
            events: RwLock::new(VecDeque::new()),
            head: AtomicU64::new(0),
            evicted_through: AtomicU64::new(0),
            wake: watch::Sender::new(0),
            capacity: capacity.max(16),
        }
    }

    pub fn push(&self, envelope: Arc<Envelope>) {
        let seq = envelope.seq;
        {
            let mut events = self.events.write().expect("lane lock");
            events.push_back(envelope);
            if events.len() > self.capacity {
                if let Some(old) = events.pop_front() {
                    self.evicted_through.store(old.seq, Ordering::Release);
                }
            }
        }
        self.head.store(seq, Ordering::Release);
        self.wake.send_replace(seq);
    }

    /// The highest `seq` on this lane.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Whether a reader that has delivered up to `after` has lost events on this lane.
    pub fn lost_after(&self, after: u64) -> bool {
        self.evicted_through.load(Ordering::Acquire) > after
    }

    /// Copies up to `max` envelopes with `seq > after` into `out`, oldest first.
    pub fn read_after(
        &self,
        after: u64,
        max: usize,
        out: &mut VecDeque<Arc<Envelope>>,
    ) -> Result<(), Lagged> {
        let events = self.events.read().expect("lane lock");
        if self.lost_after(after) {
            return Err(Lagged);
        }
        let start = events.partition_point(|e| e.seq <= after);
        out.extend(events.range(start..).take(max).cloned());
        Ok(())
    }

    /// Wakes when something is pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    pub fn len(&self) -> usize {
        self.events.read().expect("lane lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shared lanes of one room on this node.
pub struct RoomLanes {
    pub room: Arc<LaneRing>,
    pub staff: Arc<LaneRing>,
    pub captions: Arc<LaneRing>,
    places: Mutex<HashMap<Place, Arc<LaneRing>>>,
    capacity: usize,
}

impl RoomLanes {
    fn new(capacity: usize) -> RoomLanes {
        RoomLanes {
            room: Arc::new(LaneRing::new(capacity)),
            staff: Arc::new(LaneRing::new(capacity)),
            captions: Arc::new(LaneRing::new(capacity)),
            places: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// A place's lane, created on first use and kept while the room lives (a room has at
    /// most a few hundred places).
    pub fn place(&self, place: Place) -> Arc<LaneRing> {
        let mut places = self.places.lock().expect("places lock");
        places
            .entry(place)
            .or_insert_with(|| Arc::new(LaneRing::new(self.capacity)))
            .clone()
    }

    /// Pushes an envelope onto one shared lane; `None` for a person's lane, which is not here.
    pub fn push(&self, lane: &Lane, envelope: &Arc<Envelope>) -> Option<()> {
        match lane {
            Lane::Room => self.room.push(envelope.clone()),
            Lane::Staff => self.staff.push(envelope.clone()),
            Lane::Captions => self.captions.push(envelope.clone()),
            Lane::Place(place) => self.place(*place).push(envelope.clone()),
            Lane::Person(_) => return None,
        }
        Some(())
    }
}

/// The rooms' lanes on this node.
pub struct Lanes {
    capacity: usize,
    rooms: Mutex<HashMap<String, Arc<RoomLanes>>>,
}

impl Lanes {
    pub fn new(capacity: usize) -> Lanes {
        Lanes {
            capacity,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    pub fn room(&self, room: &str) -> Arc<RoomLanes> {
        let mut rooms = self.rooms.lock().expect("lanes lock");
        if let Some(lanes) = rooms.get(room) {
            return lanes.clone();
        }
        let lanes = Arc::new(RoomLanes::new(self.capacity));
        rooms.insert(room.to_string(), lanes.clone());
        lanes
    }

    /// The room has ended: sessions still reading keep their lanes until they drop them.
    pub fn forget(&self, room: &str) {
        self.rooms.lock().expect("lanes lock").remove(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Audience, Frame};

    fn envelope(seq: u64) -> Arc<Envelope> {
        Arc::new(Envelope {
            seq,
            audience: Audience::Everyone,
            effect: None,
            frame: Frame::from(format!("{{\"seq\":{seq}}}")),
        })
    }

    #[test]
    fn readers_take_what_follows_their_seq_and_learn_when_they_lagged() {
        let lane = LaneRing::new(16);
        for seq in (2..=40).step_by(2) {
            lane.push(envelope(seq));
        }
        assert_eq!(lane.head(), 40);
        let mut out = VecDeque::new();
        // Seqs 2..=8 were evicted (16 kept: 10..=40).
        assert_eq!(lane.read_after(5, 100, &mut out), Err(Lagged));
        lane.read_after(8, 3, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![10, 12, 14]
        );
        out.clear();
        lane.read_after(35, 100, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![36, 38, 40]
        );
        assert!(!lane.lost_after(8));
        assert!(lane.lost_after(7));
    }

    #[tokio::test]
    async fn a_push_wakes_subscribers() {
        let lanes = Lanes::new(16);
        let room = lanes.room("r");
        let mut wake = room.place(Place::Breakout(2)).subscribe();
        room.push(&Lane::Place(Place::Breakout(2)), &envelope(1));
        wake.changed().await.unwrap();
        assert_eq!(*wake.borrow(), 1);
        // The same room's lanes are shared; another room's are not.
        assert_eq!(lanes.room("r").place(Place::Breakout(2)).head(), 1);
        assert_eq!(lanes.room("q").place(Place::Breakout(2)).head(), 0);
        assert!(room
            .push(&Lane::Person("ana".into()), &envelope(2))
            .is_none());
    }
}
