//! Why the server closes a socket: WebSocket close codes and reasons.

/// Why the server closes a socket: a WebSocket close code and reason, one mapping for the whole server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    pub const GOING_AWAY: CloseReason = CloseReason {
        code: 1001,
        reason: "going away",
    };
    /// The client broke the WebSocket protocol (unmasked frame, reserved bits, bad opcode).
    pub const PROTOCOL_ERROR: CloseReason = CloseReason {
        code: 1002,
        reason: "protocol error",
    };
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: CloseReason = CloseReason {
        code: 1007,
        reason: "text frame is not valid UTF-8",
    };
    pub const POLICY: CloseReason = CloseReason {
        code: 1008,
        reason: "too many refused messages",
    };
    pub const TOO_BIG: CloseReason = CloseReason {
        code: 1009,
        reason: "message too big",
    };
    pub const RESTARTING: CloseReason = CloseReason {
        code: 1012,
        reason: "server restarting",
    };
    /// Fell behind the room's events; the client may resume.
    pub const SLOW: CloseReason = CloseReason {
        code: 1013,
        reason: "too slow reading events; resume",
    };
    pub const IDLE: CloseReason = CloseReason {
        code: 4000,
        reason: "idle timeout",
    };
    pub const REMOVED: CloseReason = CloseReason {
        code: 4001,
        reason: "removed from the room",
    };
    pub const REPLACED: CloseReason = CloseReason {
        code: 4002,
        reason: "session resumed elsewhere",
    };
    pub const REFUSED: CloseReason = CloseReason {
        code: 4003,
        reason: "refused",
    };
    /// The same identity joined the room again (another tab, window or device): one live
    /// session per identity per room, so this one yields. The client must not reconnect.
    pub const SESSION_REPLACED: CloseReason = CloseReason {
        code: 4004,
        reason: "session_replaced: you joined from another window",
    };
    /// The access token this session joined with was revoked.
    pub const REVOKED: CloseReason = CloseReason {
        code: 4005,
        reason: "token_revoked",
    };
}
