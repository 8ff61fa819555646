//! A session's mailbox: direct replies (acks, errors), its direct lane of sequenced events, and its close signal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

pub use convene_signaling::CloseReason;

use convene_core::wire::{Envelope, Frame};

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
    /// This person's direct lane: sequenced events addressed to them alone.
    events: Mutex<VecDeque<Arc<Envelope>>>,
    events_ready: Notify,
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
        events: Mutex::new(VecDeque::new()),
        events_ready: Notify::new(),
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

/// The writer's end of the direct lane, read by its `EventStream`.
#[derive(Clone)]
pub struct DirectLane {
    mailbox: Arc<Mailbox>,
}

impl Frames {
    pub fn direct_lane(&self) -> DirectLane {
        DirectLane {
            mailbox: self.mailbox.clone(),
        }
    }
}

impl DirectLane {
    /// The `seq` of the oldest waiting event, dropping any at or below `delivered`.
    pub fn front_after(&self, delivered: u64) -> Option<u64> {
        let mut events = self.mailbox.events.lock().expect("mailbox lock");
        while events.front().is_some_and(|e| e.seq <= delivered) {
            events.pop_front();
        }
        events.front().map(|e| e.seq)
    }

    pub fn pop(&self) -> Option<Arc<Envelope>> {
        self.mailbox
            .events
            .lock()
            .expect("mailbox lock")
            .pop_front()
    }

    /// Resolves when an event is queued (a permit is kept if none is waiting).
    pub async fn ready(&self) {
        self.mailbox.events_ready.notified().await
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

    /// Queues an event on this session's direct lane; a full lane closes the session.
    pub fn send_event(&self, event: Arc<Envelope>) {
        if !self.mailbox.open.load(Ordering::Acquire) {
            return;
        }
        let full = {
            let mut events = self.mailbox.events.lock().expect("mailbox lock");
            let full = events.len() >= self.mailbox.capacity;
            if !full {
                events.push_back(event);
            }
            full
        };
        if full {
            self.close(CloseReason::SLOW);
        } else {
            self.mailbox.events_ready.notify_one();
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
