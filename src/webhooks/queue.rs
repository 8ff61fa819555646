//! One receiver's webhook queue: per-room queues bounded in count and bytes, served round robin, with presence churn coalesced per identity and capped per minute.
//!
//! Pure: time is an argument, so the rules are tested without a clock. What it promises:
//! - A room's flood, or a receiver too slow for it, drops that room's events only: a full
//!   room queue drops its own oldest presence events first (then its oldest); when all rooms
//!   together reach the node's bound, the longest room queue gives one up.
//! - Rooms take turns, and each has at most `in_flight_per_room` deliveries at once, so a
//!   room whose events wait on a slow receiver does not hold the others back.
//! - `participant.joined`/`left` of one identity are sent at once, then at most once per
//!   `presence_window` (the latest state, and nothing if it is what was last sent), and at
//!   most `presence_per_minute` times a minute. The latest state always follows, late at
//!   worst. Everything else (rooms, questions, breakouts, attendance) is never coalesced.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::WebhookEvent;

/// The kinds that coalesce: the presence of one identity.
const JOINED: &str = "participant.joined";
const LEFT: &str = "participant.left";
const MINUTE: Duration = Duration::from_secs(60);

/// The bounds, from `[webhooks]`.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Events waiting in all rooms.
    pub total: usize,
    pub room_events: usize,
    pub room_bytes: usize,
    pub in_flight_per_room: usize,
    pub presence_window: Duration,
    /// 0: no cap.
    pub presence_per_minute: usize,
}

/// An event ready to send: its id and its body, serialised once.
#[derive(Debug, Clone)]
pub struct Ready {
    pub room: String,
    pub id: String,
    pub body: Arc<[u8]>,
    kind: &'static str,
    /// Whose presence a `participant.*` event changes.
    identity: Option<String>,
}

impl Ready {
    pub fn new(event: &WebhookEvent) -> Ready {
        Ready {
            room: event.room.clone(),
            id: event.id.clone(),
            body: serde_json::to_vec(event)
                .expect("webhook events serialise")
                .into(),
            kind: event.kind,
            identity: [JOINED, LEFT]
                .contains(&event.kind)
                .then(|| event.data["identity"].as_str().map(str::to_string))
                .flatten(),
        }
    }

    fn coalescable(&self) -> bool {
        self.identity.is_some()
    }
}

/// What was counted by a call: events dropped (a full queue) and presence events coalesced away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub dropped: usize,
    pub coalesced: usize,
}

/// One identity's presence in one room, while it has a window, a pending state or recent sends.
#[derive(Debug)]
struct Presence {
    /// Until then, a new state waits in `pending`.
    window_until: Instant,
    pending: Option<Ready>,
    /// The kind last queued (what the receiver will have been told).
    last: Option<&'static str>,
    /// When presence events were queued, within the last minute.
    sent: VecDeque<Instant>,
    /// Its entry in `Scheduler::timers`.
    due: Instant,
}

impl Presence {
    /// The earliest time `pending` may be queued (window and per-minute cap).
    fn allowed_at(&self, now: Instant, cap: usize) -> Instant {
        let capped = match self.sent.front() {
            Some(first) if cap > 0 && self.sent.len() >= cap => *first + MINUTE,
            _ => now,
        };
        capped.max(self.window_until)
    }

    /// When the scheduler must look at it next: to send `pending`, or to forget it.
    fn next_due(&self, now: Instant, cap: usize) -> Instant {
        if self.pending.is_some() {
            return self.allowed_at(now, cap);
        }
        let last_send = self.sent.back().map_or(now, |t| *t + MINUTE);
        last_send.max(self.window_until)
    }
}

#[derive(Debug, Default)]
struct RoomQueue {
    events: VecDeque<Ready>,
    bytes: usize,
    in_flight: usize,
    in_ring: bool,
    presence: HashMap<String, Presence>,
    /// A drop was logged for this room (once).
    warned: bool,
}

/// One receiver's queues.
#[derive(Debug)]
pub struct Scheduler {
    limits: QueueLimits,
    rooms: HashMap<String, RoomQueue>,
    /// Rooms with events queued, in turn order.
    ring: VecDeque<String>,
    total: usize,
    /// (due, room, identity) of every presence entry.
    timers: BTreeSet<(Instant, String, String)>,
}

impl Scheduler {
    pub fn new(limits: QueueLimits) -> Scheduler {
        Scheduler {
            limits,
            rooms: HashMap::new(),
            ring: VecDeque::new(),
            total: 0,
            timers: BTreeSet::new(),
        }
    }

    /// Takes an event from a room: queued, held for its identity's window, or coalesced.
    pub fn push(&mut self, event: Ready, now: Instant) -> Counted {
        let mut counted = Counted::default();
        if event.kind == "room.ended" {
            self.flush_presence(&event.room, &mut counted);
        }
        match event.identity.clone() {
            Some(identity) => self.push_presence(event, identity, now, &mut counted),
            None => self.enqueue(event, &mut counted),
        }
        counted
    }

    fn push_presence(&mut self, event: Ready, identity: String, now: Instant, c: &mut Counted) {
        let cap = self.limits.presence_per_minute;
        let room = self.rooms.entry(event.room.clone()).or_default();
        let entry = room
            .presence
            .entry(identity.clone())
            .or_insert_with(|| Presence {
                window_until: now,
                pending: None,
                last: None,
                sent: VecDeque::new(),
                due: now,
            });
        while entry.sent.front().is_some_and(|t| *t + MINUTE <= now) {
            entry.sent.pop_front();
        }
        let old_due = entry.due;
        let send_now = entry.pending.is_none() && entry.allowed_at(now, cap) <= now;
        if send_now {
            entry.last = Some(event.kind);
            entry.sent.push_back(now);
            entry.window_until = now + self.limits.presence_window;
        } else if entry.pending.replace(event.clone()).is_some() {
            c.coalesced += 1;
        }
        entry.due = entry.next_due(now, cap);
        let new_due = entry.due;
        let room_name = event.room.clone();
        self.timers
            .remove(&(old_due, room_name.clone(), identity.clone()));
        self.timers.insert((new_due, room_name, identity));
        if send_now {
            self.enqueue(event, c);
        }
    }

