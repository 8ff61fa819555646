//! Packets in: routes datagrams and ICE-TCP frames to their peer and feeds its engine.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::events::poll_peer;
use super::Worker;
use crate::directory::PeerKey;
use crate::{Counters, Shared};

impl Worker {
    pub(super) fn datagram(&mut self, data: &[u8], source: SocketAddr, at: Instant) {
        let Some(local) = Shared::destination(&self.ctx.shared.advertise, source) else {
            return;
        };
        let Ok(recv) = Receive::new(Protocol::Udp, source, local, data) else {
            Counters::add(&self.ctx.shared.counters.datagrams_dropped, 1);
            return;
        };
        let input = Input::Receive(at, recv);
        let key = match self.by_addr.get(&source) {
            Some(k) => Some(*k),
            None => {
                let k = self.find_peer(&input);
                if let Some(k) = k {
                    self.by_addr.insert(source, k);
                }
                k
            }
        };
        self.input(key, input);
    }

    /// One packet unframed from an ICE-TCP connection.
    pub(super) fn tcp_frame(&mut self, data: &[u8], source: SocketAddr, at: Instant) {
        let Some(local) = Shared::destination(&self.ctx.shared.tcp_advertise, source) else {
            return;
        };
        let Ok(recv) = Receive::new(Protocol::Tcp, source, local, data) else {
            Counters::add(&self.ctx.shared.counters.datagrams_dropped, 1);
            return;
        };
        let input = Input::Receive(at, recv);
        let key = match self.by_tcp.get(&source) {
            Some(Some(k)) => Some(*k),
            Some(None) => {
                let k = self.find_peer(&input);
                if let Some(k) = k {
                    self.by_tcp.insert(source, Some(k));
                }
                k
            }
            // Closed already, or never opened here.
            None => None,
        };
        self.input(key, input);
    }

    pub(super) fn find_peer(&self, input: &Input<'_>) -> Option<PeerKey> {
        self.peers
            .values()
            .find(|p| !p.dead && p.rtc.accepts(input))
            .map(|p| p.key)
    }

    /// Closes the ICE-TCP connections of a peer that is gone.
    pub(super) fn drop_tcp(&mut self, peer: PeerKey) {
        let links = &mut self.ctx.tcp_links;
        self.by_tcp.retain(|addr, k| {
            let gone = *k == Some(peer);
            if gone {
                links.remove(addr);
            }
            !gone
        });
    }

    pub(super) fn input(&mut self, key: Option<PeerKey>, input: Input<'_>) {
        let Some(p) = key.and_then(|k| self.peers.get_mut(&k)) else {
            Counters::add(&self.ctx.shared.counters.datagrams_dropped, 1);
            return;
        };
        if p.dead {
            return;
        }
        let r = catch_unwind(AssertUnwindSafe(|| p.rtc.handle_input(input)));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %p.id, error = %e, "rtc input");
                p.dead = true;
            }
            Err(_) => {
                tracing::warn!(peer = %p.id, "rtc panicked on input; dropping peer");
                p.dead = true;
            }
        }
        // RTP mode keeps one received packet for the next poll: drain it now.
        if !p.dead && catch_unwind(AssertUnwindSafe(|| poll_peer(p, &mut self.ctx))).is_err() {
            tracing::warn!(peer = %p.id, "rtc panicked; dropping peer");
            p.dead = true;
        }
    }
}
