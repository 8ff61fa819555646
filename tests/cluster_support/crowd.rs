//! Attendees that record every frame they receive, resume on any node that is up after a
//! drop, and resend un-acked request_ids; the crowd of them in one room and the traffic they make.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convene_signaling::{
    ClientMessage, Command, ErrorCode, QaMode, Role, RoomEvent, RoomKind, RoomSnapshot,
    ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::{Cluster, View};
use crate::common;

/// A connect (TCP + upgrade, then the first message) that takes longer is abandoned for
/// another node. Generous: a survivor may hold a resume until it has taken the room over.
const CONNECT_WAIT: Duration = Duration::from_secs(8);

/// Resend a command still unanswered after this long on the same socket. `None`, as the
/// browser client (client/connection.js) and PROTOCOL.md: every command with a request_id gets
/// exactly one reply, and resends happen only after `resumed`. With `Some(3 s)` a lost reply
/// is papered over by the request_id dedup; the scenarios then test everything but replies.
const RESEND_UNANSWERED_AFTER: Option<Duration> = None;

/// What a connection began with.
#[derive(Debug, Clone)]
pub enum First {
    Welcome {
        seq: u64,
        resume_failed: Option<String>,
        snapshot: Box<RoomSnapshot>,
    },
    Resumed {
        last_seq: u64,
        seq: u64,
    },
}

/// A room event as received: its seq, the raw frame, and what it says.
#[derive(Debug, Clone)]
pub struct Seen {
    pub seq: u64,
    pub text: String,
    pub event: RoomEvent,
}

/// One WebSocket connection of an attendee.
#[derive(Debug, Clone)]
pub struct Conn {
    pub node: usize,
    /// The `last_seq` sent with `resume`; `None` for a fresh join.
    pub resume_from: Option<u64>,
    pub first: Option<First>,
    pub events: Vec<Seen>,
    /// `None`: still open when the test ended; `Some(code)`: closed by the server or the network.
    pub closed: Option<Option<u16>>,
    /// The attendee itself dropped this connection (a simulated network dropout).
    pub dropped: bool,
    pub opened_at: Instant,
}

