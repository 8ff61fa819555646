//! ICE over TCP (RFC 6544, passive candidates): accepts connections on the media TCP port, unframes RFC 4571 packets and hands them to the worker of their peer.
//!
//! For networks that drop UDP. A connection is routed like a new UDP address: its first
//! frame must be a STUN binding request whose `USERNAME` names a registered peer's ufrag;
//! the connection then belongs to that peer's worker for good. The worker gets a
//! [`TcpLink`] to write back through (engine output and direct-egress packets alike); each
//! write is one RFC 4571 frame (a 16-bit length, then the packet), and a connection that
//! cannot keep up loses packets, as UDP would.
//!
//! The connections run on one thread of their own with a small tokio runtime: a TCP
//! peer costs two tasks, not a thread.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::link::TcpLink;
use super::udp::{stun_local_ufrag, MAX_DATAGRAM};
use super::worker::WorkerMsg;
use super::{Counters, Shared};

/// Packets queued to one connection's writer before new ones are dropped.
const LINK_QUEUE: usize = 512;

/// Deadlines and caps on ICE-TCP connections; a connection over a cap is closed on accept.
/// The caps per address come first, so idle connections from one address cannot take the
/// places of others (a browser opens one or two per candidate pair, and sends at once).
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// A connection must send its first STUN request this soon.
    pub first_frame: Duration,
    /// Connections open at once (0: no cap).
    pub max_connections: usize,
    /// Connections open at once from one address (0: no cap).
    pub max_per_ip: usize,
    /// Connections from one address still waiting for their first request (0: no cap).
    pub max_pending_per_ip: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            first_frame: Duration::from_secs(10),
            max_connections: 10_000,
            max_per_ip: 500,
            max_pending_per_ip: 32,
        }
    }
}

/// Connections open, in all and per address (open, still pending).
#[derive(Default)]
struct Counts {
    all: usize,
    by_ip: HashMap<IpAddr, (usize, usize)>,
}

