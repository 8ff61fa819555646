//! The edge's listener for `axum::serve` when a connection needs work before HTTP: a TLS handshake, or a look at its first bytes to hand ICE-TCP to the SFU.
//!
//! Each connection is prepared in a task of its own, bounded in time and number, so a
//! client that stalls (mid-handshake, or silent) never holds up the accept loop; the
//! per-address caps apply at accept, so one address cannot take the handshake pool. With an
//! ICE-TCP handoff, a connection whose first bytes are an RFC 4571 frame holding a STUN
//! binding request goes to the SFU untouched (`sfu::is_ice_tcp`): media then needs no port
//! but the HTTPS one.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use convene_sfu::{is_ice_tcp, TcpHandoff};

use super::admission::{Admitted, PerIp, Shares};

/// How connections are admitted before HTTP, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct EdgeLimits {
    /// A client not ready (handshake done, or first bytes seen) by then is dropped.
    pub handshake_timeout: Duration,
    /// Connections being prepared at once (a reconnect storm after a restart is thousands).
    pub max_handshakes: usize,
    /// Of those, from one address (at most half the pool, so one address never fills it);
    /// more from that address wait their turn, within `handshake_timeout`.
    pub max_handshakes_per_ip: usize,
    /// Connections from one address before their upgrade, handshake included (0: no cap).
    pub max_connections_per_ip: usize,
}

impl EdgeLimits {
    fn handshakes_per_ip(&self) -> usize {
        let half = (self.max_handshakes / 2).max(1);
        match self.max_handshakes_per_ip {
            0 => half,
            n => n.min(half),
        }
    }
}

/// Connections ready for HTTP, for `axum::serve`.
pub struct EdgeListener<Io> {
    ready: mpsc::Receiver<(Io, Admitted)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send + 'static> EdgeListener<Io> {
    /// Accepts on `tcp`: `tap` runs on each stream, ICE-TCP goes to `handoff` (when given),
    /// and `prepare` turns the rest into what HTTP is served over (`None`: drop it).
    /// Each connection takes its place under the per-address cap (`per_ip`, shared with the
    /// HTTP loop) at accept, and is closed at once over it; then it waits for a place in its
    /// address's share of handshakes, and only then in the pool, all within the deadline.
    pub fn new<F, Fut>(
        tcp: TcpListener,
        tap: impl Fn(&TcpStream) + Send + 'static,
        handoff: Option<TcpHandoff>,
        (limits, per_ip): (EdgeLimits, PerIp),
        prepare: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Io>> + Send + 'static,
    {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let pool = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
        let shares = Shares::new(limits.handshakes_per_ip());
        let prepare = Arc::new(prepare);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(v) => v,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, as axum does.
                        tracing::debug!(%error, "accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let ip = peer.ip();
                let Some(slot) = per_ip.try_admit(ip, limits.max_connections_per_ip) else {
                    tracing::debug!(%ip, "refused before the handshake: per-address connection cap");
                    continue;
                };
                tap(&stream);
                let ready = tx.clone();
                let prepare = prepare.clone();
                let handoff = handoff.clone();
                let (pool, shares) = (pool.clone(), shares.clone());
                tokio::spawn(async move {
                    let work = async {
                        // Its address's share first: only then a place in the pool.
                        let _share = shares.acquire(ip).await;
                        let _permit = pool.acquire_owned().await.ok()?;
                        if let Some(handoff) = &handoff {
                            if sniff(&stream).await? {
                                match stream.into_std() {
                                    Ok(s) => handoff.give(s),
                                    Err(error) => tracing::debug!(%error, "ice-tcp handoff"),
                                }
                                return None;
                            }
                        }
                        prepare(stream).await
                    };
                    match tokio::time::timeout(limits.handshake_timeout, work).await {
                        Ok(Some(io)) => {
                            let remote = Admitted { remote: peer, slot };
                            let _ = ready.send((io, remote)).await;
                        }
                        Ok(None) => {}
                        Err(_) => tracing::debug!(%peer, "connection not ready in time"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(EdgeListener {
            ready,
            local,
            accept_task,
        })
    }
}

/// Is this connection ICE-TCP? Waits for enough of its first bytes; `None` if it closes.
async fn sniff(stream: &TcpStream) -> Option<bool> {
    let mut buf = [0u8; 10];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(ice) = is_ice_tcp(&buf[..n]) {
            return Some(ice);
        }
        // Part of a frame so far: the rest follows in the same packet or the next.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl<Io> Drop for EdgeListener<Io> {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send + 'static> axum::serve::Listener
    for EdgeListener<Io>
{
    type Io = Io;
    type Addr = Admitted;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    /// `Admitted` holds a connection's slot, which the bound address has none of; nothing
    /// here asks (the server reads the address from the TCP listener).
    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Err(std::io::Error::other(format!(
            "{}: an edge listener's address is no connection's",
            self.local
        )))
    }
}
