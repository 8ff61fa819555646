//! The write end of one ICE-TCP connection, as a worker holds it.
//!
//! Its own module so that `tcp.rs` (which makes links and talks to workers) and the
//! worker (which writes through them) both depend on it rather than on each other.

use tokio::sync::mpsc;

/// Where a worker writes packets for one TCP connection.
#[derive(Debug, Clone)]
pub(crate) struct TcpLink(mpsc::Sender<Vec<u8>>);

impl TcpLink {
    /// A link feeding `queue`, which the connection's writer drains.
    pub fn new(queue: mpsc::Sender<Vec<u8>>) -> Self {
        TcpLink(queue)
    }

    /// Queues one packet; false when the connection is gone or too far behind.
    pub fn send(&self, packet: Vec<u8>) -> bool {
        packet.len() <= usize::from(u16::MAX) && self.0.try_send(packet).is_ok()
    }
}
