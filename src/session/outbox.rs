//! A session's direct mailbox (acks, errors, welcome) and its close signal, shared with the room actor.

use std::sync::Arc;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::{watch, Notify};

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
    mailbox: Arc<Mailbox>,
    close: Arc<watch::Sender<Option<CloseReason>>>,
}

/// Direct frames waiting for the writer. A plain queue that allocates only when used: most
/// of a webcast audience never gets a direct frame after `welcome`, and idle sessions should
/// cost little (a channel would allocate a block of slots per session up front).
#[derive(Debug)]
struct Mailbox {
    frames: Mutex<VecDeque<Frame>>,
    ready: Notify,
    capacity: usize,
    /// The writer's `Inbox` still exists.
    open: AtomicBool,
}

/// The receiving half, owned by the session's writer.
pub struct Inbox {
    pub frames: Frames,
    pub close: watch::Receiver<Option<CloseReason>>,
}

/// The writer's end of the mailbox.
pub struct Frames {
    mailbox: Arc<Mailbox>,
}

pub fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let mailbox = Arc::new(Mailbox {
        frames: Mutex::new(VecDeque::new()),
        ready: Notify::new(),
        capacity: capacity.max(1),
        open: AtomicBool::new(true),
    });
    let (close_tx, close_rx) = watch::channel(None);
    (
        Outbox {
            mailbox: mailbox.clone(),
            close: Arc::new(close_tx),
        },
        Inbox {
            frames: Frames { mailbox },
            close: close_rx,
        },
    )
}

impl Frames {
    /// The next direct frame, waiting for one.
    pub async fn recv(&self) -> Frame {
        loop {
            if let Some(frame) = self.try_recv() {
                return frame;
            }
            // A send between the check and this wait leaves a permit: no wake-up is lost.
            self.mailbox.ready.notified().await;
        }
    }

    pub fn try_recv(&self) -> Option<Frame> {
        self.mailbox
            .frames
            .lock()
            .expect("mailbox lock")
            .pop_front()
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.mailbox.open.store(false, Ordering::Release);
    }
}

impl Outbox {
    /// Queues a frame; a full queue means the reader is too slow, so the session is closed.
    pub fn send(&self, frame: Frame) {
        if !self.mailbox.open.load(Ordering::Acquire) {
            return;
        }
        let full = {
            let mut frames = self.mailbox.frames.lock().expect("mailbox lock");
            let full = frames.len() >= self.mailbox.capacity;
            if !full {
                frames.push_back(frame);
            }
            full
        };
        if full {
            self.close(CloseReason::SLOW);
        } else {
            self.mailbox.ready.notify_one();
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

    /// The session's writer is gone.
    pub fn is_closed(&self) -> bool {
        !self.mailbox.open.load(Ordering::Acquire)
    }

    /// Resolves once a close has been asked for (by anyone holding this outbox).
    pub async fn closing(&self) {
        let mut signal = self.close.subscribe();
        let _ = signal.wait_for(|reason| reason.is_some()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_arrive_in_order_and_a_full_mailbox_closes_the_session() {
        let (outbox, inbox) = outbox(2);
        outbox.send(Frame::from("a"));
        outbox.send(Frame::from("b"));
        assert!(inbox.close.borrow().is_none());
        outbox.send(Frame::from("c"));
        assert_eq!(*inbox.close.borrow(), Some(CloseReason::SLOW));
        assert_eq!(inbox.frames.recv().await.as_str(), "a");
        assert_eq!(inbox.frames.try_recv().unwrap().as_str(), "b");
        assert!(inbox.frames.try_recv().is_none());
        // A frame sent while the writer waits wakes it.
        let waiter = tokio::spawn(async move { inbox.frames.recv().await });
        tokio::task::yield_now().await;
        outbox.send(Frame::from("d"));
        assert_eq!(waiter.await.unwrap().as_str(), "d");
        assert!(outbox.is_closed(), "the inbox was dropped with its task");
    }
}
