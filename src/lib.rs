//! Convene: live virtual convenings (launch webcasts with moderated Q&A, peer exchanges in breakouts) in one binary.
//!
//! # Layout
//! - [`config`]: `config/default.toml` embedded, a file merged over it, environment overrides.
//! - [`auth`]: HS256 access tokens naming identity, room, role and attributes.
//! - [`http`]: the edge: `/ws`, health, metrics, the embedded client, `/api/v1`.
//! - [`session`]: one task pair per socket: parsing, limits, the outbound path, resume.
//! - [`room`]: the pure `RoomState` (members, stage, chat, Q&A, breakouts) and its actor.
//! - [`bus`]: fan-out of sequenced events (in-process; Redis later) and the event log for resume.
//! - [`media`]: glue between sessions, rooms and the SFU.
//! - [`sfu`]: the selective forwarding unit on str0m: tracks, peers, groups; no rooms.
//! - [`turn`]: short-lived credentials for the TURN relay (coturn), for `welcome` and WHIP/WHEP.
//! - [`load`]: load tools that drive a real server.
//!
//! Data flows one way: socket -> session -> room actor -> event log + bus -> sessions -> sockets.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bus;
pub mod config;
pub mod http;
pub mod load;
pub mod media;
pub mod room;
pub mod session;
pub mod sfu;
pub mod turn;
