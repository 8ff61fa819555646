//! The convening's record: which convening a room's events belong to (a live one, or an ad-hoc one opened with the room), the rows each published event writes (through the store's group commit, keyed by seq), the end of a convening with its `convening.ended` webhook, and the retention sweeper.

pub mod report;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_core::room::feed::WebhookEvent;
use convene_signaling::{Member, Millis, Presence as Online, RoomEvent};
use convene_store::record::{Chat, Convening, Poll, Presence, Question, RecordWrite};
use convene_store::{GroupCommit, Store, StoreError, Write};

use crate::webhooks::Webhooks;

/// Retention of an ad-hoc convening's record unless set otherwise (`store.retention_days`).
pub const DEFAULT_RETENTION_DAYS: i64 = 90;

/// Unix milliseconds now.
pub fn unix_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// What the recorder knows of one person in a running room, to write a row only for a change.
#[derive(Clone)]
struct Seen {
    name: String,
    team: String,
    role: String,
    online: bool,
    breakout: Option<u32>,
}

/// A room as the recorder knows it.
enum Known {
    /// Its convening is being looked up (a cluster node that just took the room over): its
    /// events wait here, in order.
    Opening(Vec<(u64, RoomEvent, Option<String>, Millis)>),
    Running(Running),
    /// Its convening ended while the room runs on: nothing more is recorded until it closes.
    Ended,
}

/// One running room's convening.
struct Running {
    convening: String,
    ad_hoc: bool,
    people: HashMap<String, Seen>,
}

/// Writes the record of every room running on this node.
pub struct Recorder {
    store: Store,
    log: GroupCommit,
    webhooks: Webhooks,
    /// Where the `convening.ended` webhook points (`server.public_url`).
    public_url: String,
    retention_days: i64,
    rooms: Mutex<HashMap<String, Known>>,
    me: std::sync::Weak<Recorder>,
}

