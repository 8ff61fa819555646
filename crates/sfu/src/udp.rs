//! The receive thread: reads the shared socket and routes each datagram to the
//! worker that owns its peer.
//!
//! Known remote addresses map straight to a worker. A datagram from a new address
//! is routed only if it is a STUN request whose `USERNAME` starts with the local
//! ufrag of a registered peer (ICE-lite: the client always checks first); the
//! address is then remembered. Both maps belong to this thread alone, so routing
//! takes no lock. Buffers come back from the workers for reuse.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Counters, Shared};

/// Largest datagram we read (anything above the path MTU is not WebRTC).
pub(crate) const MAX_DATAGRAM: usize = 2048;

#[derive(Debug)]
pub(crate) enum UdpCtl {
    Register { ufrag: String, worker: usize },
    Forget { ufrag: String },
}

struct Routes {
    by_ufrag: HashMap<String, usize>,
    by_addr: HashMap<SocketAddr, (usize, String)>,
}

impl Routes {
    fn apply(&mut self, ctl: UdpCtl) {
        match ctl {
            UdpCtl::Register { ufrag, worker } => {
                self.by_ufrag.insert(ufrag, worker);
            }
            UdpCtl::Forget { ufrag } => {
                self.by_ufrag.remove(&ufrag);
                self.by_addr.retain(|_, (_, u)| *u != ufrag);
            }
        }
    }

    fn route(&mut self, source: SocketAddr, data: &[u8]) -> Option<usize> {
        if let Some((w, _)) = self.by_addr.get(&source) {
            return Some(*w);
        }
        let ufrag = stun_local_ufrag(data)?;
        let worker = *self.by_ufrag.get(ufrag)?;
        self.by_addr.insert(source, (worker, ufrag.to_owned()));
        Some(worker)
    }
}

/// The local (first) half of a STUN request's `USERNAME`, if `data` is one.
pub(crate) fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    // STUN: first two bits zero, magic cookie at 4..8.
    if data.len() < 20 || data[0] > 3 || data[4..8] != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    let msg = str0m::ice::StunMessage::parse(data).ok()?;
    if !msg.is_binding_request() {
        return None;
    }
    let username: &str = msg.username()?;
    username.split(':').next().filter(|u| !u.is_empty())
}

pub(crate) fn run(shared: Arc<Shared>, ctl: Receiver<UdpCtl>, recycle: Receiver<Vec<u8>>) {
    let mut routes = Routes {
        by_ufrag: HashMap::new(),
        by_addr: HashMap::new(),
    };
    if let Err(e) = shared
        .socket
        .set_read_timeout(Some(Duration::from_millis(200)))
    {
        tracing::error!(error = %e, "udp: cannot set read timeout");
    }
    let c = &shared.counters;
    let mut spare: Option<Vec<u8>> = None;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        loop {
            match ctl.try_recv() {
                Ok(m) => routes.apply(m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let mut buf = spare
            .take()
            .or_else(|| recycle.try_recv().ok())
            .unwrap_or_else(|| vec![0; MAX_DATAGRAM]);
        buf.resize(MAX_DATAGRAM, 0);
        let (len, source) = match shared.socket.recv_from(&mut buf) {
            Ok(v) => v,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                spare = Some(buf);
                continue;
            }
            Err(e) => {
                // ICMP errors (e.g. port unreachable) surface here on some systems.
                tracing::debug!(error = %e, "udp recv");
                spare = Some(buf);
                continue;
            }
        };
        let at = Instant::now();
        Counters::add(&c.datagrams_in, 1);
        // A new peer's first STUN may race its registration: catch up once.
        let mut worker = routes.route(source, &buf[..len]);
        if worker.is_none() {
            while let Ok(m) = ctl.try_recv() {
                routes.apply(m);
            }
            worker = routes.route(source, &buf[..len]);
        }
        let Some(worker) = worker else {
            Counters::add(&c.datagrams_dropped, 1);
            spare = Some(buf);
            continue;
        };
        let Some(tx) = shared.workers.get(worker) else {
            spare = Some(buf);
            continue;
        };
        if let Err(buf) = tx.send_datagram(buf, len, source, at, false) {
            Counters::add(&c.datagrams_dropped, 1);
            spare = Some(buf);
        }
    }
    tracing::debug!("udp thread stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_stun_from_unknown_address_is_dropped() {
        let mut r = Routes {
            by_ufrag: HashMap::from([("abcd".to_string(), 1)]),
            by_addr: HashMap::new(),
        };
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(r.route(src, &[0x80, 0, 0, 0]), None);
        assert_eq!(r.route(src, &[]), None);
        assert_eq!(r.route(src, &[0u8; 40]), None);
        r.by_addr.insert(src, (1, "abcd".into()));
        assert_eq!(r.route(src, &[0x80]), Some(1));
        r.apply(UdpCtl::Forget {
            ufrag: "abcd".into(),
        });
        assert_eq!(r.route(src, &[0x80]), None);
    }
}
