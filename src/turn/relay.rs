//! The embedded TURN relay's allocations: one UDP relay socket each, permissions and channels that may name only the SFU's own media addresses, quotas, and lifetimes capped by the credential's expiry.
//!
//! This is where the relay stays a relay to the SFU and nothing else: a peer address that
//! is not one of the SFU's advertised `ip:port` media addresses is refused (403) in
//! CreatePermission and ChannelBind, dropped in Send and ChannelData, and datagrams from
//! anyone else to a relay socket are dropped.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::stun::{self, Builder, Class, Message};

/// RFC 8656: allocations default to 10 minutes, permissions last 5, channels 10.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Larger than any datagram the SFU sends (it keeps under the path MTU).
const RELAY_BUFFER: usize = 4096;

/// The relay's limits (`rtc.turn.embedded` in the configuration).
#[derive(Debug, Clone)]
pub struct TurnLimits {
    pub max_allocations: usize,
    pub max_allocations_per_identity: usize,
    pub max_lifetime: Duration,
}

/// Who sent a request: a UDP source address, or one TCP/TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Udp(SocketAddr),
    Stream(u64),
}

/// How to reach a client: never waits (a full queue or socket drops the message, as UDP would).
#[derive(Debug, Clone)]
pub enum ClientLink {
    Udp(Arc<UdpSocket>, SocketAddr),
    Stream(mpsc::Sender<Vec<u8>>),
}

impl ClientLink {
    pub fn send(&self, bytes: Vec<u8>) {
        match self {
            ClientLink::Udp(socket, to) => {
                let _ = socket.try_send_to(&bytes, *to);
            }
            ClientLink::Stream(tx) => {
                let _ = tx.try_send(bytes);
            }
        }
    }

    fn stream(&self) -> bool {
        matches!(self, ClientLink::Stream(_))
    }
}

/// A client as one request found it.
#[derive(Debug, Clone)]
pub struct Client {
    pub key: ClientKey,
    pub addr: SocketAddr,
    pub link: ClientLink,
}

/// A credential that passed the long-term check (server.rs).
pub struct Credential {
    pub username: String,
    pub identity: String,
    /// When the credential stops being valid; no allocation outlives it.
    pub expires: Instant,
    pub key: hmac::Key,
}

/// An attribute of a success response.
pub enum Attr {
    Address(u16, SocketAddr),
    U32(u16, u32),
}

/// An error response: code and reason phrase.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub u16, pub &'static str);

pub type Reply = Result<Vec<Attr>, Refusal>;

const MISMATCH: Refusal = Refusal(437, "Allocation Mismatch");
const BAD: Refusal = Refusal(400, "Bad Request");
const FORBIDDEN: Refusal = Refusal(403, "Forbidden: this relay reaches only the SFU");

struct Allocation {
    client: ClientLink,
    socket: Arc<UdpSocket>,
    /// What the client is told (its relayed candidate).
    relayed: SocketAddr,
    username: String,
    identity: String,
    /// The Allocate's transaction, so a retransmission gets the same answer.
    txid: [u8; 12],
    credential_expires: Instant,
    state: Mutex<Grants>,
    ended: Notify,
}

struct Grants {
    expires: Instant,
    permissions: HashMap<SocketAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
}

impl Grants {
    fn permitted(&self, peer: SocketAddr, now: Instant) -> bool {
        self.permissions
            .get(&peer)
            .is_some_and(|&until| until > now)
    }

    fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|(_, (p, until))| *p == peer && *until > now)
            .map(|(c, _)| *c)
    }
}

#[derive(Default)]
struct Table {
    by_client: HashMap<ClientKey, Arc<Allocation>>,
    per_identity: HashMap<String, usize>,
}

/// Every allocation on this node, and the one set of peers they may reach.
pub struct Relays {
    table: Mutex<Table>,
    /// The SFU's media addresses: the only peers.
    sfu: Vec<SocketAddr>,
    relay_ip: IpAddr,
    /// Relay sockets' port range (for firewall rules); `None`: the kernel picks.
    ports: Option<(u16, u16)>,
    limits: TurnLimits,
}

impl Relays {
    pub fn new(
        sfu: Vec<SocketAddr>,
        relay_ip: IpAddr,
        ports: Option<(u16, u16)>,
        limits: TurnLimits,
    ) -> Relays {
        Relays {
            table: Mutex::default(),
            sfu,
            relay_ip,
            ports,
            limits,
        }
    }

