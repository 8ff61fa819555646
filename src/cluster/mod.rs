//! The cluster: nodes sharing rooms through Redis. Each room has one owner (a fenced lease); inputs reach it through a stream, its events reach every node through another.
//!
//! Every node with sessions in a room runs a [`link`] for it: the room's `RoomHandle` on
//! that node. The link records the room's inputs (joins, commands, closes) in the room's
//! input stream, feeds the events the owner appends to this node's lanes in `seq` order
//! (repairing pub/sub's losses from the event stream), and takes the room over when its
//! owner's lease lapses, rebuilding it from the last snapshot and the inputs after it.
//! This module holds what links share: Redis, the pub/sub router, pending calls, and the
//! node registry.

mod bounds;
mod follower;
mod link;
pub mod protocol;
mod redis_url;
pub mod relay;
pub mod store;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use bounds::NodeBudget;
pub use bounds::{Bounds, Refusal};
use convene_core::room::actor::{ActorConfig, Clock, Reply, RoomHandle};
use convene_core::wire::{RoomOutput, SessionSink};
use follower::{Follower, Read};
use protocol::{close_reason, NodeMessage};
pub use redis_url::{redacted, without_password};
use store::Store;
pub use store::StoreError;

/// How often a node announces itself; its entry lapses after three missed beats.
const HEARTBEAT: Duration = Duration::from_millis(500);
const NODE_TTL_MS: u64 = 2000;
/// What sessions are told to wait while Redis is away.
pub const RETRY_AFTER_MS: u64 = 1000;
/// Inbox entries read per repair call.
const INBOX_REPAIR_BATCH: usize = 10_000;
/// Batches headed by `NodeMessage::Once` remembered to open each once: far more than are
/// resent within `call_timeout_ms` (about 40 bytes each).
const ONCE_REMEMBERED: usize = 16_384;

/// A live node as the registry shows it (`GET /api/v1/nodes`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NodeInfo {
    pub id: String,
    /// Advertised HTTP base URL (WHIP/WHEP redirects point here).
    pub http: String,
    /// Advertised media address (UDP), if the SFU runs.
    pub rtc: Option<String>,
    pub sessions: usize,
    pub rooms_owned: Vec<String>,
    /// Sessions over the node's limit, 0..1.
    pub load: f64,
    /// Milliseconds since its last heartbeat, as seen when listed.
    pub heartbeat_ms_ago: u64,
    /// Unix milliseconds of the heartbeat.
    #[serde(default)]
    pub heartbeat_at: u64,
}

/// Where a room's owner is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    Here,
    /// Another node, by its advertised HTTP base.
    Elsewhere(String),
    /// No live owner (yet).
    Nobody,
}

/// What a node needs to join a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub redis_url: String,
    pub node_id: String,
    pub lease_ms: u64,
    pub snapshot_every: u64,
    pub call_timeout: Duration,
    pub http: String,
    pub rtc: Option<String>,
    pub max_sessions: usize,
    pub bounds: Bounds,
}

/// The last resendable batches opened (by sender and number), oldest first.
#[derive(Default)]
struct OpenedOnce {
    seen: HashSet<(String, u64)>,
    order: VecDeque<(String, u64)>,
}