/// Who may open one more connection, under [`TcpLimits`]. Cheap to clone.
#[derive(Clone)]
struct Admission {
    limits: TcpLimits,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection's places; dropping it gives them back.
struct Admitted {
    admission: Admission,
    ip: IpAddr,
    pending: bool,
}

impl Admission {
    fn new(limits: TcpLimits) -> Admission {
        Admission {
            limits,
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let over = |count: usize, cap: usize| cap > 0 && count >= cap;
        let l = self.limits;
        let mut counts = self.counts();
        let (open, pending) = counts.by_ip.get(&ip).copied().unwrap_or_default();
        if over(open, l.max_per_ip)
            || over(pending, l.max_pending_per_ip)
            || over(counts.all, l.max_connections)
        {
            return None;
        }
        counts.all += 1;
        counts.by_ip.insert(ip, (open + 1, pending + 1));
        Some(Admitted {
            admission: self.clone(),
            ip,
            pending: true,
        })
    }
}

impl Admitted {
    /// The first request arrived: the connection no longer counts as pending.
    fn first_frame_seen(&mut self) {
        if std::mem::take(&mut self.pending) {
            if let Some(c) = self.admission.counts().by_ip.get_mut(&self.ip) {
                c.1 -= 1;
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.first_frame_seen();
        let mut counts = self.admission.counts();
        counts.all -= 1;
        if let Some(c) = counts.by_ip.get_mut(&self.ip) {
            c.0 -= 1;
            if c.0 == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Which worker owns each ufrag, for routing a new connection's first frame.
#[derive(Default)]
pub(crate) struct TcpRoutes(Mutex<HashMap<String, usize>>);

impl TcpRoutes {
    fn map(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn register(&self, ufrag: &str, worker: usize) {
        self.map().insert(ufrag.to_owned(), worker);
    }
    pub fn forget(&self, ufrag: &str) {
        self.map().remove(ufrag);
    }
    fn worker_for(&self, first_frame: &[u8]) -> Option<usize> {
        let ufrag = stun_local_ufrag(first_frame)?;
        self.map().get(ufrag).copied()
    }
}

/// Hands connections accepted elsewhere (the HTTPS port, after a look at their first bytes)
/// to the ICE-TCP thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TcpHandoff(mpsc::UnboundedSender<std::net::TcpStream>);

impl TcpHandoff {
    pub(crate) fn channel() -> (TcpHandoff, mpsc::UnboundedReceiver<std::net::TcpStream>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (TcpHandoff(tx), rx)
    }

    /// Takes over `stream` as an ICE-TCP connection (nothing of it read yet).
    pub fn give(&self, stream: std::net::TcpStream) {
        let _ = self.0.send(stream);
    }
}

/// Is a connection that starts with `prefix` ICE-TCP (an RFC 4571 frame holding a STUN
/// binding request) rather than TLS or HTTP? `None`: too few bytes to tell.
pub fn is_ice_tcp(prefix: &[u8]) -> Option<bool> {
    // TLS starts with 0x16, HTTP with a letter; a STUN request's frame with a zero byte
    // (its length is under 256).
    match prefix.first() {
        None => None,
        Some(0) if prefix.len() >= 10 => {
            Some(prefix[2..4] == [0x00, 0x01] && prefix[6..10] == [0x21, 0x12, 0xA4, 0x42])
        }
        Some(0) => None,
        Some(_) => Some(false),
    }
}

/// Runs the accept loop on this thread until the SFU stops: connections from its own
/// listener, and from `handoff` (the HTTPS port).
pub(crate) fn run(
    shared: Arc<Shared>,
    listener: Option<std::net::TcpListener>,
    mut handoff: mpsc::UnboundedReceiver<std::net::TcpStream>,
    limits: TcpLimits,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "ice-tcp: no runtime; TCP media is off");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match listener.map(|l| {
            l.set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(l))
        }) {
            Some(Ok(l)) => Some(l),
            None => None,
            Some(Err(error)) => {
                tracing::error!(%error, "ice-tcp: listener; TCP media is off");
                return;
            }
        };
        let admission = Admission::new(limits);
        let mut stop_check = tokio::time::interval(Duration::from_millis(200));
        loop {
            let accepted = tokio::select! {
                a = accept(listener.as_ref()) => a,
                Some(std_stream) = handoff.recv() => {
                    std_stream
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(std_stream))
                        .and_then(|s| s.peer_addr().map(|a| (s, a)))
                }
                _ = stop_check.tick() => {
                    if shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
            };
            let (stream, source) = match accepted {
                Ok(v) => v,
                Err(error) => {
                    tracing::debug!(%error, "ice-tcp accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(admitted) = admission.admit(source.ip()) else {
                tracing::debug!(%source, "ice-tcp: refused, over a connection cap");
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                connection(&shared, stream, source, admitted).await;
            });
        }
        tracing::debug!("ice-tcp thread stopped");
    });
}

/// The next connection on our own listener; never, without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Reads one RFC 4571 frame into `buf` (resized to the frame); `Ok(false)` at a clean end.
async fn read_frame(r: &mut BufReader<OwnedReadHalf>, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let len = match r.read_u16().await {
        Ok(n) => usize::from(n),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    };
    if len == 0 || len > MAX_DATAGRAM {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

async fn connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    source: SocketAddr,
    mut admitted: Admitted,
) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let c = &shared.counters;
    // The first frame names the peer.
    let mut buf = vec![0; MAX_DATAGRAM];
    let deadline = admitted.admission.limits.first_frame;
    let first = tokio::time::timeout(deadline, read_frame(&mut read, &mut buf)).await;
    if !matches!(first, Ok(Ok(true))) {
        return;
    }
    admitted.first_frame_seen();
    Counters::add(&c.datagrams_in, 1);
    let Some(worker) = shared.tcp_routes.worker_for(&buf) else {
        Counters::add(&c.datagrams_dropped, 1);
        tracing::debug!(%source, "ice-tcp: first frame names no peer");
        return;
    };
    let Some(tx) = shared.workers.get(worker) else {
        return;
    };
    let (link, queue) = mpsc::channel(LINK_QUEUE);
    tx.send(WorkerMsg::TcpOpen {
        source,
        link: TcpLink::new(link),
    });
    let writer = tokio::spawn(write_frames(write, queue));
    let mut len = buf.len();
    loop {
        if let Err(buf) = tx.send_datagram(buf, len, source, Instant::now(), true) {
            Counters::add(&c.datagrams_dropped, 1);
            drop(buf);
        }
        buf = Vec::with_capacity(MAX_DATAGRAM);
        match read_frame(&mut read, &mut buf).await {
            Ok(true) => {
                Counters::add(&c.datagrams_in, 1);
                len = buf.len();
            }
            Ok(false) => break,
            Err(error) => {
                tracing::debug!(%source, %error, "ice-tcp read");
                break;
            }
        }
    }
    tx.send(WorkerMsg::TcpClosed { source });
    writer.abort();
}

/// Writes queued packets as RFC 4571 frames, coalescing what is queued into one write.
async fn write_frames(mut w: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    while let Some(packet) = queue.recv().await {
        out.clear();
        frame_into(&mut out, &packet);
        while out.len() < 60 * 1024 {
            match queue.try_recv() {
                Ok(p) => frame_into(&mut out, &p),
                Err(_) => break,
            }
        }
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

fn frame_into(out: &mut Vec<u8>, packet: &[u8]) {
    // TcpLink::send refuses anything longer.
    let len = u16::try_from(packet.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_tcp_is_told_from_tls_and_http() {
        let stun = [0, 100, 0, 1, 0, 80, 0x21, 0x12, 0xA4, 0x42, 1, 2];
        assert_eq!(is_ice_tcp(&stun), Some(true));
        assert_eq!(is_ice_tcp(&stun[..5]), None, "needs the cookie");
        assert_eq!(is_ice_tcp(&[]), None);
        assert_eq!(is_ice_tcp(&[0x16, 0x03, 0x01]), Some(false), "TLS");
        assert_eq!(is_ice_tcp(b"GET / HTTP/1.1"), Some(false));
        assert_eq!(
            is_ice_tcp(&[0, 100, 0, 3, 0, 80, 0x21, 0x12, 0xA4, 0x42]),
            Some(false),
            "not a binding request"
        );
        assert_eq!(is_ice_tcp(&[0; 10]), Some(false));
    }

    #[test]
    fn one_address_cannot_take_the_places_of_others() {
        let admission = Admission::new(TcpLimits {
            max_connections: 6,
            max_per_ip: 4,
            max_pending_per_ip: 2,
            ..TcpLimits::default()
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mut first: Vec<Admitted> = (0..2).map(|_| admission.admit(a).unwrap()).collect();
        assert!(admission.admit(a).is_none(), "two pending from a already");
        first.iter_mut().for_each(Admitted::first_frame_seen);
        first.extend((0..2).map(|_| admission.admit(a).unwrap()));
        assert!(admission.admit(a).is_none(), "four open from a already");
        let others: Vec<Admitted> = (0..2).map(|_| admission.admit(b).unwrap()).collect();
        assert!(admission.admit(b).is_none(), "six in all");
        drop(first);
        drop(others);
        assert_eq!(admission.counts().all, 0);
        assert!(admission.counts().by_ip.is_empty());
    }

    #[test]
    fn frames_carry_a_big_endian_length() {
        let mut out = Vec::new();
        frame_into(&mut out, &[7; 300]);
        frame_into(&mut out, &[1, 2]);
        assert_eq!(&out[..2], &[1, 44]);
        assert_eq!(out.len(), 2 + 300 + 2 + 2);
        assert_eq!(&out[302..], &[0, 2, 1, 2]);
    }

    #[tokio::test]
    async fn oversized_and_empty_frames_end_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for bad in [vec![0xff, 0xff], vec![0, 0]] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(&bad).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let (r, _w) = server.into_split();
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            assert!(read_frame(&mut r, &mut buf).await.is_err(), "{bad:?}");
        }
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&[0, 3, 9, 8, 7]).await.unwrap();
        drop(client);
        let (server, _) = listener.accept().await.unwrap();
        let (r, _w) = server.into_split();
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        assert!(read_frame(&mut r, &mut buf).await.unwrap());
        assert_eq!(buf, [9, 8, 7]);
        assert!(!read_frame(&mut r, &mut buf).await.unwrap(), "clean end");
    }
}