    /// Runs presence timers due by `now`: sends pending states, forgets quiet identities.
    pub fn tick(&mut self, now: Instant) -> Counted {
        let mut counted = Counted::default();
        let cap = self.limits.presence_per_minute;
        while let Some((due, room_name, identity)) = self.timers.first().cloned() {
            if due > now {
                break;
            }
            self.timers.pop_first();
            let Some(room) = self.rooms.get_mut(&room_name) else {
                continue;
            };
            let Some(entry) = room.presence.get_mut(&identity) else {
                continue;
            };
            while entry.sent.front().is_some_and(|t| *t + MINUTE <= now) {
                entry.sent.pop_front();
            }
            let mut send = None;
            if entry.pending.is_some() && entry.allowed_at(now, cap) <= now {
                let pending = entry.pending.take().expect("checked");
                if entry.last == Some(pending.kind) {
                    // Back where the receiver was told it is: nothing to say.
                    counted.coalesced += 1;
                } else {
                    entry.last = Some(pending.kind);
                    entry.sent.push_back(now);
                    entry.window_until = now + self.limits.presence_window;
                    send = Some(pending);
                }
            }
            if entry.pending.is_none() && entry.sent.is_empty() && entry.window_until <= now {
                room.presence.remove(&identity);
            } else {
                entry.due = entry.next_due(now, cap).max(now + Duration::from_millis(1));
                self.timers.insert((entry.due, room_name.clone(), identity));
            }
            if let Some(event) = send {
                self.enqueue(event, &mut counted);
            }
            self.forget_if_idle(&room_name);
        }
        counted
    }

    /// The room ends: every identity's pending state goes out first, ahead of `room.ended`.
    fn flush_presence(&mut self, room_name: &str, c: &mut Counted) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let mut flushed = Vec::new();
        for (identity, entry) in room.presence.drain() {
            self.timers
                .remove(&(entry.due, room_name.to_string(), identity));
            if let Some(pending) = entry.pending {
                if entry.last == Some(pending.kind) {
                    c.coalesced += 1;
                } else {
                    flushed.push(pending);
                }
            }
        }
        for event in flushed {
            self.enqueue(event, c);
        }
    }

    fn enqueue(&mut self, event: Ready, c: &mut Counted) {
        let name = event.room.clone();
        let room = self.rooms.entry(name.clone()).or_default();
        room.bytes += event.body.len();
        room.events.push_back(event);
        self.total += 1;
        if !room.in_ring {
            room.in_ring = true;
            self.ring.push_back(name.clone());
        }
        let l = self.limits;
        while room.events.len() > l.room_events.max(1)
            || (room.bytes > l.room_bytes && room.events.len() > 1)
        {
            drop_oldest(&name, room, c);
            self.total -= 1;
        }
        while self.total > l.total.max(1) {
            // The longest queue gives one up: a flood pays for itself.
            let Some((longest, room)) = self.rooms.iter_mut().max_by_key(|(_, r)| r.events.len())
            else {
                break;
            };
            drop_oldest(longest, room, c);
            self.total -= 1;
        }
    }

    /// The next event to send, taking rooms in turn; `None`: nothing may go now.
    pub fn next(&mut self) -> Option<Ready> {
        for _ in 0..self.ring.len() {
            let name = self.ring.pop_front()?;
            let Some(room) = self.rooms.get_mut(&name) else {
                continue;
            };
            if room.events.is_empty() {
                room.in_ring = false;
                self.forget_if_idle(&name);
                continue;
            }
            if room.in_flight >= self.limits.in_flight_per_room.max(1) {
                self.ring.push_back(name);
                continue;
            }
            let event = room.events.pop_front().expect("not empty");
            room.bytes -= event.body.len();
            room.in_flight += 1;
            self.total -= 1;
            if room.events.is_empty() {
                room.in_ring = false;
            } else {
                self.ring.push_back(name);
            }
            return Some(event);
        }
        None
    }

    /// A delivery of `room`'s event is over (delivered or given up).
    pub fn done(&mut self, room: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
        self.forget_if_idle(room);
    }

    /// When `tick` next has work.
    pub fn next_wake(&self) -> Option<Instant> {
        self.timers.first().map(|(due, _, _)| *due)
    }

    fn forget_if_idle(&mut self, name: &str) {
        if self.rooms.get(name).is_some_and(|r| {
            r.events.is_empty() && r.in_flight == 0 && r.presence.is_empty() && !r.in_ring
        }) {
            self.rooms.remove(name);
        }
    }

    /// Events waiting (all rooms).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.total
    }
}

/// Drops `room`'s oldest presence event, else its oldest; logs the first drop of the room.
fn drop_oldest(name: &str, room: &mut RoomQueue, c: &mut Counted) {
    let at = room.events.iter().position(Ready::coalescable).unwrap_or(0);
    if let Some(gone) = room.events.remove(at) {
        room.bytes -= gone.body.len();
        c.dropped += 1;
        if !std::mem::replace(&mut room.warned, true) {
            tracing::warn!(room = name, "webhook queue of this room is full: dropping its oldest events (counted in convene_webhook_deliveries_total{{outcome=\"dropped\"}})");
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
