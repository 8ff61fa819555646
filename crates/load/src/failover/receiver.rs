//! A receiver of the failover run: holds a session, resumes it on another node when its node dies, and records what it saw.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use convene_signaling::Role;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::requests::request_number;
use super::shared::{reconnect, Shared};
use crate::chat::client::{hello, open, Hello, Session, Ws};
use crate::chat::frames::leading_u64;
use crate::chat::Target;

/// What one receiver saw, handed back when it stops.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) online: bool,
    pub(super) fresh: bool,
    pub(super) dropped: bool,
    pub(super) resumed: bool,
    pub(super) failed: bool,
    /// When it came back, and how long its own reconnect took.
    pub(super) back_at: Option<Instant>,
    pub(super) reconnect: Option<Duration>,
    pub(super) regressions: u64,
    /// Request number -> times seen.
    pub(super) requests: HashMap<u64, u32>,
}

pub(super) async fn receiver(shared: Arc<Shared>, i: usize) -> Seen {
    let who = format!("c{i}");
    let node = shared.ep.node_of(i);
    let opened = {
        let _permit = shared.gate.acquire().await;
        let mut session = Session::default();
        match open(&shared.ep.url(node, &who, Role::Participant, None)).await {
            Ok(mut ws) => hello(&mut ws, Target::Convene, &mut session)
                .await
                .map(|_| (ws, session)),
            Err(error) => Err(error),
        }
    };
    shared.settled.fetch_add(1, Ordering::Relaxed);
    let (ws, session) = match opened {
        Ok(x) => x,
        Err(error) => {
            shared.errors.add(format!("{who}: {error}"));
            return Seen::default();
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut receiver = Receiver {
        shared: &shared,
        who,
        node,
        ws,
        session,
        seen: Seen {
            online: true,
            ..Seen::default()
        },
    };
    receiver.run().await;
    if receiver.seen.online {
        let _ = tokio::time::timeout(Duration::from_secs(2), receiver.ws.close(None)).await;
    }
    receiver.seen
}

/// A connected receiver: its socket, node, resume state and what it saw so far.
struct Receiver<'a> {
    shared: &'a Shared,
    who: String,
    node: usize,
    ws: Ws,
    session: Session,
    seen: Seen,
}

impl Receiver<'_> {
    async fn run(&mut self) {
        let mut stop = self.shared.stop.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                next = self.ws.next() => match next {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        if !self.come_back().await {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// The socket dropped: counts it against the kill once armed, then resumes on the next
    /// node. False when it could not come back.
    async fn come_back(&mut self) -> bool {
        let shared = self.shared;
        let dropped_at = Instant::now();
        self.seen.online = false;
        shared.connected.fetch_sub(1, Ordering::Relaxed);
        if *shared.stop.borrow() {
            return false;
        }
        let counted = shared.armed.load(Ordering::Relaxed) && !self.seen.dropped;
        if counted {
            self.seen.dropped = true;
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let back = reconnect(
            shared,
            self.node,
            &self.who,
            Role::Participant,
            &self.session,
        )
        .await;
        let Some((ws, session, h, node)) = back else {
            self.seen.failed = true;
            if counted {
                shared.back.fetch_add(1, Ordering::Relaxed);
            }
            return false;
        };
        self.ws = ws;
        self.node = node;
        // A fresh welcome restarts the stream: what came before it is not checked.
        if h == Hello::Welcome {
            self.seen.fresh = true;
        } else if counted {
            self.seen.resumed = true;
        }
        self.session = session;
        self.seen.online = true;
        self.seen.back_at = Some(Instant::now());
        self.seen.reconnect = Some(dropped_at.elapsed());
        shared.connected.fetch_add(1, Ordering::Relaxed);
        if counted {
            shared.back.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Checks the `seq` only increases and counts each chat request number seen.
    fn on_text(&mut self, text: &str) {
        if let Some(rest) = text.strip_prefix(r#"{"type":"event","seq":"#) {
            if let Some(seq) = leading_u64(rest) {
                if seq <= self.session.last_seq {
                    self.seen.regressions += 1;
                }
                self.session.last_seq = self.session.last_seq.max(seq);
            }
            if let Some(r) = request_number(text) {
                *self.seen.requests.entry(r).or_default() += 1;
            }
        } else if text.starts_with(r#"{"type":"error""#) {
            self.shared.errors.add(format!("{}: {text}", self.who));
        }
    }
}
