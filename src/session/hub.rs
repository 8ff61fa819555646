//! The local `SessionSink`: delivers rooms' outputs to this node's sessions through lanes, and each session's merged view of its lanes.
//!
//! A room publishes an envelope once; the hub pushes it onto the shared lanes its audience
//! names (room, place, staff) and onto the direct lanes (mailboxes) of the people it names.
//! A session reads only its own lanes: the room's, its place's, staff's if it is staff, and
//! its direct lane, merged back into `seq` order by its [`EventStream`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::outbox::{DirectLane, Outbox};
use convene_core::bus::{Lagged, LaneRing, Lanes, RoomLanes};
use convene_core::wire::{ConnectionId, Envelope, Lane, Place, RoomOutput, SessionSink};

/// Envelopes copied from a lane per lock.
const READ_BATCH: usize = 64;

struct Connection {
    room: String,
    identity: String,
    outbox: Outbox,
}

#[derive(Default)]
struct Registry {
    connections: HashMap<ConnectionId, Connection>,
    /// room -> identity -> that person's connections here.
    people: HashMap<String, HashMap<String, Vec<(ConnectionId, Outbox)>>>,
}

/// This node's sessions and lanes.
pub struct Hub {
    lanes: Lanes,
    registry: Mutex<Registry>,
}

impl Hub {
    pub fn new(lane_capacity: usize) -> Arc<Hub> {
        Arc::new(Hub {
            lanes: Lanes::new(lane_capacity),
            registry: Mutex::new(Registry::default()),
        })
    }

    /// Makes a connection reachable for replies and its person's direct lane. Call before
    /// joining, so nothing addressed to this person after the join is missed.
    pub fn register(
        self: &Arc<Hub>,
        room: &str,
        identity: &str,
        connection: ConnectionId,
        outbox: Outbox,
    ) -> Registration {
        let mut registry = self.registry.lock().expect("hub lock");
        registry
            .people
            .entry(room.to_string())
            .or_default()
            .entry(identity.to_string())
            .or_default()
            .push((connection, outbox.clone()));
        registry.connections.insert(
            connection,
            Connection {
                room: room.to_string(),
                identity: identity.to_string(),
                outbox,
            },
        );
        Registration {
            hub: self.clone(),
            connection,
        }
    }

    fn unregister(&self, connection: ConnectionId) {
        let mut registry = self.registry.lock().expect("hub lock");
        let Some(gone) = registry.connections.remove(&connection) else {
            return;
        };
        if let Some(people) = registry.people.get_mut(&gone.room) {
            if let Some(sessions) = people.get_mut(&gone.identity) {
                sessions.retain(|(c, _)| *c != connection);
                if sessions.is_empty() {
                    people.remove(&gone.identity);
                }
            }
            if people.is_empty() {
                registry.people.remove(&gone.room);
            }
        }
    }

    /// The last seq on the room's shared lane here: where a new reader starts.
    pub fn room_head(&self, room: &str) -> u64 {
        self.lanes.room(room).room.head()
    }

    /// Connections registered on this node.
    pub fn connections(&self) -> usize {
        self.registry.lock().expect("hub lock").connections.len()
    }

    /// A session's view of its lanes, starting after `delivered`.
    pub fn events(
        &self,
        room: &str,
        staff: bool,
        place: Place,
        direct: DirectLane,
        delivered: u64,
    ) -> EventStream {
        let lanes = self.lanes.room(room);
        EventStream {
            room: Cursor::on(lanes.room.clone()),
            staff: staff.then(|| Cursor::on(lanes.staff.clone())),
            place: Cursor::on(lanes.place(place)),
            place_now: place,
            captions: None,
            lanes,
            direct,
            delivered,
        }
    }

    fn to_person(&self, room: &str, identity: &str, envelope: &Arc<Envelope>) {
        let registry = self.registry.lock().expect("hub lock");
        if let Some(sessions) = registry.people.get(room).and_then(|p| p.get(identity)) {
            for (_, outbox) in sessions {
                outbox.send_event(envelope.clone());
            }
        }
    }

    fn outbox(&self, connection: &ConnectionId) -> Option<Outbox> {
        let registry = self.registry.lock().expect("hub lock");
        registry
            .connections
            .get(connection)
            .map(|c| c.outbox.clone())
    }
}

