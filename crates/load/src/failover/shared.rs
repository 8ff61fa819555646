//! What the failover run's sessions share: the kill's moment, the counters of dropped and returned sessions, and the reconnect that resumes on the next node.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;
use std::time::Duration;

use convene_signaling::Role;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::chat::client::{hello, open, Endpoint, Hello, Session, Ws};
use crate::chat::samples::Errors;
use crate::chat::Target;

/// Pause after a round of failed reconnects over every node.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

pub(super) struct Shared {
    pub(super) ep: Endpoint,
    pub(super) gate: Semaphore,
    pub(super) stop: watch::Receiver<bool>,
    /// The moment of the kill, once it happened.
    pub(super) killed: Mutex<Option<Instant>>,
    /// The first ack of a command sent after the kill.
    pub(super) first_ack: Mutex<Option<Instant>>,
    /// Set at the kill: sessions that drop from now on count as dropped by it.
    pub(super) armed: AtomicBool,
    pub(super) connected: AtomicU64,
    pub(super) settled: AtomicU64,
    pub(super) dropped: AtomicU64,
    /// Dropped sessions that are back, or gave up.
    pub(super) back: AtomicU64,
    /// Reconnects give up at this instant (the kill plus `--timeout`).
    pub(super) deadline: Mutex<Option<Instant>>,
    pub(super) errors: Errors,
}

impl Shared {
    pub(super) fn new(ep: Endpoint, concurrency: usize, stop: watch::Receiver<bool>) -> Shared {
        Shared {
            ep,
            gate: Semaphore::new(concurrency),
            stop,
            killed: Mutex::new(None),
            first_ack: Mutex::new(None),
            armed: AtomicBool::new(false),
            connected: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            back: AtomicU64::new(0),
            deadline: Mutex::new(None),
            errors: Errors::default(),
        }
    }
}

/// Reconnects with resume, trying each node after `from` in turn until one answers or time runs out.
pub(super) async fn reconnect(
    shared: &Shared,
    from: usize,
    who: &str,
    role: Role,
    session: &Session,
) -> Option<(Ws, Session, Hello, usize)> {
    let n = shared.ep.nodes();
    let limit = shared
        .deadline
        .lock()
        .expect("deadline lock")
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
    let mut last = String::new();
    for k in 1.. {
        let node = (from + k) % n;
        let mut next = session.clone();
        match open(&shared.ep.url(node, who, role, Some(session))).await {
            Ok(mut ws) => match hello(&mut ws, Target::Convene, &mut next).await {
                Ok(h) => return Some((ws, next, h, node)),
                Err(error) => last = error,
            },
            Err(error) => last = error,
        }
        if Instant::now() >= limit {
            break;
        }
        if k % n == 0 {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    shared.errors.add(format!("{who}: reconnect: {last}"));
    None
}