impl OpenedOnce {
    /// Whether this batch is new (then remembered, forgetting the oldest past `keep`).
    fn first_time(&mut self, from: String, batch: u64, keep: usize) -> bool {
        if !self.seen.insert((from.clone(), batch)) {
            return false;
        }
        self.order.push_back((from, batch));
        if self.order.len() > keep {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        true
    }
}

/// A pub/sub message for a link.
pub(crate) enum LinkMessage {
    Events(String),
    Inputs(String),
    /// Pub/sub reconnected (or the era changed): messages may have been lost; repair.
    Resubscribed,
}

/// What reaches a node's inbox reader.
enum InboxMessage {
    /// A numbered message from pub/sub.
    Numbered(u64, String),
    /// Pub/sub reconnected: read what it may have lost.
    Repair,
    /// Redis lost its data: numbering starts again at 1.
    NewEra,
}

/// How far this node told senders it has read its inbox, and the bytes read since.
#[derive(Default)]
struct ReadPosition {
    recorded: u64,
    unrecorded: usize,
}

enum Subscription {
    Add(String, oneshot::Sender<()>),
    Remove(String),
}

/// The cluster as one node sees it. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ClusterSettings,
    store: Store,
    hub: Arc<dyn SessionSink>,
    clock: Clock,
    actor: ActorConfig,
    /// Redis answered the last heartbeat.
    healthy: AtomicBool,
    routes: Mutex<HashMap<String, mpsc::UnboundedSender<LinkMessage>>>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    inbox: mpsc::UnboundedSender<InboxMessage>,
    calls: Mutex<HashMap<u64, (Reply, tokio::time::Instant)>>,
    next_call: AtomicU64,
    nodes: Mutex<Vec<NodeInfo>>,
    /// Nodes absent from the registry, since when (while Redis answered).
    missing: Mutex<HashMap<String, tokio::time::Instant>>,
    owned: Mutex<BTreeSet<String>>,
    sessions: Arc<std::sync::atomic::AtomicUsize>,
    /// Bumps when this node must let its sessions go (presumed dead, or Redis lost its data).
    restart: watch::Sender<u64>,
    /// Relayed sessions' media, when this node runs an SFU.
    relayed: std::sync::OnceLock<Arc<relay::RelayedMedia>>,
    budget: Mutex<NodeBudget>,
    /// Numbers this node's resendable batches.
    next_batch: AtomicU64,
    /// Resendable batches already opened here.
    opened: Mutex<OpenedOnce>,
    shutdown: watch::Sender<bool>,
}

/// In a cluster every room of this node is a link to the room's owner.
impl convene_core::room::registry::RoomStarter for Cluster {
    fn start(&self, room: &str, on_exit: convene_core::room::registry::OnExit) -> RoomHandle {
        self.link(room, on_exit)
    }
}