    fn allowed(&self, peer: SocketAddr) -> bool {
        self.sfu.contains(&peer)
    }

    pub fn has(&self, key: &ClientKey) -> bool {
        self.table.lock().unwrap().by_client.contains_key(key)
    }

    pub fn count(&self) -> usize {
        self.table.lock().unwrap().by_client.len()
    }

    fn find(&self, key: &ClientKey, cred: &Credential) -> Result<Arc<Allocation>, Refusal> {
        let alloc = self
            .table
            .lock()
            .unwrap()
            .by_client
            .get(key)
            .cloned()
            .ok_or(MISMATCH)?;
        if alloc.username != cred.username {
            return Err(Refusal(441, "Wrong Credentials"));
        }
        Ok(alloc)
    }

    /// The lifetime granted for a request of `requested` seconds (None: the default).
    fn lifetime(&self, requested: Option<u32>, credential_expires: Instant) -> Duration {
        let asked = requested.map_or(DEFAULT_LIFETIME, |s| {
            Duration::from_secs(u64::from(s)).max(DEFAULT_LIFETIME)
        });
        asked
            .min(self.limits.max_lifetime)
            .min(credential_expires.saturating_duration_since(Instant::now()))
    }

    pub fn allocate(self: &Arc<Self>, client: &Client, cred: &Credential, msg: &Message) -> Reply {
        if let Some(existing) = self.table.lock().unwrap().by_client.get(&client.key) {
            if existing.txid == msg.txid && existing.username == cred.username {
                let left = existing
                    .state
                    .lock()
                    .unwrap()
                    .expires
                    .saturating_duration_since(Instant::now());
                return Ok(allocated(existing.relayed, left, client.addr));
            }
            return Err(MISMATCH);
        }
        match msg.get(stun::REQUESTED_TRANSPORT) {
            Some([17, ..]) => {}
            Some(_) => return Err(Refusal(442, "Unsupported Transport Protocol: UDP only")),
            None => return Err(BAD),
        }
        let family_v4 = self.relay_ip.is_ipv4();
        if let Some(family) = msg.get(stun::REQUESTED_ADDRESS_FAMILY) {
            if family.first() != Some(if family_v4 { &1 } else { &2 }) {
                return Err(Refusal(440, "Address Family not Supported"));
            }
        }
        let lifetime = self.lifetime(msg.u32(stun::LIFETIME), cred.expires);
        if lifetime.is_zero() {
            return Err(Refusal(401, "Unauthorized: the credential has expired"));
        }
        // Quotas first, so a client at its limit costs no socket.
        self.room_for(&self.table.lock().unwrap(), &cred.identity)?;
        let socket = bind(self.relay_ip, self.ports).map_err(|error| {
            tracing::warn!(%error, "turn: cannot bind a relay socket");
            Refusal(508, "Insufficient Capacity")
        })?;
        let relayed = self.reported(socket.local_addr().map_err(|_| BAD)?);
        let now = Instant::now();
        let alloc = Arc::new(Allocation {
            client: client.link.clone(),
            socket: Arc::new(socket),
            relayed,
            username: cred.username.clone(),
            identity: cred.identity.clone(),
            txid: msg.txid,
            credential_expires: cred.expires,
            state: Mutex::new(Grants {
                expires: now + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
            }),
            ended: Notify::new(),
        });
        {
            let mut table = self.table.lock().unwrap();
            self.room_for(&table, &cred.identity)?;
            if table.by_client.contains_key(&client.key) {
                return Err(MISMATCH);
            }
            *table.per_identity.entry(cred.identity.clone()).or_default() += 1;
            table.by_client.insert(client.key, alloc.clone());
        }
        tracing::debug!(identity = %cred.identity, %relayed, client = %client.addr, "turn: allocated");
        crate::metrics::turn_allocated();
        tokio::spawn(self.clone().run(client.key, alloc));
        Ok(allocated(relayed, lifetime, client.addr))
    }

    /// Refuses a new allocation past the node's or the identity's quota.
    fn room_for(&self, table: &Table, identity: &str) -> Result<(), Refusal> {
        if table.by_client.len() >= self.limits.max_allocations {
            return Err(Refusal(508, "Insufficient Capacity"));
        }
        if table.per_identity.get(identity).copied().unwrap_or(0)
            >= self.limits.max_allocations_per_identity
        {
            return Err(Refusal(486, "Allocation Quota Reached"));
        }
        Ok(())
    }

