//! The edge's listener for `axum::serve` when a connection needs work before HTTP: a TLS handshake, or a look at its first bytes to hand ICE-TCP to the SFU.
//!
//! Each connection is prepared in a task of its own, bounded in time and number, so a
//! client that stalls (mid-handshake, or silent) never holds up the accept loop. With an
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

/// A client that is not ready (handshake done, or first bytes seen) by then is dropped.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being prepared at once (a reconnect storm after a restart is thousands).
const MAX_PREPARING: usize = 1024;

/// Connections ready for HTTP, for `axum::serve`.
pub struct EdgeListener<Io> {
    ready: mpsc::Receiver<(Io, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send + 'static> EdgeListener<Io> {
    /// Accepts on `tcp`: `tap` runs on each stream, ICE-TCP goes to `handoff` (when given),
    /// and `prepare` turns the rest into what HTTP is served over (`None`: drop it).
    pub fn new<F, Fut>(
        tcp: TcpListener,
        tap: impl Fn(&TcpStream) + Send + 'static,
        handoff: Option<TcpHandoff>,
        prepare: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Io>> + Send + 'static,
    {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(MAX_PREPARING));
        let prepare = Arc::new(prepare);
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(v) => v,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, as axum does.
                        tracing::debug!(%error, "accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                tap(&stream);
                let ready = tx.clone();
                let prepare = prepare.clone();
                let handoff = handoff.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let work = async {
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
                    match tokio::time::timeout(PREPARE_TIMEOUT, work).await {
                        Ok(Some(io)) => {
                            let _ = ready.send((io, peer)).await;
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
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
