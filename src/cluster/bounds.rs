//! What may cross nodes through Redis: the size of one message, and the node's token buckets for all its sessions together.

/// What may cross nodes through Redis (`[cluster]` in the config).
#[derive(Clone, Debug)]
pub struct Bounds {
    pub max_message_bytes: usize,
    pub node_messages: crate::config::Bucket,
    pub node_bytes: crate::config::Bucket,
    pub inbox: super::store::InboxBounds,
    pub snapshot_input_bytes: usize,
}

impl Bounds {
    pub fn of(config: &crate::config::ClusterConfig) -> Bounds {
        Bounds {
            max_message_bytes: config.max_message_bytes,
            node_messages: config.node_messages,
            node_bytes: config.node_bytes,
            inbox: super::store::InboxBounds {
                bytes: config.inbox_bytes,
                entries: config.inbox_entries.max(1),
                retention_ms: config.inbox_retention_ms.max(1000),
            },
            snapshot_input_bytes: config.snapshot_input_bytes,
        }
    }
}

/// Why this node does not send a message through Redis.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than `max_message_bytes`.
    TooLarge { bytes: usize, max: usize },
    /// Over the node's buckets: retry after this long.
    RateLimited { retry_after_ms: u64 },
    /// The receiving node's inbox is full of messages it has not read yet (they are kept,
    /// this one is not sent): retry after this long.
    Behind { retry_after_ms: u64 },
}

impl Refusal {
    /// The error frame the sender gets.
    pub fn frame(&self, request_id: Option<String>) -> convene_core::wire::Frame {
        use convene_signaling::{ErrorCode, ServerMessage};
        let (code, message, retry_after_ms) = match self {
            Refusal::TooLarge { bytes, max } => (
                ErrorCode::InvalidArgument,
                format!("this command is {bytes} bytes; at most {max} cross to the room's node"),
                None,
            ),
            Refusal::RateLimited { retry_after_ms } => (
                ErrorCode::RateLimited,
                "slow down: this server is sending too much to the cluster".to_string(),
                Some(*retry_after_ms),
            ),
            Refusal::Behind { retry_after_ms } => (
                ErrorCode::RateLimited,
                "the room's media node is behind on its messages; retry shortly".to_string(),
                Some(*retry_after_ms),
            ),
        };
        convene_core::room::actor::frame(&ServerMessage::Error {
            request_id,
            code,
            message,
            retry_after_ms,
        })
    }
}

/// The node's token buckets for what its sessions send through Redis.
pub(super) struct NodeBudget {
    pub(super) messages: crate::bucket::TokenBucket,
    pub(super) bytes: crate::bucket::TokenBucket,
}
