//! The embedded TURN server's front: UDP and TCP (or TLS) listeners for clients, the long-term credential check on the shared-secret scheme, and the dispatch of RFC 8656 requests to the allocations in `relay.rs`.
//!
//! Credentials are the ones `Turn::ice_server` mints (username `<expiry>:<identity>`,
//! password `base64(HMAC-SHA1(secret, username))`), checked here with no call to anything
//! else. Requests without MESSAGE-INTEGRITY get a 401 with a nonce that is itself an HMAC
//! (of its issue time and the client's address), so nonces take no memory.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use md5::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use super::relay::TurnLimits;
use super::relay::{Attr, Client, ClientKey, ClientLink, Credential, Refusal, Relays};
use super::stun::{self, Builder, Class, Message};

/// How long a nonce stays fresh; then 438 Stale Nonce, and the client retries with a new one.
const NONCE_TTL_S: u64 = 3600;
/// No credential is taken to last longer than this (a year).
const MAX_CREDENTIAL_S: u64 = 365 * 86_400;
/// A TCP/TLS client must finish its handshake, and have an allocation, within this.
const STREAM_SETUP: Duration = Duration::from_secs(10);
/// A TCP/TLS client with an allocation that is silent this long is cut off (media and ICE
/// consent checks keep a live one busy every few seconds).
const STREAM_IDLE: Duration = Duration::from_secs(60);
/// The largest frame read from a stream: media datagrams stay under the path MTU.
const MAX_STREAM_FRAME: usize = 4096;
/// Messages queued for one stream client before new ones are dropped.
const STREAM_QUEUE: usize = 256;

/// What the server needs to start.
pub struct TurnSettings {
    pub listen_ip: IpAddr,
    /// TURN over UDP; `None`: no UDP listener.
    pub udp_port: Option<u16>,
    /// TURN over TCP, or over TLS with `tls`; `None`: no stream listener.
    pub tcp_port: Option<u16>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub relay_ip: IpAddr,
    /// The relay sockets' ports (inclusive); `None`: any the kernel gives.
    pub relay_ports: Option<(u16, u16)>,
    pub realm: String,
    pub secret: String,
    /// The SFU's media addresses: the only peers allocations may reach.
    pub sfu: Vec<SocketAddr>,
    pub limits: TurnLimits,
    pub max_connections_per_ip: usize,
}

