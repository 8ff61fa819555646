//! This node's copy of a room's events: puts what the owner appends onto the node's lanes in `seq` order, reading back from the event stream what pub/sub lost.

use std::sync::Arc;
use std::time::Duration;

use convene_signaling::CloseReason;
use serde::Deserialize;

use super::REPAIR_BATCH;
use crate::cluster::follower::{Follower, Read};
use crate::cluster::{store, Cluster};
use convene_core::wire::{Envelope, RoomOutput};

/// A batch of events as the owner publishes it.
#[derive(Deserialize)]
struct EventBatch {
    /// Unix microseconds at the owner's append.
    t: u64,
    e: Vec<Envelope>,
}

/// The published form of a batch of events, each already serialised.
pub(super) fn event_batch<'a>(events: impl Iterator<Item = &'a str>) -> String {
    format!(
        "{{\"t\":{},\"e\":[{}]}}",
        crate::auth::unix_now_us(),
        events.collect::<Vec<_>>().join(",")
    )
}

pub(super) struct Sequencer {
    room: String,
    /// Placed where the stream was when the link subscribed.
    events: Follower<Arc<Envelope>>,
}

impl Sequencer {
    pub(super) fn new(room: &str) -> Sequencer {
        Sequencer {
            room: room.to_string(),
            events: Follower::unplaced(),
        }
    }

    pub(super) fn knows_position(&self) -> bool {
        self.events.is_placed()
    }

    /// Events after the stream's present end are this node's to deliver.
    pub(super) async fn learn_position(&mut self, cluster: &Cluster) {
        match cluster
            .store()
            .last_number(&store::events_key(&self.room))
            .await
        {
            Ok(last) => self.events.place(last + 1),
            Err(error) => {
                cluster.mark_unhealthy();
                tracing::warn!(room = %self.room, %error, "cannot read the room's event stream yet");
            }
        }
    }

    /// The stream may count from 1 again (a new era): its position is read anew.
    pub(super) async fn relearn_position(&mut self, cluster: &Cluster) {
        self.events.unplace();
        self.learn_position(cluster).await;
    }

    /// A batch the owner published.
    pub(super) async fn on_published(&mut self, cluster: &Cluster, payload: &str) {
        match serde_json::from_str::<EventBatch>(payload) {
            Ok(batch) => {
                let sent = batch.t;
                for envelope in batch.e {
                    self.events.offer(envelope.seq, Arc::new(envelope));
                }
                let now = crate::auth::unix_now_us();
                crate::metrics::observe_cluster_bus(Duration::from_micros(
                    now.saturating_sub(sent),
                ));
                self.deliver(cluster).await;
            }
            Err(error) => tracing::warn!(room = %self.room, %error, "unreadable event batch"),
        }
    }

    /// Events this node appended as the owner: they need no trip through pub/sub.
    pub(super) fn on_appended(&mut self, cluster: &Cluster, events: Vec<Arc<Envelope>>) {
        for envelope in events {
            self.events.offer(envelope.seq, envelope);
        }
        self.push_ready(cluster);
    }

    /// Pushes ready events onto this node's lanes; reads a gap back from the stream.
    async fn deliver(&mut self, cluster: &Cluster) {
        self.push_ready(cluster);
        if let Some(gap) = self.events.gap() {
            self.repair(cluster, Some(gap)).await;
        }
    }

    fn push_ready(&mut self, cluster: &Cluster) {
        let hub = cluster.hub();
        for (_, envelope) in self.events.ready() {
            hub.deliver(&self.room, RoomOutput::Publish(envelope));
        }
    }

    /// Reads the stream's end: pub/sub may have lost a last message with nothing after it.
    pub(super) async fn check_tail(&mut self, cluster: &Cluster) {
        if !self.events.is_placed() {
            return;
        }
        if let Ok(last) = cluster
            .store()
            .last_number(&store::events_key(&self.room))
            .await
        {
            if let Some(rest) = self.events.behind(last) {
                self.repair(cluster, Some(rest)).await;
            }
        }
    }

    /// Reads missed events from the stream (`None`: whatever follows the last delivered).
    pub(super) async fn repair(&mut self, cluster: &Cluster, read: Option<Read>) {
        if !self.events.is_placed() {
            self.learn_position(cluster).await;
            return;
        }
        let key = store::events_key(&self.room);
        let mut read = read.unwrap_or_else(|| self.events.rest());
        loop {
            let entries = match cluster
                .store()
                .range(&key, read.from, read.to, REPAIR_BATCH)
                .await
            {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(room = %self.room, %error, "event repair failed; retrying later");
                    return;
                }
            };
            let took = self.events.take(read, entries, REPAIR_BATCH, |json| {
                serde_json::from_str::<Envelope>(&json).ok().map(Arc::new)
            });
            if took.count == 0 {
                break;
            }
            if let Some(oldest) = took.trimmed_to {
                // The stream no longer holds what this node missed: its sessions start over.
                tracing::warn!(room = %self.room, missing_from = read.from, oldest, "events missed here were trimmed; sessions resume");
                cluster
                    .hub()
                    .close_room(&self.room, CloseReason::RESTARTING);
                let last = cluster.store().last_number(&key).await.unwrap_or(oldest);
                self.events.place(last + 1);
                return;
            }
            crate::metrics::cluster_gap_repaired();
            self.push_ready(cluster);
            match took.more {
                Some(more) => read = more,
                None => break,
            }
        }
    }
}
