//! Convene: live virtual convenings (launch webcasts with moderated Q&A, peer exchanges in breakouts) in one binary.
//!
//! # Layout
//! - [`config`]: `config/default.toml` embedded, a file merged over it, environment overrides.
//! - [`auth`]: HS256 access tokens naming identity, room, role and attributes.
//! - [`http`]: the edge: `/ws`, health, metrics, the embedded client, `/api/v1`.
//! - [`wire`]: the neutral layer below room, session and bus: envelopes, audiences, places,
//!   session effects, lanes, and the `SessionSink` seam rooms deliver through.
//! - [`session`]: one task pair per socket: parsing, limits, the outbound path, resume; and
//!   the hub, this node's `SessionSink`.
//! - [`room`]: the pure `RoomState` (members, stage, chat, Q&A, breakouts) and its actor.
//! - [`bus`]: this node's lanes of sequenced envelopes and the event log for resume.
//! - [`media`]: glue between sessions, rooms and the SFU.
//! - [`sfu`]: the selective forwarding unit on str0m: tracks, peers, groups; no rooms.
//! - [`turn`]: short-lived TURN credentials for `welcome` and WHIP/WHEP, and the embedded
//!   relay that reaches only the SFU (or coturn beside it).
//! - [`load`]: load tools that drive a real server.
//! - [`metrics`]: Prometheus metrics the parts record into, and the `/metrics` text.
//! - [`convenings`]: scheduled convenings: stored plans, the lobby, the host's start and end.
//! - [`webhooks`]: signed, retried POSTs of room events to configured URLs.
//! - [`logging`]: the log format, with control characters in fields escaped.
//!
//! Data flows one way: socket -> session -> room actor -> event log + sink (lanes) -> sessions -> sockets.
//! `room` never imports `session`, and `bus` never imports `room` (`tests/layering.rs`).
#![forbid(unsafe_code)]

pub use convene_core::{bus, room, wire};
pub use convene_sfu as sfu;

pub mod auth;
pub mod bucket;
pub mod captions;
pub mod cluster;
pub mod config;
pub mod convenings;
pub mod durable;
pub mod hooks;
pub mod http;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod outbox;
pub mod record;
pub mod revocation;
pub mod session;
pub mod turn;
pub mod webhooks;