/// A running relay; its listeners stop and its allocations end when it is dropped.
pub struct TurnServer {
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    relays: Arc<Relays>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl TurnServer {
    pub async fn start(s: TurnSettings) -> std::io::Result<TurnServer> {
        let relays = Arc::new(Relays::new(
            s.sfu.clone(),
            s.relay_ip,
            s.relay_ports,
            s.limits.clone(),
        ));
        let front = Arc::new(Front {
            auth: Auth::new(&s.secret, &s.realm),
            relays: relays.clone(),
        });
        let mut tasks = Vec::new();
        let mut udp_addr = None;
        if let Some(port) = s.udp_port {
            let udp = Arc::new(UdpSocket::bind(SocketAddr::new(s.listen_ip, port)).await?);
            udp_addr = Some(udp.local_addr()?);
            tasks.push(tokio::spawn(serve_udp(udp, front.clone())));
        }
        let mut tcp_addr = None;
        if let Some(port) = s.tcp_port {
            let listener = TcpListener::bind(SocketAddr::new(s.listen_ip, port)).await?;
            tcp_addr = Some(listener.local_addr()?);
            let tls = s.tls.clone().map(tokio_rustls::TlsAcceptor::from);
            tasks.push(tokio::spawn(serve_tcp(
                listener,
                tls,
                front,
                s.max_connections_per_ip,
            )));
        }
        tracing::info!(udp = ?udp_addr, tcp = ?tcp_addr, tls = s.tls.is_some(), sfu = ?s.sfu, "turn: embedded relay started; it relays to the SFU only");
        Ok(TurnServer {
            udp: udp_addr,
            tcp: tcp_addr,
            relays,
            tasks,
        })
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Live allocations.
    pub fn allocations(&self) -> usize {
        self.relays.count()
    }

    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.relays.end_all();
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Checks long-term credentials (RFC 8489 section 9.2) minted with the shared secret.
struct Auth {
    secret: hmac::Key,
    realm: String,
    nonce_key: hmac::Key,
}

impl Auth {
    fn new(secret: &str, realm: &str) -> Auth {
        let nonce_secret: [u8; 32] = rand::random();
        Auth {
            secret: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes()),
            realm: realm.to_string(),
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &nonce_secret),
        }
    }

    fn nonce_for(&self, issued: u64, ip: IpAddr) -> String {
        let mut data = issued.to_be_bytes().to_vec();
        data.extend_from_slice(ip.to_string().as_bytes());
        let tag = hmac::sign(&self.nonce_key, &data);
        let hex: String = tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{issued:016x}{hex}")
    }

    fn nonce_fresh(&self, nonce: &str, ip: IpAddr, now: u64) -> bool {
        let Some(issued) = nonce
            .get(..16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            return false;
        };
        issued <= now && now - issued < NONCE_TTL_S && self.nonce_for(issued, ip) == nonce
    }

    /// A challenge (401 or 438) carrying the realm and a fresh nonce.
    fn challenge(&self, msg: &Message, ip: IpAddr, code: u16, reason: &str) -> Vec<u8> {
        Builder::new(msg.method, Class::Error, msg.txid)
            .error(code, reason)
            .attr(stun::REALM, self.realm.as_bytes())
            .attr(
                stun::NONCE,
                self.nonce_for(crate::auth::unix_now(), ip).as_bytes(),
            )
            .finish(None)
    }

    /// The credential, or the error response to send.
    fn check(&self, msg: &Message, ip: IpAddr) -> Result<Credential, Vec<u8>> {
        let unauthorized = |reason| self.challenge(msg, ip, 401, reason);
        if msg.get(stun::MESSAGE_INTEGRITY).is_none() {
            return Err(unauthorized("Unauthorized"));
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.text(stun::USERNAME),
            msg.text(stun::REALM),
            msg.text(stun::NONCE),
        ) else {
            return Err(Builder::new(msg.method, Class::Error, msg.txid)
                .error(400, "Bad Request")
                .finish(None));
        };
        let now = crate::auth::unix_now();
        if !self.nonce_fresh(nonce, ip, now) {
            return Err(self.challenge(msg, ip, 438, "Stale Nonce"));
        }
        if realm != self.realm {
            return Err(unauthorized("Unauthorized: wrong realm"));
        }
        let Some((expiry, identity)) = username
            .split_once(':')
            .and_then(|(e, who)| Some((e.parse::<u64>().ok()?, who)))
        else {
            return Err(unauthorized("Unauthorized"));
        };
        if expiry <= now {
            return Err(unauthorized("Unauthorized: the credential has expired"));
        }
        let password = base64::engine::general_purpose::STANDARD
            .encode(hmac::sign(&self.secret, username.as_bytes()).as_ref());
        let long_term = md5::Md5::digest(format!("{username}:{realm}:{password}").as_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &long_term);
        if !msg.integrity_ok(&key) {
            return Err(unauthorized("Unauthorized"));
        }
        Ok(Credential {
            username: username.to_string(),
            identity: identity.to_string(),
            // Bounded: a credential minted with an absurd expiry must not overflow the clock.
            expires: Instant::now() + Duration::from_secs((expiry - now).min(MAX_CREDENTIAL_S)),
            key,
        })
    }
}

/// What every listener hands its messages to.
struct Front {
    auth: Auth,
    relays: Arc<Relays>,
}

impl Front {
    fn handle(&self, bytes: &[u8], from: &Client) {
        if let Some((channel, data)) = stun::parse_channel_data(bytes) {
            self.relays.channel_data(&from.key, channel, data);
            return;
        }
        let Some(msg) = Message::parse(bytes) else {
            return;
        };
        match (msg.class, msg.method) {
            (Class::Indication, stun::SEND) => self.relays.send(&from.key, &msg),
            (Class::Request, stun::BINDING) => from.link.send(
                Builder::new(stun::BINDING, Class::Success, msg.txid)
                    .xor_address(stun::XOR_MAPPED_ADDRESS, from.addr)
                    .finish(None),
            ),
            (
                Class::Request,
                stun::ALLOCATE | stun::REFRESH | stun::CREATE_PERMISSION | stun::CHANNEL_BIND,
            ) => {
                let reply = match self.auth.check(&msg, from.addr.ip()) {
                    Ok(cred) => self.authenticated(&msg, from, &cred),
                    Err(challenge) => challenge,
                };
                from.link.send(reply);
            }
            (Class::Request, _) => from.link.send(
                Builder::new(msg.method, Class::Error, msg.txid)
                    .error(400, "Bad Request: unsupported method")
                    .finish(None),
            ),
            _ => {}
        }
    }