fn role_name(role: convene_signaling::Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn seen(member: &Member) -> Seen {
    Seen {
        name: member.name.clone(),
        team: member.attrs.get("team").cloned().unwrap_or_default(),
        role: role_name(member.role),
        online: member.presence == Online::Online,
        breakout: member.breakout,
    }
}

impl Recorder {
    pub fn new(
        store: Store,
        log: GroupCommit,
        webhooks: Webhooks,
        public_url: &str,
        retention_days: i64,
    ) -> Arc<Recorder> {
        Arc::new_cyclic(|me| Recorder {
            store,
            log,
            webhooks,
            public_url: public_url.trim_end_matches('/').to_string(),
            retention_days,
            rooms: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The room opened (a first join, or a rebuild): its live convening, or a new ad-hoc one.
    pub async fn open(&self, room: &str, now: Millis) -> Result<String, StoreError> {
        let (convening, ad_hoc) = match self.store.live_convening(room).await? {
            Some(c) => (c.id, c.starts_at.is_none()),
            None => {
                let c = Convening {
                    id: uuid::Uuid::new_v4().to_string(),
                    room: room.to_string(),
                    title: room.to_string(),
                    // A room starts as a webcast (`RoomSettings::default`).
                    kind: "webcast".into(),
                    state: "live".into(),
                    starts_at: None,
                    ends_at: None,
                    started_at: Some(now as i64),
                    ended_at: None,
                    plan: "{}".into(),
                    retention_days: self.retention_days,
                    created_at: now as i64,
                    updated_at: now as i64,
                };
                self.store.insert_convening(&c).await?;
                tracing::info!(room, convening = %c.id, "ad-hoc convening opened");
                (c.id, true)
            }
        };
        let mut running = Running {
            convening: convening.clone(),
            ad_hoc,
            people: HashMap::new(),
        };
        let mut rooms = self.rooms.lock().expect("recorder lock");
        let waiting = match rooms.remove(room) {
            Some(Known::Opening(waiting)) => waiting,
            _ => Vec::new(),
        };
        let writes: Vec<Write> = waiting
            .iter()
            .flat_map(|(seq, event, person, at)| {
                rows(
                    &mut running,
                    *seq as i64,
                    event,
                    person.as_deref(),
                    *at as i64,
                )
            })
            .map(Write::Record)
            .collect();
        if !writes.is_empty() {
            self.log.write_later(writes);
        }
        rooms.insert(room.to_string(), Known::Running(running));
        Ok(convening)
    }

    /// Looks the convening up for a room first seen through its events (a takeover).
    fn open_later(&self, room: &str, now: Millis) {
        let Some(recorder) = self.me.upgrade() else {
            return;
        };
        let room = room.to_string();
        tokio::spawn(async move {
            if let Err(error) = recorder.open(&room, now).await {
                tracing::error!(%room, %error, "cannot open the room's convening: not recorded");
                recorder.rooms.lock().expect("recorder lock").remove(&room);
            }
        });
    }

    /// The room did not run from `from` to `to` (its node stopped): a gap, not leaving.
    pub fn gap(&self, room: &str, from: Millis, to: Millis) {
        let Some(convening) = self.convening_of(room) else {
            return;
        };
        if to > from {
            self.log.write_later(vec![Write::Record(RecordWrite::Gap {
                convening,
                from: from as i64,
                to: to as i64,
            })]);
        }
    }

    pub fn convening_of(&self, room: &str) -> Option<String> {
        let rooms = self.rooms.lock().expect("recorder lock");
        match rooms.get(room) {
            Some(Known::Running(r)) => Some(r.convening.clone()),
            _ => None,
        }
    }

    /// A published event: the rows it adds to the record, queued in the room's commit order.
    pub fn published(
        &self,
        room: &str,
        seq: u64,
        event: &RoomEvent,
        person: Option<&str>,
        now: Millis,
    ) {
        let writes = {
            let mut rooms = self.rooms.lock().expect("recorder lock");
            match rooms.get_mut(room) {
                Some(Known::Running(running)) => {
                    rows(running, seq as i64, event, person, now as i64)
                }
                Some(Known::Opening(waiting)) => {
                    waiting.push((seq, event.clone(), person.map(str::to_string), now));
                    return;
                }
                Some(Known::Ended) => return,
                None => {
                    let waiting = vec![(seq, event.clone(), person.map(str::to_string), now)];
                    rooms.insert(room.to_string(), Known::Opening(waiting));
                    drop(rooms);
                    self.open_later(room, now);
                    return;
                }
            }
        };
        if !writes.is_empty() {
            self.log
                .write_later(writes.into_iter().map(Write::Record).collect());
        }
    }

    /// The room closed after being empty: an ad-hoc convening ends with it.
    pub fn room_closed(self: &Arc<Self>, room: &str, at: Millis) {
        let known = self.rooms.lock().expect("recorder lock").remove(room);
        let Some(Known::Running(running)) =
            known.filter(|k| matches!(k, Known::Running(r) if r.ad_hoc))
        else {
            return;
        };
        let recorder = self.clone();
        tokio::spawn(async move {
            if let Err(error) = recorder.end(&running.convening, at).await {
                tracing::error!(convening = %running.convening, %error, "cannot end the convening");
            }
        });
    }

    /// Ends a live convening at `at` once its queued rows are committed; the one call that
    /// ends it (on any node) sends `convening.ended` with the report's link. False when it
    /// was not live.
    pub async fn end(&self, convening: &str, at: Millis) -> Result<bool, StoreError> {
        // An empty write resolves after everything queued before it.
        self.log.write(Vec::new()).await?;
        let Some(c) = self.store.convening(convening).await? else {
            return Ok(false);
        };
        if !self.store.end_convening(convening, at as i64).await? {
            return Ok(false);
        }
        // Whatever the room does next is not this convening's.
        for known in self.rooms.lock().expect("recorder lock").values_mut() {
            if matches!(known, Known::Running(r) if r.convening == convening) {
                *known = Known::Ended;
            }
        }
        let report = format!("{}/api/v1/convenings/{convening}/report", self.public_url);
        let page = format!("{}/report/{convening}", self.public_url);
        let mut event = WebhookEvent::new(
            "convening.ended",
            &c.room,
            at,
            serde_json::json!({
                "convening_id": convening, "title": c.title, "report": report, "report_page": page,
            }),
        );
        // Receivers deduplicate by `Convene-Event-Id`: one per convening.
        event.id = format!("convening.ended:{convening}");
        self.webhooks.emit(event);
        tracing::info!(%convening, room = %c.room, "convening ended");
        Ok(true)
    }

    /// Notes every `every` that this node's rooms are running: after a kill -9, the gap
    /// starts at the last note.
    pub fn heartbeat_every(self: &Arc<Self>, every: Duration) {
        let recorder = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
            loop {
                tick.tick().await;
                let Some(recorder) = recorder.upgrade() else {
                    return;
                };
                let at = unix_ms() as i64;
                let writes: Vec<Write> = {
                    let rooms = recorder.rooms.lock().expect("recorder lock");
                    rooms
                        .values()
                        .filter_map(|known| match known {
                            Known::Running(r) => Some(Write::Record(RecordWrite::Alive {
                                convening: r.convening.clone(),
                                at,
                            })),
                            _ => None,
                        })
                        .collect()
                };
                if !writes.is_empty() {
                    recorder.log.write_later(writes);
                }
            }
        });
    }

    /// Deletes expired records every `every`, by the wall clock.
    pub fn sweep_every(self: &Arc<Self>, every: Duration) {
        let recorder = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
            loop {
                tick.tick().await;
                let Some(recorder) = recorder.upgrade() else {
                    return;
                };
                recorder.sweep(unix_ms()).await;
            }
        });
    }

    /// Deletes the records whose retention ran out by `now`.
    pub async fn sweep(&self, now: Millis) -> Vec<String> {
        match self.store.sweep_expired(now as i64).await {
            Ok(swept) => {
                if !swept.is_empty() {
                    tracing::info!(convenings = swept.len(), "expired records deleted");
                }
                swept
            }
            Err(error) => {
                tracing::error!(%error, "cannot sweep expired records");
                Vec::new()
            }
        }
    }
}