#[derive(Debug, Clone)]
pub struct Refusal {
    pub request_id: Option<String>,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

/// Everything one attendee saw and did.
#[derive(Debug, Clone)]
pub struct Log {
    pub index: usize,
    pub identity: String,
    pub home: usize,
    pub conns: Vec<Conn>,
    /// Connect attempts that failed (node down, stopped, or no first message in time).
    pub failed_connects: u32,
    pub sent: BTreeMap<String, Command>,
    /// When each request_id was first sent, as UTC time of day (to line up with node logs).
    pub first_sent: BTreeMap<String, String>,
    /// request_id -> the id its ack carried.
    pub acked: BTreeMap<String, Option<u64>>,
    pub errors: Vec<Refusal>,
    /// Protocol oddities the attendee noticed (unparseable frames, a second first message, ...).
    pub oddities: Vec<String>,
    /// request_ids never acked nor refused when the test ended.
    pub unanswered: Vec<String>,
    /// request_ids sent to a session that a fresh `welcome` replaced, so never resent.
    pub given_up: Vec<String>,
}

/// Live counters the test polls while attendees run.
#[derive(Default)]
pub struct Progress {
    pub last_seq: AtomicU64,
    pub connected: AtomicBool,
    pub welcomed: AtomicBool,
    pub outstanding: AtomicUsize,
    pub unavailable: AtomicUsize,
    pub acked: Mutex<BTreeMap<String, Option<u64>>>,
    pub acks: AtomicUsize,
}

/// A handle to give an attendee commands; cheap to clone into a traffic task.
#[derive(Clone)]
pub struct Handle {
    pub index: usize,
    pub identity: String,
    pub home: usize,
    orders: mpsc::UnboundedSender<Order>,
    pub progress: Arc<Progress>,
    next: Arc<AtomicU64>,
}

impl Handle {
    /// Queues a command with a fresh request_id; the attendee sends it (again) until answered.
    pub fn send(&self, command: Command) -> String {
        let rid = format!(
            "{}-{}",
            self.identity,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let _ = self.orders.send(Order::Send(rid.clone(), command));
        rid
    }

    /// Drops the TCP connection without a close frame, like a Wi-Fi dropout; the attendee
    /// then resumes on the next node that is up.
    pub fn drop_connection(&self) {
        let _ = self.orders.send(Order::Drop);
    }

    pub fn ack_of(&self, rid: &str) -> Option<Option<u64>> {
        self.progress
            .acked
            .lock()
            .expect("acked lock")
            .get(rid)
            .copied()
    }
}

pub struct Attendee {
    pub handle: Handle,
    task: JoinHandle<Log>,
}

enum Order {
    Send(String, Command),
    Drop,
}

struct Pending {
    command: Command,
    /// When to send (again); `None` while waiting for the reply on the current connection.
    due: Option<Instant>,
    /// Sent at least once: after a fresh `welcome` the new session cannot know its id.
    sent: bool,
}

impl Attendee {
    pub fn spawn(
        index: usize,
        identity: &str,
        role: Role,
        room: &str,
        home: usize,
        view: Arc<View>,
        stop: watch::Receiver<bool>,
    ) -> Attendee {
        let (orders, inbox) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress::default());
        let token = common::token(room, role, identity, &[]);
        let log = Log {
            index,
            identity: identity.to_string(),
            home,
            conns: Vec::new(),
            failed_connects: 0,
            sent: BTreeMap::new(),
            first_sent: BTreeMap::new(),
            acked: BTreeMap::new(),
            errors: Vec::new(),
            oddities: Vec::new(),
            unanswered: Vec::new(),
            given_up: Vec::new(),
        };
        let task = tokio::spawn(run(log, token, view, inbox, progress.clone(), stop));
        Attendee {
            handle: Handle {
                index,
                identity: identity.to_string(),
                home,
                orders,
                progress,
                next: Arc::new(AtomicU64::new(1)),
            },
            task,
        }
    }
}

async fn run(
    mut log: Log,
    token: String,
    view: Arc<View>,
    mut inbox: mpsc::UnboundedReceiver<Order>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Log {
    let mut node = log.home;
    let mut session: Option<String> = None;
    let mut last_seq = 0u64;
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut inbox_open = true;
    'session: loop {
        if *stop.borrow() {
            break;
        }
        let url = match &session {
            None => format!("{}?token={token}", view.ws(node)),
            Some(id) => format!(
                "{}?token={token}&resume={id}&last_seq={last_seq}",
                view.ws(node)
            ),
        };
        let connect = tokio::time::timeout(CONNECT_WAIT, tokio_tungstenite::connect_async(url));
        let socket = tokio::select! {
            _ = stop.changed() => break 'session,
            connected = connect => match connected {
                Ok(Ok((socket, _))) => socket,
                _ => {
                    log.failed_connects += 1;
                    node = view.next_up(node);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    continue 'session;
                }
            },
        };
        log.conns.push(Conn {
            node,
            resume_from: session.as_ref().map(|_| last_seq),
            first: None,
            events: Vec::new(),
            closed: None,
            dropped: false,
            opened_at: Instant::now(),
        });
        let conn = log.conns.len() - 1;
        let (mut tx, mut rx) = socket.split();
        let first_deadline = tokio::time::Instant::now() + CONNECT_WAIT;
        let closed: Option<u16> = loop {
            let next_due = if log.conns[conn].first.is_some() {
                pending.values().filter_map(|p| p.due).min()
            } else {
                None
            };
            let wake = next_due
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let no_first = log.conns[conn].first.is_none();
            tokio::select! {
                _ = stop.changed() => break 'session,
                order = inbox.recv(), if inbox_open => match order {
                    Some(Order::Send(rid, command)) => {
                        log.sent.insert(rid.clone(), command.clone());
                        pending.insert(rid, Pending { command, due: Some(Instant::now()), sent: false });
                        progress.outstanding.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(Order::Drop) => {
                        log.conns[conn].dropped = true;
                        break None;
                    }
                    None => inbox_open = false,
                },
                _ = tokio::time::sleep_until(wake), if next_due.is_some() => {}
                // Recorded as a connection without a first message, closed.
                _ = tokio::time::sleep_until(first_deadline), if no_first => break None,
                frame = rx.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let text = text.to_string();
                        handle_text(&mut log, conn, text, &mut session, &mut last_seq, &mut pending, &progress);
                    }
                    Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => break None,
                },
            }
            if log.conns[conn].first.is_some() {
                let now = Instant::now();
                for (rid, p) in pending.iter_mut() {
                    if p.due.is_some_and(|d| d <= now) {
                        let msg = ClientMessage::with_request_id(p.command.clone(), rid.clone());
                        let text = serde_json::to_string(&msg).expect("serialise command");
                        if tx.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                        p.due = RESEND_UNANSWERED_AFTER.map(|after| Instant::now() + after);
                        if !p.sent {
                            log.first_sent.insert(rid.clone(), utc_now());
                        }
                        p.sent = true;
                    }
                }
            }
        };
        drop((tx, rx));
        log.conns[conn].closed = Some(closed);
        progress.connected.store(false, Ordering::SeqCst);
        // Whatever was waiting for a reply on that socket goes again on the next one.
        let now = Instant::now();
        for p in pending.values_mut() {
            p.due = Some(now);
        }
        node = view.next_up(node);
        tokio::time::sleep(Duration::from_millis(100 + (log.index as u64 % 7) * 30)).await;
    }
    log.unanswered = pending.keys().cloned().collect();
    log
}