impl SessionSink for Hub {
    fn deliver(&self, room: &str, output: RoomOutput) {
        match output {
            RoomOutput::Publish(envelope) => {
                let lanes = self.lanes.room(room);
                for lane in envelope.lanes() {
                    if lanes.push(&lane, &envelope).is_none() {
                        if let Lane::Person(identity) = &lane {
                            self.to_person(room, identity, &envelope);
                        }
                    }
                }
            }
            RoomOutput::Reply { to, frame } => {
                if let Some(outbox) = self.outbox(&to) {
                    outbox.send(frame);
                }
            }
            RoomOutput::Close { to, reason } => {
                if let Some(outbox) = self.outbox(&to) {
                    outbox.close(reason);
                }
            }
        }
    }

    fn room_ended(&self, room: &str) {
        self.lanes.forget(room);
    }

    fn connections_in(&self, room: &str) -> usize {
        let registry = self.registry.lock().expect("hub lock");
        registry
            .people
            .get(room)
            .map_or(0, |people| people.values().map(Vec::len).sum())
    }

    fn close_room(&self, room: &str, reason: convene_signaling::CloseReason) {
        let registry = self.registry.lock().expect("hub lock");
        if let Some(people) = registry.people.get(room) {
            for (_, outbox) in people.values().flatten() {
                outbox.close(reason);
            }
        }
    }
}

/// Keeps a connection registered; dropping it unregisters.
pub struct Registration {
    hub: Arc<Hub>,
    connection: ConnectionId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.connection);
    }
}

/// A reader's position on one shared lane.
struct Cursor {
    lane: Arc<LaneRing>,
    wake: watch::Receiver<u64>,
    buffered: VecDeque<Arc<Envelope>>,
}

impl Cursor {
    fn on(lane: Arc<LaneRing>) -> Cursor {
        Cursor {
            wake: lane.subscribe(),
            lane,
            buffered: VecDeque::new(),
        }
    }

    /// Drops what was delivered, and reads more if nothing is buffered and the lane has more.
    fn fill(&mut self, delivered: u64) -> Result<(), Lagged> {
        while self.buffered.front().is_some_and(|e| e.seq <= delivered) {
            self.buffered.pop_front();
        }
        if self.buffered.is_empty() && self.lane.head() > delivered {
            self.lane
                .read_after(delivered, READ_BATCH, &mut self.buffered)?;
        }
        Ok(())
    }

    fn front(&self) -> Option<u64> {
        self.buffered.front().map(|e| e.seq)
    }
}

/// A session's events: its lanes merged into `seq` order. The hub pushes each envelope onto
/// all its lanes before the next, so once any lane shows `seq` N, every event below N is
/// already on the others: a second look at the empty ones finds it.
pub struct EventStream {
    lanes: Arc<RoomLanes>,
    room: Cursor,
    staff: Option<Cursor>,
    place: Cursor,
    place_now: Place,
    /// The captions lane, while this session has captions on.
    captions: Option<Cursor>,
    direct: DirectLane,
    delivered: u64,
}

enum Source {
    Room,
    Staff,
    Place,
    Captions,
    Direct,
}

impl EventStream {
    /// The highest `seq` handed out.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Events up to `seq` were delivered another way (replayed on resume).
    pub fn skip_through(&mut self, seq: u64) {
        self.delivered = self.delivered.max(seq);
    }

    /// The session moved: read the new place's lane from here on.
    pub fn move_to(&mut self, place: Place) {
        if place != self.place_now {
            self.place = Cursor::on(self.lanes.place(place));
            self.place_now = place;
        }
    }

    /// Captions on: read the captions lane from here on; off: stop reading it.
    pub fn set_captions(&mut self, on: bool) {
        match (on, self.captions.is_some()) {
            (true, false) => self.captions = Some(Cursor::on(self.lanes.captions.clone())),
            (false, true) => self.captions = None,
            _ => {}
        }
    }

    /// Whether a shared lane dropped events this session has not read (it must resume).
    pub fn lagging(&self) -> bool {
        let d = self.delivered;
        self.room.lane.lost_after(d)
            || self.place.lane.lost_after(d)
            || self.staff.as_ref().is_some_and(|s| s.lane.lost_after(d))
            || self.captions.as_ref().is_some_and(|s| s.lane.lost_after(d))
    }

    fn cursors(&mut self) -> impl Iterator<Item = &mut Cursor> {
        [
            Some(&mut self.room),
            Some(&mut self.place),
            self.staff.as_mut(),
            self.captions.as_mut(),
        ]
        .into_iter()
        .flatten()
    }

