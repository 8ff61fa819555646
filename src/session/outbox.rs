//! A session's direct mailbox (acks, errors, welcome) and its close signal, shared with the room actor.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::bus::Frame;

/// Why the server closes a socket, as a WebSocket close code and reason. One mapping for the whole server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    pub const GOING_AWAY: CloseReason = CloseReason {
        code: 1001,
        reason: "going away",
    };
    pub const POLICY: CloseReason = CloseReason {
        code: 1008,
        reason: "too many refused messages",
    };
    pub const TOO_BIG: CloseReason = CloseReason {
        code: 1009,
        reason: "message too big",
    };
    pub const RESTARTING: CloseReason = CloseReason {
        code: 1012,
        reason: "server restarting",
    };
    /// Fell behind the room's events; the client may resume.
    pub const SLOW: CloseReason = CloseReason {
        code: 1013,
        reason: "too slow reading events; resume",
    };
    pub const IDLE: CloseReason = CloseReason {
        code: 4000,
        reason: "idle timeout",
    };
    pub const REMOVED: CloseReason = CloseReason {
        code: 4001,
        reason: "removed from the room",
    };
    pub const REPLACED: CloseReason = CloseReason {
        code: 4002,
        reason: "session resumed elsewhere",
    };
}

/// The sending half of a session: bounded, never awaited. A full mailbox closes that session only.
#[derive(Clone, Debug)]
pub struct Outbox {
    frames: mpsc::Sender<Frame>,
    close: Arc<watch::Sender<Option<CloseReason>>>,
}

/// The receiving half, owned by the session's writer.
pub struct Inbox {
    pub frames: mpsc::Receiver<Frame>,
    pub close: watch::Receiver<Option<CloseReason>>,
}

pub fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let (frames_tx, frames_rx) = mpsc::channel(capacity.max(1));
    let (close_tx, close_rx) = watch::channel(None);
    (
        Outbox {
            frames: frames_tx,
            close: Arc::new(close_tx),
        },
        Inbox {
            frames: frames_rx,
            close: close_rx,
        },
    )
}

impl Outbox {
    /// Queues a frame; a full queue means the reader is too slow, so the session is closed.
    pub fn send(&self, frame: Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.frames.try_send(frame) {
            self.close(CloseReason::SLOW);
        }
    }

    /// Asks the session to close; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        self.close.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }

    /// Resolves once a close has been asked for (by anyone holding this outbox).
    pub async fn closing(&self) {
        let mut signal = self.close.subscribe();
        let _ = signal.wait_for(|reason| reason.is_some()).await;
    }
}