    fn authenticated(&self, msg: &Message, from: &Client, cred: &Credential) -> Vec<u8> {
        let reply = match msg.method {
            stun::ALLOCATE => self.relays.allocate(from, cred, msg),
            stun::REFRESH => self.relays.refresh(from, cred, msg),
            stun::CREATE_PERMISSION => self.relays.create_permission(from, cred, msg),
            _ => self.relays.channel_bind(from, cred, msg),
        };
        match reply {
            Ok(attrs) => attrs
                .into_iter()
                .fold(
                    Builder::new(msg.method, Class::Success, msg.txid),
                    |b, attr| match attr {
                        Attr::Address(t, a) => b.xor_address(t, a),
                        Attr::U32(t, v) => b.u32(t, v),
                    },
                )
                .finish(Some(&cred.key)),
            Err(Refusal(code, reason)) => Builder::new(msg.method, Class::Error, msg.txid)
                .error(code, reason)
                .finish(Some(&cred.key)),
        }
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, front: Arc<Front>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(error) => {
                tracing::debug!(%error, "turn: udp receive");
                continue;
            }
        };
        let client = Client {
            key: ClientKey::Udp(from),
            addr: from,
            link: ClientLink::Udp(socket.clone(), from),
        };
        front.handle(&buf[..n], &client);
    }
}

/// Connections open per client address, released when a connection ends.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

struct Slot(Arc<PerAddress>, IpAddr);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Slot> {
        let mut open = self.0.lock().unwrap();
        let n = open.entry(ip).or_default();
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = (self.0).0.lock().unwrap();
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    front: Arc<Front>,
    per_ip: usize,
) {
    let ids = AtomicU64::new(1);
    let open = Arc::new(PerAddress::default());
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(v) => v,
            Err(error) => {
                tracing::debug!(%error, "turn: accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = open.take(addr.ip(), per_ip) else {
            tracing::debug!(%addr, "turn: too many connections from this address");
            continue;
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (front, tls) = (front.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            match tls {
                Some(tls) => match tokio::time::timeout(STREAM_SETUP, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_stream(stream, id, addr, &front).await,
                    _ => tracing::debug!(%addr, "turn: TLS handshake failed"),
                },
                None => serve_stream::<TcpStream>(tcp, id, addr, &front).await,
            }
            front.relays.end(&ClientKey::Stream(id));
        });
    }
}

/// Reads framed STUN and ChannelData (RFC 8656 section 12.5) until the client goes away.
async fn serve_stream<S: AsyncRead + AsyncWrite + Send + 'static>(
    io: S,
    id: u64,
    addr: SocketAddr,
    front: &Front,
) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let client = Client {
        key: ClientKey::Stream(id),
        addr,
        link: ClientLink::Stream(tx),
    };
    let started = Instant::now();
    let mut frame = Vec::with_capacity(MAX_STREAM_FRAME);
    loop {
        // Before an allocation, the setup deadline; after, an idle timeout.
        let deadline = if front.relays.has(&client.key) {
            Instant::now() + STREAM_IDLE
        } else {
            started + STREAM_SETUP
        };
        match tokio::time::timeout_at(deadline, read_frame(&mut rd, &mut frame)).await {
            Ok(Ok(())) => front.handle(&frame, &client),
            _ => break,
        }
    }
    drop(client);
    writer.abort();
}

/// One STUN message or ChannelData frame (padded to 4 bytes) from a stream.
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, frame: &mut Vec<u8>) -> std::io::Result<()> {
    let mut head = [0u8; 4];
    rd.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let total = match head[0] & 0xC0 {
        0x00 => stun::HEADER + len,
        0x40 => 4 + len.div_ceil(4) * 4,
        _ => return Err(std::io::ErrorKind::InvalidData.into()),
    };
    if total > MAX_STREAM_FRAME {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    frame.clear();
    frame.extend_from_slice(&head);
    frame.resize(total, 0);
    rd.read_exact(&mut frame[4..]).await?;
    Ok(())
}