impl Cluster {
    /// Connects to Redis and starts the node's heartbeat and pub/sub router.
    pub async fn start(
        settings: ClusterSettings,
        hub: Arc<dyn SessionSink>,
        actor: ActorConfig,
        sessions: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Result<Cluster, StoreError> {
        // Every message is small and latency-bound: no Nagle delay on Redis's sockets.
        let info = redis::IntoConnectionInfo::into_connection_info(settings.redis_url.as_str())?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_response_timeout(Some(Duration::from_millis(1500)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| StoreError::Timeout)??;
        let (subscriptions, subscription_rx) = mpsc::unbounded_channel();
        let (inbox, inbox_rx) = mpsc::unbounded_channel();
        let cluster = Cluster {
            inner: Arc::new(Inner {
                store: Store::new(conn, settings.bounds.inbox),
                hub,
                clock: Clock::start(),
                actor,
                healthy: AtomicBool::new(true),
                routes: Mutex::new(HashMap::new()),
                subscriptions,
                inbox,
                calls: Mutex::new(HashMap::new()),
                // Random: a restarted node must not take an answer meant for its previous life.
                next_call: AtomicU64::new(rand::random::<u64>() >> 1),
                nodes: Mutex::new(Vec::new()),
                missing: Mutex::new(HashMap::new()),
                owned: Mutex::new(BTreeSet::new()),
                sessions,
                restart: watch::channel(0).0,
                relayed: std::sync::OnceLock::new(),
                budget: Mutex::new(NodeBudget {
                    messages: crate::bucket::TokenBucket::new(
                        settings.bounds.node_messages,
                        tokio::time::Instant::now(),
                    ),
                    bytes: crate::bucket::TokenBucket::new(
                        settings.bounds.node_bytes,
                        tokio::time::Instant::now(),
                    ),
                }),
                settings,
                // Random, as calls: a restarted node's batches are not its previous life's.
                next_batch: AtomicU64::new(rand::random::<u64>() >> 1),
                opened: Mutex::new(Default::default()),
                shutdown: watch::channel(false).0,
            }),
        };
        let era = uuid::Uuid::new_v4().to_string();
        let era = cluster.inner.store.era(&era).await?;
        // Messages to this node start after what its id was sent before (a restart).
        let inbox_last = cluster
            .inner
            .store
            .last_number(&store::node_inbox_key(cluster.node()))
            .await?;
        tokio::spawn(
            cluster
                .clone()
                .read_inbox(inbox_rx, Follower::new(inbox_last + 1)),
        );
        tokio::spawn(cluster.clone().route_pubsub(client, subscription_rx));
        tokio::spawn(cluster.clone().heartbeat(era));
        tracing::info!(node = %cluster.node(), "joined the cluster");
        Ok(cluster)
    }

    /// Runs media for sessions on other nodes whose rooms this node owns.
    pub fn host_media(&self, relayed: Arc<relay::RelayedMedia>) {
        let _ = self.inner.relayed.set(relayed);
    }

    /// Sends messages to a node's channel (delivered here directly when it is this node).
    pub(crate) async fn send_to_node(
        &self,
        node: &str,
        messages: Vec<NodeMessage>,
    ) -> Result<(), StoreError> {
        if node == self.node() {
            self.deliver(messages);
            return Ok(());
        }
        let payload = serde_json::to_string(&messages).expect("node messages serialise");
        self.inner.store.send(node, &payload).await
    }

    pub fn node(&self) -> &str {
        &self.inner.settings.node_id
    }

    /// Whether a session's message of `bytes` may go through Redis: under the size cap and
    /// the node's buckets (taken from them if so).
    pub(crate) fn admit(&self, bytes: usize) -> Result<(), Refusal> {
        let max = self.inner.settings.bounds.max_message_bytes;
        if bytes > max {
            return Err(Refusal::TooLarge { bytes, max });
        }
        let now = tokio::time::Instant::now();
        let mut budget = self.inner.budget.lock().expect("budget lock");
        let NodeBudget { messages, bytes: b } = &mut *budget;
        // Both or neither: a refused message costs nothing.
        let (saved_messages, saved_bytes) = (messages.clone(), b.clone());
        let taken = messages
            .take_n(1.0, now)
            .and_then(|()| b.take_n(bytes as f64, now));
        taken.map_err(|retry_after_ms| {
            (*messages, *b) = (saved_messages, saved_bytes);
            crate::metrics::rate_limited();
            Refusal::RateLimited { retry_after_ms }
        })
    }

    pub(crate) fn settings(&self) -> &ClusterSettings {
        &self.inner.settings
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn hub(&self) -> &Arc<dyn SessionSink> {
        &self.inner.hub
    }

    pub(crate) fn clock(&self) -> Clock {
        self.inner.clock
    }

    pub(crate) fn actor_config(&self) -> &ActorConfig {
        &self.inner.actor
    }

    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_unhealthy(&self) {
        self.inner.healthy.store(false, Ordering::Relaxed);
    }

    pub(crate) fn restarts(&self) -> watch::Receiver<u64> {
        self.inner.restart.subscribe()
    }

    pub(crate) fn shutting_down(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Starts the link that is this room's handle on this node.
    pub fn link(
        &self,
        room: &str,
        on_exit: impl FnOnce(&RoomHandle) + Send + 'static,
    ) -> RoomHandle {
        link::spawn(self.clone(), room, on_exit)
    }

    /// Routes a pub/sub channel to a link; returns once Redis confirmed the subscription.
    pub(crate) async fn subscribe(&self, channel: String, to: mpsc::UnboundedSender<LinkMessage>) {
        self.inner
            .routes
            .lock()
            .expect("routes lock")
            .insert(channel.clone(), to);
        let (done, confirmed) = oneshot::channel();
        if self
            .inner
            .subscriptions
            .send(Subscription::Add(channel, done))
            .is_ok()
        {
            // Without Redis this waits for the router's next connection; the link retries its reads.
            let _ = tokio::time::timeout(Duration::from_secs(2), confirmed).await;
        }
    }

    pub(crate) fn unsubscribe(&self, channel: &str) {
        self.inner
            .routes
            .lock()
            .expect("routes lock")
            .remove(channel);
        let _ = self
            .inner
            .subscriptions
            .send(Subscription::Remove(channel.to_string()));
    }

    /// Remembers a call until its answer comes (or it times out).
    pub(crate) fn expect_answer(&self, call: Reply) -> u64 {
        let id = self.inner.next_call.fetch_add(1, Ordering::Relaxed);
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .insert(id, (call, tokio::time::Instant::now()));
        id
    }

    /// A call that was never recorded: answer it at once.
    pub(crate) fn abandon_call(&self, id: u64) -> Option<Reply> {
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .remove(&id)
            .map(|(call, _)| call)
    }

    pub(crate) fn set_owned(&self, room: &str, owned: bool) {
        let mut rooms = self.inner.owned.lock().expect("owned lock");
        if owned {
            rooms.insert(room.to_string());
        } else {
            rooms.remove(room);
        }
    }

    /// Live nodes as of the last heartbeat.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let now = crate::auth::unix_now_ms();
        let mut nodes = self.inner.nodes.lock().expect("nodes lock").clone();
        for node in &mut nodes {
            node.heartbeat_ms_ago = now.saturating_sub(node.heartbeat_at);
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    /// Whether a node has been missing from the registry for longer than its entry lives
    /// (counted only while Redis answers, so an outage kills nobody).
    pub(crate) fn is_gone(&self, node: &str) -> bool {
        if !self.healthy() {
            return false;
        }
        let listed = {
            let nodes = self.inner.nodes.lock().expect("nodes lock");
            nodes.iter().any(|n| n.id == node)
        };
        let mut missing = self.inner.missing.lock().expect("missing lock");
        if listed {
            missing.remove(node);
            return false;
        }
        let since = *missing
            .entry(node.to_string())
            .or_insert_with(tokio::time::Instant::now);
        since.elapsed() >= Duration::from_millis(NODE_TTL_MS)
    }

    /// Who owns the room now.
    pub async fn owner_of(&self, room: &str) -> Result<Ownership, StoreError> {
        let Some((owner, _)) = self.inner.store.owner(room).await? else {
            return Ok(Ownership::Nobody);
        };
        if owner == self.node() {
            return Ok(Ownership::Here);
        }
        Ok(self
            .nodes()
            .into_iter()
            .find(|n| n.id == owner)
            .map_or(Ownership::Nobody, |n| Ownership::Elsewhere(n.http)))
    }

    /// Hands owned rooms back at once (after a snapshot), so others take them without waiting.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !self.inner.owned.lock().expect("owned lock").is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn heartbeat(self, mut era: String) {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beat.tick().await;
            self.expire_calls();
            let settings = &self.inner.settings;
            let sessions = self.inner.sessions.load(Ordering::Relaxed);
            let info = NodeInfo {
                id: settings.node_id.clone(),
                http: settings.http.clone(),
                rtc: settings.rtc.clone(),
                sessions,
                rooms_owned: self
                    .inner
                    .owned
                    .lock()
                    .expect("owned lock")
                    .iter()
                    .cloned()
                    .collect(),
                load: sessions as f64 / settings.max_sessions.max(1) as f64,
                heartbeat_ms_ago: 0,
                heartbeat_at: crate::auth::unix_now_ms(),
            };
            let info = serde_json::to_string(&info).expect("node info serialises");
            let store = &self.inner.store;
            let beat = async {
                let gone = store
                    .heartbeat(&settings.node_id, &info, NODE_TTL_MS)
                    .await?;
                let current = store.era(&uuid::Uuid::new_v4().to_string()).await?;
                let nodes = store.nodes().await?;
                Ok::<_, StoreError>((gone, current, nodes))
            };
            match beat.await {
                Ok((gone, current, nodes)) => {
                    if !self.inner.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!("redis is reachable again");
                        crate::metrics::cluster_redis_reconnected();
                        // Every registration lapsed with Redis: give nodes a beat to return.
                        self.inner.missing.lock().expect("missing lock").clear();
                    }
                    let nodes: Vec<NodeInfo> = nodes
                        .iter()
                        .filter_map(|n| serde_json::from_str(n).ok())
                        .collect();
                    *self.inner.nodes.lock().expect("nodes lock") = nodes;
                    if current != era {
                        tracing::warn!(
                            "redis lost the cluster's data (a new era): sessions here start over"
                        );
                        era = current;
                        let _ = self.inner.inbox.send(InboxMessage::NewEra);
                        self.inner.restart.send_modify(|n| *n += 1);
                    } else if gone {
                        tracing::warn!(
                            "an owner let this node's sessions go (it was presumed dead): they start over"
                        );
                        self.inner.restart.send_modify(|n| *n += 1);
                    }
                }
                Err(error) => {
                    if self.inner.healthy.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%error, "redis is unreachable: commands are refused as unavailable");
                    }
                }
            }
        }
    }