    fn lowest(&mut self) -> Result<Option<(u64, Source)>, Lagged> {
        let delivered = self.delivered;
        for cursor in self.cursors() {
            cursor.fill(delivered)?;
        }
        let direct = self.direct.front_after(delivered);
        let candidates = [
            (self.room.front(), Source::Room),
            (self.place.front(), Source::Place),
            (self.staff.as_ref().and_then(Cursor::front), Source::Staff),
            (
                self.captions.as_ref().and_then(Cursor::front),
                Source::Captions,
            ),
            (direct, Source::Direct),
        ];
        Ok(candidates
            .into_iter()
            .filter_map(|(seq, source)| seq.map(|s| (s, source)))
            .min_by_key(|(seq, _)| *seq))
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<Result<Arc<Envelope>, Lagged>> {
        let first = match self.lowest() {
            Ok(first) => first?,
            Err(lagged) => return Some(Err(lagged)),
        };
        // A lane that looked empty may have received a lower seq since: look once more.
        let (seq, source) = match self.lowest() {
            Ok(Some(second)) if second.0 < first.0 => second,
            Ok(_) => first,
            Err(lagged) => return Some(Err(lagged)),
        };
        let envelope = match source {
            Source::Room => self.room.buffered.pop_front(),
            Source::Place => self.place.buffered.pop_front(),
            Source::Staff => self.staff.as_mut().and_then(|s| s.buffered.pop_front()),
            Source::Captions => self.captions.as_mut().and_then(|s| s.buffered.pop_front()),
            Source::Direct => self.direct.pop(),
        }?;
        debug_assert_eq!(envelope.seq, seq);
        self.delivered = seq;
        Some(Ok(envelope))
    }

    /// The next event, waiting for one.
    pub async fn recv(&mut self) -> Result<Arc<Envelope>, Lagged> {
        loop {
            // Mark the lanes seen before looking, so a push after the look wakes us.
            self.room.wake.borrow_and_update();
            self.place.wake.borrow_and_update();
            if let Some(staff) = &mut self.staff {
                staff.wake.borrow_and_update();
            }
            if let Some(captions) = &mut self.captions {
                captions.wake.borrow_and_update();
            }
            if let Some(next) = self.try_recv() {
                return next;
            }
            let staff = async {
                match &mut self.staff {
                    Some(staff) => staff.wake.changed().await,
                    None => std::future::pending().await,
                }
            };
            let captions = async {
                match &mut self.captions {
                    Some(captions) => captions.wake.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.room.wake.changed() => {}
                _ = self.place.wake.changed() => {}
                _ = staff => {}
                _ = captions => {}
                _ = self.direct.ready() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::outbox;
    use convene_core::wire::{Audience, Frame, SessionEffect};

    fn envelope(seq: u64, audience: Audience) -> RoomOutput {
        RoomOutput::Publish(Arc::new(Envelope {
            seq,
            audience,
            effect: None,
            frame: Frame::from(format!("{{\"seq\":{seq}}}")),
        }))
    }

    #[tokio::test]
    async fn a_session_merges_its_lanes_in_seq_order_and_skips_others() {
        let hub = Hub::new(64);
        let (ana_out, ana_in) = outbox(16);
        let _ana = hub.register("r", "ana", ConnectionId::new_v4(), ana_out);
        let (bo_out, bo_in) = outbox(16);
        let _bo = hub.register("r", "bo", ConnectionId::new_v4(), bo_out);
        let mut ana = hub.events("r", true, Place::Main, ana_in.frames.direct_lane(), 0);
        let mut bo = hub.events(
            "r",
            false,
            Place::Breakout(1),
            bo_in.frames.direct_lane(),
            0,
        );
        let outputs = [
            envelope(1, Audience::Everyone),
            envelope(2, Audience::staff()),
            envelope(3, Audience::person("ana")),
            envelope(4, Audience::at(Place::Breakout(1))),
            envelope(5, Audience::staff_and("ana")),
            envelope(6, Audience::at(Place::Main)),
            envelope(7, Audience::person("bo")),
            envelope(8, Audience::Everyone),
        ];
        for output in outputs {
            hub.deliver("r", output);
        }
        let mut seen = Vec::new();
        while let Some(event) = ana.try_recv() {
            seen.push(event.unwrap().seq);
        }
        // Staff and person lanes both carry 5: delivered once.
        assert_eq!(seen, vec![1, 2, 3, 5, 6, 8]);
        let mut seen = Vec::new();
        while let Some(event) = bo.try_recv() {
            seen.push(event.unwrap().seq);
        }
        assert_eq!(seen, vec![1, 4, 7, 8]);
    }

    #[tokio::test]
    async fn captions_reach_only_sessions_that_turned_them_on() {
        let hub = Hub::new(64);
        let (ana_out, ana_in) = outbox(16);
        let _ana = hub.register("r", "ana", ConnectionId::new_v4(), ana_out);
        let (bo_out, bo_in) = outbox(16);
        let _bo = hub.register("r", "bo", ConnectionId::new_v4(), bo_out);
        let mut ana = hub.events("r", false, Place::Main, ana_in.frames.direct_lane(), 0);
        let mut bo = hub.events("r", false, Place::Main, bo_in.frames.direct_lane(), 0);
        ana.set_captions(true);
        hub.deliver("r", envelope(1, Audience::Captions));
        hub.deliver("r", envelope(2, Audience::Everyone));
        assert_eq!(ana.recv().await.unwrap().seq, 1);
        assert_eq!(ana.recv().await.unwrap().seq, 2);
        assert_eq!(bo.recv().await.unwrap().seq, 2);
        assert!(bo.try_recv().is_none());
        // Off again: later captions do not reach her; a waiting reader wakes for them when on.
        ana.set_captions(false);
        hub.deliver("r", envelope(3, Audience::Captions));
        assert!(ana.try_recv().is_none());
        bo.set_captions(true);
        let waiter = tokio::spawn(async move { bo.recv().await.map(|e| e.seq) });
        tokio::task::yield_now().await;
        hub.deliver("r", envelope(4, Audience::Captions));
        assert_eq!(waiter.await.unwrap(), Ok(3));
    }

    #[tokio::test]
    async fn a_move_switches_the_place_lane_at_its_seq() {
        let hub = Hub::new(64);
        let (out, inbox) = outbox(16);
        let _reg = hub.register("r", "ana", ConnectionId::new_v4(), out);
        let mut ana = hub.events("r", false, Place::Main, inbox.frames.direct_lane(), 0);
        hub.deliver("r", envelope(1, Audience::at(Place::Breakout(2))));
        hub.deliver(
            "r",
            RoomOutput::Publish(Arc::new(Envelope {
                seq: 2,
                audience: Audience::person("ana"),
                effect: Some(SessionEffect::Move {
                    identity: "ana".into(),
                    from: Place::Main,
                    to: Place::Breakout(2),
                    may_publish: true,
                }),
                frame: Frame::from("{}"),
            })),
        );
        hub.deliver("r", envelope(3, Audience::at(Place::Breakout(2))));
        hub.deliver("r", envelope(4, Audience::at(Place::Main)));
        let moved = ana.recv().await.unwrap();
        assert_eq!(moved.seq, 2);
        ana.move_to(Place::Breakout(2));
        // 1 was in the breakout before she arrived; 4 is in the room she left.
        assert_eq!(ana.recv().await.unwrap().seq, 3);
        assert!(ana.try_recv().is_none());
        // A live event wakes a waiting reader.
        let waiter = tokio::spawn(async move { ana.recv().await.map(|e| e.seq) });
        tokio::task::yield_now().await;
        hub.deliver("r", envelope(5, Audience::at(Place::Breakout(2))));
        assert_eq!(waiter.await.unwrap(), Ok(5));
    }

    #[tokio::test]
    async fn a_reader_a_whole_lane_behind_lags_and_replies_reach_their_connection() {
        let hub = Hub::new(16);
        let (out, inbox) = outbox(16);
        let connection = ConnectionId::new_v4();
        let registration = hub.register("r", "ana", connection, out);
        let mut ana = hub.events("r", false, Place::Main, inbox.frames.direct_lane(), 0);
        for seq in 1..=40 {
            hub.deliver("r", envelope(seq, Audience::Everyone));
        }
        assert!(ana.lagging());
        assert_eq!(ana.try_recv(), Some(Err(Lagged)));
        hub.deliver(
            "r",
            RoomOutput::Reply {
                to: connection,
                frame: Frame::from("ack"),
            },
        );
        assert_eq!(inbox.frames.try_recv().unwrap().as_str(), "ack");
        drop(registration);
        assert_eq!(hub.connections(), 0);
        hub.deliver(
            "r",
            RoomOutput::Reply {
                to: connection,
                frame: Frame::from("late"),
            },
        );
        assert!(inbox.frames.try_recv().is_none());
    }
}