fn handle_text(
    log: &mut Log,
    conn: usize,
    text: String,
    session: &mut Option<String>,
    last_seq: &mut u64,
    pending: &mut BTreeMap<String, Pending>,
    progress: &Progress,
) {
    let msg: ServerMessage = match serde_json::from_str(&text) {
        Ok(msg) => msg,
        Err(e) => {
            log.oddities
                .push(format!("conn {conn}: unparseable frame {text}: {e}"));
            return;
        }
    };
    let is_first = matches!(
        msg,
        ServerMessage::Welcome { .. } | ServerMessage::Resumed { .. }
    );
    if is_first && log.conns[conn].first.is_some() {
        log.oddities
            .push(format!("conn {conn}: a second welcome/resumed: {text}"));
        return;
    }
    if !is_first && log.conns[conn].first.is_none() {
        log.oddities
            .push(format!("conn {conn}: {text} before welcome/resumed"));
    }
    match msg {
        ServerMessage::Welcome {
            session_id,
            seq,
            resume_failed,
            snapshot,
            ..
        } => {
            *session = Some(session_id);
            *last_seq = seq;
            progress.last_seq.store(seq, Ordering::SeqCst);
            progress.connected.store(true, Ordering::SeqCst);
            progress.welcomed.store(true, Ordering::SeqCst);
            if conn > 0 {
                // As the browser client does: a fresh session does not know the ids sent to
                // the old one, so only what never left is sent; the rest is given up.
                pending.retain(|rid, p| {
                    if p.sent {
                        log.given_up.push(rid.clone());
                        progress.outstanding.fetch_sub(1, Ordering::SeqCst);
                    }
                    !p.sent
                });
            }
            log.conns[conn].first = Some(First::Welcome {
                seq,
                resume_failed,
                snapshot,
            });
        }
        ServerMessage::Resumed {
            session_id,
            last_seq: from,
            seq,
            ..
        } => {
            *session = Some(session_id);
            progress.connected.store(true, Ordering::SeqCst);
            log.conns[conn].first = Some(First::Resumed {
                last_seq: from,
                seq,
            });
        }
        ServerMessage::Event { seq, event } => {
            *last_seq = seq;
            progress.last_seq.store(seq, Ordering::SeqCst);
            log.conns[conn].events.push(Seen { seq, text, event });
        }
        ServerMessage::Ack { request_id, id } => {
            if pending.remove(&request_id).is_some() {
                progress.outstanding.fetch_sub(1, Ordering::SeqCst);
            }
            match log.acked.get(&request_id) {
                Some(before) if *before != id => log.oddities.push(format!(
                    "{request_id} acked twice with different ids: {before:?} then {id:?}"
                )),
                Some(_) => {}
                None => {
                    if !log.sent.contains_key(&request_id) {
                        log.oddities
                            .push(format!("ack for {request_id}, which was never sent"));
                    }
                    log.acked.insert(request_id.clone(), id);
                    progress
                        .acked
                        .lock()
                        .expect("acked lock")
                        .insert(request_id, id);
                    progress.acks.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        ServerMessage::Error {
            request_id,
            code,
            message,
            retry_after_ms,
        } => {
            log.errors.push(Refusal {
                request_id: request_id.clone(),
                code,
                message,
                retry_after_ms,
            });
            let Some(rid) = request_id else { return };
            if matches!(code, ErrorCode::Unavailable | ErrorCode::RateLimited) {
                if code == ErrorCode::Unavailable {
                    progress.unavailable.fetch_add(1, Ordering::SeqCst);
                }
                if let Some(p) = pending.get_mut(&rid) {
                    // Try again when told; a refusal without a delay is retried after 500 ms.
                    p.due =
                        Some(Instant::now() + Duration::from_millis(retry_after_ms.unwrap_or(500)));
                }
            } else if pending.remove(&rid).is_some() {
                progress.outstanding.fetch_sub(1, Ordering::SeqCst);
            }
        }
        _ => {}
    }
}

/// Everyone in one room: attendee 0 is the host (on node 0), who makes it a meeting with open
/// Q&A before anyone else joins, so every event of the test is visible to every attendee.
pub struct Crowd {
    pub room: String,
    pub attendees: Vec<Attendee>,
    stop: watch::Sender<bool>,
    pub view: Arc<View>,
}

impl Crowd {
    pub async fn join(cluster: &Cluster, room: &str, count: usize) -> Crowd {
        Crowd::join_view(cluster.view.clone(), room, count).await
    }

    /// As `join`, for the nodes in `view` (one node and no Redis: tests/durable.rs).
    pub async fn join_view(view: Arc<View>, room: &str, count: usize) -> Crowd {
        let (stop, stop_rx) = watch::channel(false);
        let n = view.len();
        let host = Attendee::spawn(
            0,
            "host",
            Role::Host,
            room,
            0,
            view.clone(),
            stop_rx.clone(),
        );
        let rid = host.handle.send(Command::UpdateSettings {
            kind: Some(RoomKind::Meeting),
            chat_enabled: None,
            qa_mode: Some(QaMode::Open),
        });
        wait_for(
            Duration::from_secs(15),
            "the host's settings to be acked",
            || host.handle.ack_of(&rid).is_some(),
        )
        .await;
        let mut attendees = vec![host];
        for i in 1..count {
            attendees.push(Attendee::spawn(
                i,
                &format!("p{i:02}"),
                Role::Participant,
                room,
                i % n,
                view.clone(),
                stop_rx.clone(),
            ));
        }
        let crowd = Crowd {
            room: room.to_string(),
            attendees,
            stop,
            view,
        };
        let within = Duration::from_secs(20 + count as u64 / 10);
        wait_for(within, "every attendee's welcome", || {
            crowd
                .attendees
                .iter()
                .all(|a| a.handle.progress.welcomed.load(Ordering::SeqCst))
        })
        .await;
        crowd
    }

    pub fn handles(&self) -> Vec<Handle> {
        self.attendees.iter().map(|a| a.handle.clone()).collect()
    }

    pub fn acks(&self) -> usize {
        self.attendees
            .iter()
            .map(|a| a.handle.progress.acks.load(Ordering::SeqCst))
            .sum()
    }

    pub fn unavailable(&self) -> usize {
        self.attendees
            .iter()
            .map(|a| a.handle.progress.unavailable.load(Ordering::SeqCst))
            .sum()
    }

    /// Waits until every command has its ack (or a final refusal).
    pub async fn settle(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let waiting: Vec<String> = self
                .attendees
                .iter()
                .filter(|a| a.handle.progress.outstanding.load(Ordering::SeqCst) > 0)
                .map(|a| {
                    format!(
                        "{}: {}",
                        a.handle.identity,
                        a.handle.progress.outstanding.load(Ordering::SeqCst)
                    )
                })
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "commands still unanswered {within:?} after the traffic: {waiting:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every attendee is connected at the same last seq, unchanged for 1.5 s.
    pub async fn quiesce(&self, within: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + within;
        let mut stable_since = Instant::now();
        let mut last_max = 0;
        loop {
            let states: Vec<(bool, u64)> = self
                .attendees
                .iter()
                .map(|a| {
                    (
                        a.handle.progress.connected.load(Ordering::SeqCst),
                        a.handle.progress.last_seq.load(Ordering::SeqCst),
                    )
                })
                .collect();
            let max = states.iter().map(|s| s.1).max().unwrap_or(0);
            let agreed = states.iter().all(|&(up, seq)| up && seq == max);
            if max != last_max || !agreed {
                last_max = max;
                stable_since = Instant::now();
            }
            if agreed && stable_since.elapsed() >= Duration::from_millis(1500) {
                return Ok(max);
            }
            if Instant::now() > deadline {
                let behind: Vec<String> = self
                    .attendees
                    .iter()
                    .zip(&states)
                    .filter(|(_, &(up, seq))| !up || seq != max)
                    .map(|(a, (up, seq))| {
                        format!(
                            "{} at {seq}{}",
                            a.handle.identity,
                            if *up { "" } else { " (disconnected)" }
                        )
                    })
                    .collect();
                return Err(format!(
                    "attendees did not converge on seq {max} within {within:?}: {behind:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every attendee (sockets dropped without a close frame) and returns their logs.
    pub async fn finish(self) -> Vec<Log> {
        let _ = self.stop.send(true);
        let mut logs = Vec::new();
        for a in self.attendees {
            logs.push(
                tokio::time::timeout(Duration::from_secs(10), a.task)
                    .await
                    .expect("attendee stops")
                    .expect("attendee task did not panic"),
            );
        }
        logs
    }
}

pub async fn wait_for(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The traffic of a scenario: a few senders chat every round and ask now and then; voters
/// upvote each question once its ask is acked.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rounds: usize,
    pub interval: Duration,
    pub senders: Vec<usize>,
    /// A sender asks at every round that is a multiple of this (counting from 1).
    pub ask_every: usize,
    /// Asks per sender (the server allows 5 per minute per identity).
    pub max_asks: usize,
    pub voters_per_question: usize,
}

impl Plan {
    /// Two senders per node, a chat each every 600 ms (under the 2/s chat rate).
    pub fn standard(rounds: usize) -> Plan {
        Plan {
            rounds,
            interval: Duration::from_millis(600),
            senders: (1..=6).collect(),
            ask_every: 4,
            max_asks: 3,
            voters_per_question: 6,
        }
    }
}

/// What the traffic task issued.
#[derive(Debug, Default, Clone)]
pub struct Issued {
    pub chats: usize,
    pub asks: usize,
    pub upvotes: usize,
}

/// Runs `plan` on `handles` in a task; the task ends once every issued ask is answered (or
/// 20 s after the last round) and its upvotes are issued.
pub fn traffic(handles: Vec<Handle>, plan: Plan) -> JoinHandle<Issued> {
    tokio::spawn(async move {
        let mut issued = Issued::default();
        let mut asks: Vec<(usize, String)> = Vec::new();
        let mut asked = vec![0usize; handles.len()];
        let n = handles.len();
        let mut round = 0;
        let mut after_last: Option<Instant> = None;
        loop {
            if round < plan.rounds {
                round += 1;
                for &s in &plan.senders {
                    let h = &handles[s];
                    h.send(Command::SendChat {
                        text: format!("m {} {round}", h.identity),
                    });
                    issued.chats += 1;
                    if round % plan.ask_every == 0 && asked[s] < plan.max_asks {
                        asked[s] += 1;
                        let rid = h.send(Command::AskQuestion {
                            text: format!("q {} {}", h.identity, asked[s]),
                            anonymous: false,
                        });
                        asks.push((s, rid));
                        issued.asks += 1;
                    }
                }
            } else if after_last.is_none() {
                after_last = Some(Instant::now());
            }
            // Upvotes for every question whose ask was acked since the last round.
            asks.retain(|(author, rid)| {
                let Some(answer) = handles[*author].ack_of(rid) else {
                    return true;
                };
                let Some(question_id) = answer else {
                    return false;
                };
                let mut voters: Vec<usize> = (0..plan.voters_per_question)
                    .map(|j| (question_id as usize * 7 + j * 5 + 1) % n)
                    .filter(|v| v != author)
                    .collect();
                voters.sort();
                voters.dedup();
                for v in voters {
                    handles[v].send(Command::Upvote { question_id });
                    issued.upvotes += 1;
                }
                false
            });
            if round >= plan.rounds
                && (asks.is_empty()
                    || after_last.is_some_and(|t| t.elapsed() > Duration::from_secs(20)))
            {
                return issued;
            }
            tokio::time::sleep(plan.interval).await;
        }
    })
}

/// The UTC time of day, `HH:MM:SS.mmm`, as the nodes' log lines print it.
pub fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}
