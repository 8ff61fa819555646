//! The failover run's sender: numbered chat at `--rate` from a node that survives, resending what the kill may have lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use convene_signaling::Role;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::requests::{command, reply_number};
use super::shared::{reconnect, Shared};
use crate::chat::client::{hello, open, Session, Ws};
use crate::chat::frames::leading_u64;
use crate::chat::Target;

/// After the sender stops: wait this long at most for the outstanding acks.
const ACK_DRAIN: Duration = Duration::from_secs(10);
/// The sender's name in its token and in error texts.
const WHO: &str = "sender";

/// What the sender sent and what was acknowledged.
#[derive(Default)]
pub(super) struct Sent {
    pub(super) sent: u64,
    pub(super) resent: u64,
    pub(super) resent_unanswered: u64,
    pub(super) acked: Vec<u64>,
    pub(super) unacked: u64,
}

/// The sender: chat at `rate` until `stop_sending`, then waits for outstanding acks (bounded).
pub(super) async fn sender(
    shared: Arc<Shared>,
    node: usize,
    rate: f64,
    resend_after: Option<Duration>,
    stop_sending: watch::Receiver<bool>,
) -> Sent {
    let mut session = Session::default();
    let opened = match open(&shared.ep.url(node, WHO, Role::Participant, None)).await {
        Ok(mut ws) => hello(&mut ws, Target::Convene, &mut session)
            .await
            .map(|_| ws),
        Err(error) => Err(error),
    };
    let ws = match opened {
        Ok(ws) => ws,
        Err(error) => {
            shared.errors.add(format!("{WHO}: {error}"));
            return Sent::default();
        }
    };
    let mut sender = Sender {
        shared: &shared,
        ws,
        session,
        node,
        pending: BTreeMap::new(),
        retry: Vec::new(),
        retry_at: None,
        next: 0,
        out: Sent::default(),
    };
    sender.run(rate, resend_after, stop_sending).await;
    sender.out.unacked = sender.pending.len() as u64;
    let _ = tokio::time::timeout(Duration::from_secs(2), sender.ws.close(None)).await;
    sender.out
}

struct Sender<'a> {
    shared: &'a Shared,
    ws: Ws,
    session: Session,
    node: usize,
    /// Request number -> (first sent after the kill, last sent).
    pending: BTreeMap<u64, (bool, Instant)>,
    /// Refused as `unavailable` or `rate_limited`: sent again at `retry_at`.
    retry: Vec<u64>,
    retry_at: Option<Instant>,
    /// The last request number sent.
    next: u64,
    out: Sent,
}

impl Sender<'_> {
    async fn run(
        &mut self,
        rate: f64,
        resend_after: Option<Duration>,
        mut stop_sending: watch::Receiver<bool>,
    ) {
        let mut unanswered = tokio::time::interval(Duration::from_millis(250));
        unanswered.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sending = true;
        let mut drain_until = None;
        loop {
            if !sending && self.pending.is_empty() {
                break;
            }
            let drain_sleep = sleep_until(drain_until);
            let retry_sleep = sleep_until(self.retry_at);
            tokio::select! {
                biased;
                _ = stop_sending.changed(), if sending => {
                    sending = false;
                    drain_until = Some(Instant::now() + ACK_DRAIN);
                }
                _ = drain_sleep => break,
                _ = retry_sleep => self.resend_refused().await,
                _ = unanswered.tick(), if resend_after.is_some() => {
                    self.resend_unanswered(resend_after.unwrap_or_default()).await;
                }
                _ = ticker.tick(), if sending => self.send_next().await,
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        if !self.rejoin().await {
                            break;
                        }
                    }
                },
            }
        }
    }

    async fn send(&mut self, n: u64) -> bool {
        self.ws.send(Message::Text(command(n).into())).await.is_ok()
    }

    async fn send_next(&mut self) {
        self.next += 1;
        let n = self.next;
        let after_kill = self.shared.killed.lock().expect("kill lock").is_some();
        self.pending.insert(n, (after_kill, Instant::now()));
        if self.send(n).await {
            self.out.sent += 1;
        }
    }

    /// Sends again what was refused as `unavailable` or `rate_limited`, if still pending.
    async fn resend_refused(&mut self) {
        self.retry_at = None;
        for n in std::mem::take(&mut self.retry) {
            if self.pending.contains_key(&n) && self.send(n).await {
                self.out.resent += 1;
            }
        }
    }

    /// Sends again, same id, what got no reply within `limit` (and is not waiting to retry).
    async fn resend_unanswered(&mut self, limit: Duration) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .pending
            .iter_mut()
            .filter(|(n, (_, last))| now.duration_since(*last) >= limit && !self.retry.contains(n))
            .map(|(&n, (_, last))| {
                *last = now;
                n
            })
            .collect();
        for n in due {
            if self.send(n).await {
                self.out.resent_unanswered += 1;
            }
        }
    }

    /// Resumes on another node and sends again, same ids, whatever was not acknowledged
    /// (it may be lost). False when no node took the session.
    async fn rejoin(&mut self) -> bool {
        let back = reconnect(
            self.shared,
            self.node,
            WHO,
            Role::Participant,
            &self.session,
        )
        .await;
        let Some((ws, session, _, node)) = back else {
            return false;
        };
        self.ws = ws;
        self.session = session;
        self.node = node;
        let pending: Vec<u64> = self.pending.keys().copied().collect();
        for n in pending {
            if self.send(n).await {
                self.out.resent += 1;
            }
        }
        true
    }

    fn on_text(&mut self, text: &str) {
        if let Some(rest) = text.strip_prefix(r#"{"type":"event","seq":"#) {
            if let Some(seq) = leading_u64(rest) {
                self.session.last_seq = self.session.last_seq.max(seq);
            }
        } else if text.starts_with(r#"{"type":"ack""#) {
            self.on_ack(text);
        } else if text.starts_with(r#"{"type":"error""#) {
            self.on_error(text);
        }
    }

    fn on_ack(&mut self, text: &str) {
        let Some(n) = reply_number(text) else {
            return;
        };
        if let Some((after_kill, _)) = self.pending.remove(&n) {
            self.out.acked.push(n);
            if after_kill {
                self.shared
                    .first_ack
                    .lock()
                    .expect("ack lock")
                    .get_or_insert_with(Instant::now);
            }
        }
    }

    fn on_error(&mut self, text: &str) {
        let n = reply_number(text);
        let retry_again = [r#""code":"unavailable""#, r#""code":"rate_limited""#]
            .iter()
            .any(|code| text.contains(code));
        if let (true, Some(n)) = (retry_again, n) {
            self.retry.push(n);
            // Not applied (the cluster is failing over, or too fast): send it again later.
            let wait = text
                .find(r#""retry_after_ms":"#)
                .and_then(|at| leading_u64(&text[at + r#""retry_after_ms":"#.len()..]))
                .unwrap_or(500);
            self.retry_at
                .get_or_insert(Instant::now() + Duration::from_millis(wait.min(5000)));
        } else {
            if let Some(n) = n {
                self.pending.remove(&n);
            }
            self.shared.errors.add(format!("{WHO}: {text}"));
        }
    }
}

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