    /// The relayed address clients are told: the socket's own, or on a wildcard bind the
    /// SFU's address of that family (the same host).
    fn reported(&self, local: SocketAddr) -> SocketAddr {
        if !local.ip().is_unspecified() {
            return local;
        }
        let ip = self
            .sfu
            .iter()
            .map(SocketAddr::ip)
            .find(|ip| ip.is_ipv4() == local.is_ipv4())
            .unwrap_or(if local.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            });
        SocketAddr::new(ip, local.port())
    }

    pub fn refresh(&self, client: &Client, cred: &Credential, msg: &Message) -> Reply {
        let alloc = self.find(&client.key, cred)?;
        if msg.u32(stun::LIFETIME) == Some(0) {
            // Gone at once, so the client may allocate again from the same address.
            self.retire(&client.key, &alloc);
            alloc.ended.notify_one();
            return Ok(vec![Attr::U32(stun::LIFETIME, 0)]);
        }
        let lifetime = self.lifetime(msg.u32(stun::LIFETIME), alloc.credential_expires);
        alloc.state.lock().unwrap().expires = Instant::now() + lifetime;
        Ok(vec![Attr::U32(stun::LIFETIME, seconds(lifetime))])
    }

    pub fn create_permission(&self, client: &Client, cred: &Credential, msg: &Message) -> Reply {
        let alloc = self.find(&client.key, cred)?;
        let peers: Option<Vec<SocketAddr>> = msg.xor_addresses(stun::XOR_PEER_ADDRESS);
        let peers = peers.filter(|p| !p.is_empty()).ok_or(BAD)?;
        if let Some(peer) = peers.iter().find(|p| !self.allowed(**p)) {
            tracing::info!(identity = %alloc.identity, %peer, "turn: permission refused: not the SFU");
            crate::metrics::turn_refused_peer();
            return Err(FORBIDDEN);
        }
        let until = Instant::now() + PERMISSION_LIFETIME;
        let mut grants = alloc.state.lock().unwrap();
        for peer in peers {
            grants.permissions.insert(peer, until);
        }
        Ok(Vec::new())
    }

    pub fn channel_bind(&self, client: &Client, cred: &Credential, msg: &Message) -> Reply {
        let alloc = self.find(&client.key, cred)?;
        let channel = match msg.get(stun::CHANNEL_NUMBER) {
            Some(&[a, b, _, _]) => u16::from_be_bytes([a, b]),
            _ => return Err(BAD),
        };
        let peer = msg.xor_address(stun::XOR_PEER_ADDRESS).ok_or(BAD)?;
        if !(0x4000..=0x4FFF).contains(&channel) {
            return Err(BAD);
        }
        if !self.allowed(peer) {
            tracing::info!(identity = %alloc.identity, %peer, "turn: channel refused: not the SFU");
            crate::metrics::turn_refused_peer();
            return Err(FORBIDDEN);
        }
        let now = Instant::now();
        let mut grants = alloc.state.lock().unwrap();
        let taken = grants
            .channels
            .get(&channel)
            .is_some_and(|(p, until)| *p != peer && *until > now);
        let elsewhere = grants.channel_of(peer, now).is_some_and(|c| c != channel);
        if taken || elsewhere {
            return Err(BAD);
        }
        grants
            .channels
            .insert(channel, (peer, now + CHANNEL_LIFETIME));
        grants.permissions.insert(peer, now + PERMISSION_LIFETIME);
        Ok(Vec::new())
    }

    /// A Send indication: relayed only to a permitted SFU address.
    pub fn send(&self, key: &ClientKey, msg: &Message) {
        let (Some(peer), Some(data)) = (
            msg.xor_address(stun::XOR_PEER_ADDRESS),
            msg.get(stun::DATA_ATTR),
        ) else {
            return;
        };
        self.forward(key, data, |grants, now| {
            grants.permitted(peer, now).then_some(peer)
        });
    }

    /// ChannelData from the client, to the channel's peer.
    pub fn channel_data(&self, key: &ClientKey, channel: u16, data: &[u8]) {
        self.forward(key, data, |grants, now| {
            let (peer, until) = *grants.channels.get(&channel)?;
            (until > now && grants.permitted(peer, now)).then_some(peer)
        });
    }

    fn forward(
        &self,
        key: &ClientKey,
        data: &[u8],
        peer: impl FnOnce(&Grants, Instant) -> Option<SocketAddr>,
    ) {
        let Some(alloc) = self.table.lock().unwrap().by_client.get(key).cloned() else {
            return;
        };
        let to = peer(&alloc.state.lock().unwrap(), Instant::now());
        // Permissions are only ever granted to SFU addresses; checked again all the same.
        if let Some(to) = to.filter(|p| self.allowed(*p)) {
            let _ = alloc.socket.try_send_to(data, to);
        }
    }

    /// Ends the allocation of a closed TCP/TLS connection.
    pub fn end(&self, key: &ClientKey) {
        let alloc = self.table.lock().unwrap().by_client.get(key).cloned();
        if let Some(alloc) = alloc {
            self.retire(key, &alloc);
            alloc.ended.notify_one();
        }
    }

    /// Takes `alloc` out of the table (once) and gives its identity's quota back.
    fn retire(&self, key: &ClientKey, alloc: &Arc<Allocation>) {
        let mut table = self.table.lock().unwrap();
        if !table
            .by_client
            .get(key)
            .is_some_and(|a| Arc::ptr_eq(a, alloc))
        {
            return;
        }
        table.by_client.remove(key);
        if let Some(n) = table.per_identity.get_mut(&alloc.identity) {
            *n -= 1;
            if *n == 0 {
                table.per_identity.remove(&alloc.identity);
            }
        }
    }

    pub fn end_all(&self) {
        for alloc in self.table.lock().unwrap().by_client.values() {
            alloc.ended.notify_one();
        }
    }

    /// Relays the SFU's datagrams to the client until the allocation expires or ends.
    async fn run(self: Arc<Self>, key: ClientKey, alloc: Arc<Allocation>) {
        let mut buf = vec![0u8; RELAY_BUFFER];
        loop {
            let expires = alloc.state.lock().unwrap().expires;
            tokio::select! {
                got = alloc.socket.recv_from(&mut buf) => match got {
                    Ok((n, from)) => self.to_client(&alloc, from, &buf[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::Interrupted) => {}
                    // Anything else would repeat at once: end rather than spin.
                    Err(error) => {
                        tracing::warn!(%error, "turn: relay socket failed");
                        break;
                    }
                },
                _ = tokio::time::sleep_until(expires) => {
                    if Instant::now() >= alloc.state.lock().unwrap().expires {
                        break;
                    }
                }
                _ = alloc.ended.notified() => break,
            }
        }
        self.retire(&key, &alloc);
        tracing::debug!(identity = %alloc.identity, relayed = %alloc.relayed, "turn: allocation ended");
    }

    fn to_client(&self, alloc: &Allocation, from: SocketAddr, data: &[u8]) {
        if !self.allowed(from) {
            return;
        }
        let now = Instant::now();
        let channel = {
            let grants = alloc.state.lock().unwrap();
            if !grants.permitted(from, now) {
                return;
            }
            grants.channel_of(from, now)
        };
        let bytes = match channel {
            Some(c) => stun::channel_data(c, data, alloc.client.stream()),
            None => Builder::new(stun::DATA, Class::Indication, rand::random())
                .xor_address(stun::XOR_PEER_ADDRESS, from)
                .attr(stun::DATA_ATTR, data)
                .finish(None),
        };
        alloc.client.send(bytes);
    }
}

fn allocated(relayed: SocketAddr, lifetime: Duration, client: SocketAddr) -> Vec<Attr> {
    vec![
        Attr::Address(stun::XOR_RELAYED_ADDRESS, relayed),
        Attr::U32(stun::LIFETIME, seconds(lifetime)),
        Attr::Address(stun::XOR_MAPPED_ADDRESS, client),
    ]
}

fn seconds(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// A relay socket on `ip`: a free port of `ports` from a random start, or the kernel's pick.
fn bind(ip: IpAddr, ports: Option<(u16, u16)>) -> std::io::Result<UdpSocket> {
    let socket = match ports {
        None => std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?,
        Some((min, max)) => {
            let span = u32::from(max - min) + 1;
            let start = rand::random_range(0..span);
            (0..span)
                .find_map(|i| {
                    let port = min + ((start + i) % span) as u16;
                    std::net::UdpSocket::bind(SocketAddr::new(ip, port)).ok()
                })
                .ok_or_else(|| std::io::Error::other("every relay port is in use"))?
        }
    };
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}