    fn expire_calls(&self) {
        let timeout = self.inner.settings.call_timeout;
        let now = tokio::time::Instant::now();
        // Dropping a call's sender tells its caller the room is unreachable.
        self.inner
            .calls
            .lock()
            .expect("calls lock")
            .retain(|_, (_, at)| now.duration_since(*at) < timeout);
    }

    /// Runs the node's pub/sub connection: reconnects, resubscribes and tells links to repair.
    async fn route_pubsub(
        self,
        client: redis::Client,
        mut changes: mpsc::UnboundedReceiver<Subscription>,
    ) {
        let own = store::node_channel(self.node());
        let mut connected_before = false;
        loop {
            let pubsub =
                match tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub()).await
                {
                    Ok(Ok(pubsub)) => pubsub,
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
            let (mut sink, mut stream) = pubsub.split();
            let channels: Vec<String> = {
                let routes = self.inner.routes.lock().expect("routes lock");
                routes.keys().cloned().collect()
            };
            let mut ok = sink.subscribe(&own).await.is_ok();
            for channel in &channels {
                ok = ok && sink.subscribe(channel).await.is_ok();
            }
            if !ok {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if connected_before {
                tracing::info!("pub/sub reconnected; links repair what they missed");
                crate::metrics::cluster_pubsub_reconnected();
                let _ = self.inner.inbox.send(InboxMessage::Repair);
                let routes = self.inner.routes.lock().expect("routes lock");
                for link in routes.values() {
                    let _ = link.send(LinkMessage::Resubscribed);
                }
            }
            connected_before = true;
            loop {
                tokio::select! {
                    message = stream.next() => {
                        let Some(message) = message else { break };
                        let channel = message.get_channel_name().to_string();
                        let Ok(payload) = message.get_payload::<String>() else { continue };
                        self.dispatch(&own, &channel, payload);
                    }
                    change = changes.recv() => match change {
                        Some(Subscription::Add(channel, done)) => {
                            if sink.subscribe(&channel).await.is_err() {
                                break;
                            }
                            let _ = done.send(());
                        }
                        Some(Subscription::Remove(channel)) => {
                            let _ = sink.unsubscribe(&channel).await;
                        }
                        None => return,
                    },
                }
            }
            tracing::warn!("pub/sub connection lost; reconnecting");
        }
    }

    fn dispatch(&self, own: &str, channel: &str, payload: String) {
        if channel == own {
            match payload
                .split_once(' ')
                .and_then(|(n, rest)| Some((n.parse().ok()?, rest)))
            {
                Some((n, rest)) => {
                    let _ = self
                        .inner
                        .inbox
                        .send(InboxMessage::Numbered(n, rest.to_string()));
                }
                None => tracing::warn!("unnumbered node message"),
            }
            return;
        }
        let routes = self.inner.routes.lock().expect("routes lock");
        let Some(link) = routes.get(channel) else {
            return;
        };
        let message = if channel.starts_with("convene:ev:") {
            LinkMessage::Events(payload)
        } else {
            LinkMessage::Inputs(payload)
        };
        let _ = link.send(message);
    }

    /// Reads this node's inbox in order: from pub/sub, with gaps read back from the stream.
    async fn read_inbox(
        self,
        mut messages: mpsc::UnboundedReceiver<InboxMessage>,
        mut inbox: Follower<String>,
    ) {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut position = ReadPosition::default();
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Some(InboxMessage::Numbered(n, payload)) => {
                        inbox.offer(n, payload);
                        position.unrecorded += self.open_ready(&mut inbox);
                        if let Some(gap) = inbox.gap() {
                            position.unrecorded += self.repair_inbox(&mut inbox, gap).await;
                        }
                    }
                    Some(InboxMessage::Repair) => {
                        let rest = inbox.rest();
                        position.unrecorded += self.repair_inbox(&mut inbox, rest).await;
                    }
                    Some(InboxMessage::NewEra) => {
                        inbox.place(1);
                        position = ReadPosition::default();
                        let rest = inbox.rest();
                        position.unrecorded += self.repair_inbox(&mut inbox, rest).await;
                    }
                    None => return,
                },
                _ = check.tick() => {
                    if !self.healthy() {
                        continue;
                    }
                    let key = store::node_inbox_key(self.node());
                    if let Ok(last) = self.inner.store.last_number(&key).await {
                        if let Some(rest) = inbox.behind(last) {
                            position.unrecorded += self.repair_inbox(&mut inbox, rest).await;
                        }
                    }
                    self.record_read(&inbox, &mut position, true).await;
                    continue;
                }
            }
            self.record_read(&inbox, &mut position, false).await;
        }
    }

    /// Tells senders how far this node has read its inbox (what they may drop to make room):
    /// once a quarter of the byte budget was read since the last time, and on each periodic
    /// check; one Redis call per batch, never per message.
    async fn record_read(&self, inbox: &Follower<String>, position: &mut ReadPosition, tick: bool) {
        let read = inbox.next().saturating_sub(1);
        let quarter = self.inner.store.inbox_bounds().bytes / 4;
        // Each check refreshes it (it lapses with the inbox); between checks, only progress.
        let due = tick || (read > position.recorded && position.unrecorded >= quarter.max(1));
        if read == 0 || !due {
            return;
        }
        if self
            .inner
            .store
            .record_read(self.node(), read)
            .await
            .is_ok()
        {
            *position = ReadPosition {
                recorded: read,
                unrecorded: 0,
            };
        }
    }

    /// Opens the messages ready in order; the bytes they took in the inbox.
    fn open_ready(&self, inbox: &mut Follower<String>) -> usize {
        let mut bytes = 0;
        for (_, payload) in inbox.ready() {
            bytes += payload.len();
            match serde_json::from_str::<Vec<NodeMessage>>(&payload) {
                Ok(messages) => self.deliver(messages),
                Err(error) => tracing::warn!(%error, "unreadable node message"),
            }
        }
        bytes
    }

    /// Reads a gap back from the inbox stream; the bytes of what it opened.
    async fn repair_inbox(&self, inbox: &mut Follower<String>, mut read: Read) -> usize {
        let key = store::node_inbox_key(self.node());
        let mut bytes = 0;
        loop {
            let Ok(entries) = self
                .inner
                .store
                .range(&key, read.from, read.to, INBOX_REPAIR_BATCH)
                .await
            else {
                return bytes;
            };
            let took = inbox.take(read, entries, INBOX_REPAIR_BATCH, Some);
            if let Some(first) = took.trimmed_to {
                tracing::warn!(
                    from = read.from,
                    first,
                    "messages to this node were trimmed before they were read"
                );
                inbox.skip_to(first);
            }
            if took.count > 0 {
                crate::metrics::cluster_gap_repaired();
            }
            bytes += self.open_ready(inbox);
            match took.more {
                Some(more) => read = more,
                None => return bytes,
            }
        }
    }

    /// A `NodeMessage::Once` for a batch this node may send again.
    pub(crate) fn once(&self) -> NodeMessage {
        NodeMessage::Once {
            from: self.node().to_string(),
            batch: self.inner.next_batch.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether a resendable batch arrives for the first time (and remembers it).
    fn first_time(&self, from: String, batch: u64) -> bool {
        let mut opened = self.inner.opened.lock().expect("opened lock");
        opened.first_time(from, batch, ONCE_REMEMBERED)
    }

    /// The owner's messages about this node's sessions.
    pub(crate) fn deliver(&self, messages: Vec<NodeMessage>) {
        for message in messages {
            match message {
                NodeMessage::Reply { to, frame } => {
                    self.inner.hub.deliver("", RoomOutput::Reply { to, frame })
                }
                NodeMessage::Close { to, code } => self.inner.hub.deliver(
                    "",
                    RoomOutput::Close {
                        to,
                        reason: close_reason(code),
                    },
                ),
                NodeMessage::Call { id, result } => {
                    if let Some(call) = self.abandon_call(id) {
                        protocol::complete(call, result);
                    }
                }
                NodeMessage::Media(message) => match self.inner.relayed.get() {
                    Some(relayed) => relayed.receive(message),
                    None => tracing::warn!("relayed media for a node without an SFU"),
                },
                // A batch sent again: the rest of it was delivered the first time.
                NodeMessage::Once { from, batch } => {
                    if !self.first_time(from, batch) {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OpenedOnce;

    #[test]
    fn a_resent_batch_opens_once_and_memory_stays_bounded() {
        let mut opened = OpenedOnce::default();
        assert!(opened.first_time("n1".into(), 7, 2));
        assert!(
            !opened.first_time("n1".into(), 7, 2),
            "resent: not opened again"
        );
        assert!(opened.first_time("n2".into(), 7, 2), "another sender's 7");
        assert!(opened.first_time("n1".into(), 8, 2));
        assert_eq!(opened.seen.len(), 2);
        assert_eq!(opened.order.len(), 2);
    }
}
