//! The accept loop: HTTP/1 connections with a header-read deadline, a per-IP cap on connections not yet upgraded, and graceful shutdown.
//!
//! `axum::serve` has no timeouts: a client that sends nothing, half a request line or one
//! byte every few seconds would hold its socket (and a file descriptor) forever. Here hyper
//! runs each connection with a timer, so the request head (the first or the next one on a
//! kept-alive connection) must arrive within `header_read_timeout_s`; the body has its own
//! deadline in [`read_body_in_time`]. A WebSocket leaves this loop's accounting at the upgrade;
//! from then on its session's ping and idle timeout watch it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::admission::{PerIp, Remote};
use super::ApiError;

/// What the loop needs to know, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    /// Connections from one address still speaking HTTP (not yet upgraded); 0 = no cap.
    pub max_connections_per_ip: usize,
}

/// Sent (best effort, never awaited) to a connection over the per-IP cap before it is dropped.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 84\r\n\r\n{\"error\":\"unavailable\",\"message\":\"too many connections from your address; retry\"}\n\n";

/// Accepts until `stop` turns `Some`, then lets open requests finish and returns once every
/// connection task has ended (upgraded sockets are the sessions' to close).
/// The listener may be plain TCP or the edge's TLS / ICE-TCP listener: socket options are
/// set where the TCP stream is accepted. `per_ip` counts connections under
/// `max_connections_per_ip`; the edge listener takes each slot at accept (before the TLS
/// handshake), plain TCP here.
pub async fn run<L>(
    mut listener: L,
    router: Router,
    limits: ServeLimits,
    per_ip: PerIp,
    mut stop: watch::Receiver<Option<u64>>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: Remote,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Each connection task holds a receiver; `closed()` resolves once all have dropped it.
    let (draining_tx, draining_rx) = watch::channel(false);
    let stopped = async move {
        let _ = stop.wait_for(|s| s.is_some()).await;
    };
    tokio::pin!(stopped);
    loop {
        // The listener retries failed accepts itself (backing off on EMFILE and friends).
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => break,
        };
        let (remote, guard) = match remote.admit(&per_ip, limits.max_connections_per_ip) {
            Ok(admitted) => admitted,
            Err(remote) => {
                tracing::debug!(ip = %remote.ip(), "refused: per-address connection cap");
                tokio::spawn(async move {
                    let mut tcp = tcp;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), tcp.write_all(TOO_MANY)).await;
                });
                continue;
            }
        };
        // Handlers that limit per client address (`/ws`) read the peer from the extensions.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(super::joins::PeerAddr(remote));
                request
            },
        ));
        let mut draining = draining_rx.clone();
        tokio::spawn(async move {
            let drain = async {
                let _ = draining.wait_for(|d| *d).await;
            };
            tokio::pin!(drain);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = &mut drain => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::trace!(%error, "connection ended with an error");
            }
            drop(guard);
        });
    }
    drop(listener);
    let _ = draining_tx.send(true);
    drop(draining_rx);
    draining_tx.closed().await;
    Ok(())
}

/// Reads the whole body within `deadline` (408 otherwise) before the handler runs, so a body
/// sent one byte at a time cannot hold a connection past it. Bodies are small here (SDP, JSON).
pub async fn read_body_in_time(
    deadline: Duration,
    limit: usize,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            let too_big = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            return if too_big {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {limit} bytes"),
                )
                .into_response()
            } else {
                ApiError::bad_request("the request body could not be read").into_response()
            };
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive within {deadline:?}"),
            )
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