/// The rows one event adds: presence changes, chat, questions, polls, breakout names.
fn rows(
    running: &mut Running,
    seq: i64,
    event: &RoomEvent,
    person: Option<&str>,
    at: i64,
) -> Vec<RecordWrite> {
    let convening = running.convening.clone();
    let presence = |identity: &str, s: &Seen, kind: &str| {
        RecordWrite::Presence(Presence {
            convening: convening.clone(),
            seq,
            identity: identity.to_string(),
            name: s.name.clone(),
            team: s.team.clone(),
            role: s.role.clone(),
            kind: kind.to_string(),
            breakout: s.breakout.map(i64::from),
            at,
        })
    };
    let people = &mut running.people;
    let mut out = Vec::new();
    let mut moved = |identity: &str, breakout: Option<u32>, out: &mut Vec<RecordWrite>| {
        if let Some(s) = people.get_mut(identity) {
            if s.breakout != breakout {
                s.breakout = breakout;
                out.push(presence(identity, s, "move"));
            }
        }
    };
    match event {
        RoomEvent::MemberJoined { member } => {
            let s = seen(member);
            out.push(presence(&member.identity, &s, "join"));
            people.insert(member.identity.clone(), s);
        }
        RoomEvent::MemberUpdated { member } => {
            let now = seen(member);
            // Unknown (a replay from a snapshot): as if it was online where it is.
            let before = people.get(&member.identity).cloned().unwrap_or(Seen {
                online: true,
                ..now.clone()
            });
            if before.breakout != now.breakout {
                out.push(presence(&member.identity, &now, "move"));
            }
            if before.online != now.online {
                let kind = if now.online { "back" } else { "away" };
                out.push(presence(&member.identity, &now, kind));
            }
            people.insert(member.identity.clone(), now);
        }
        RoomEvent::MemberLeft { identity, reason } => {
            let s = people.remove(identity).unwrap_or(Seen {
                name: String::new(),
                team: String::new(),
                role: String::new(),
                online: false,
                breakout: None,
            });
            let kind = match reason {
                convene_signaling::LeaveReason::TimedOut => "timeout",
                _ => "leave",
            };
            out.push(presence(identity, &s, kind));
        }
        RoomEvent::MembersMoved { moves } => {
            for m in moves {
                moved(&m.identity, m.breakout, &mut out);
            }
        }
        RoomEvent::Moved { breakout, .. } => {
            if let Some(identity) = person {
                moved(identity, *breakout, &mut out);
            }
        }
        RoomEvent::ChatMessage { message } => out.push(RecordWrite::Chat(Chat {
            convening,
            message_id: message.id as i64,
            seq,
            identity: message.from.clone(),
            name: message.name.clone(),
            text: message.text.clone(),
            breakout: message.breakout.map(i64::from),
            at: message.at as i64,
        })),
        RoomEvent::ChatDeleted { message_id, .. } => out.push(RecordWrite::ChatDeleted {
            convening,
            message_id: *message_id as i64,
        }),
        RoomEvent::QuestionUpdated { question: q } => out.push(RecordWrite::Question(Question {
            convening,
            question_id: q.id as i64,
            seq,
            author: q.author.clone(),
            author_name: q.author_name.clone(),
            text: q.text.clone(),
            state: json_name(&q.state),
            votes: i64::from(q.votes),
            answer: q.answer.clone(),
            asked_at: q.asked_at as i64,
            answered_at: q.answered_at.map(|t| t as i64),
        })),
        RoomEvent::QuestionVotes { question_id, votes } => out.push(RecordWrite::QuestionVotes {
            convening,
            question_id: *question_id as i64,
            seq,
            votes: i64::from(*votes),
        }),
        RoomEvent::PollUpdated { poll: p } => out.push(RecordWrite::Poll(Poll {
            convening,
            poll_id: p.id as i64,
            seq,
            question: p.question.clone(),
            options: serde_json::to_string(&p.options).unwrap_or_default(),
            counts: p
                .counts
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok()),
            voters: p.voters.map(i64::from),
            state: json_name(&p.state),
            created_at: p.created_at as i64,
            closed_at: p.closed_at.map(|t| t as i64),
        })),
        RoomEvent::BreakoutsUpdated { breakouts: Some(b) } => {
            for r in &b.rooms {
                out.push(RecordWrite::Breakout {
                    convening: convening.clone(),
                    breakout: i64::from(r.id),
                    name: r.name.clone(),
                });
            }
        }
        _ => {}
    }
    out
}

/// A unit enum's wire name (`answered`, `closed`).
fn json_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
