//! Convene's core: rooms and how their events travel, with no sockets, no Redis and time passed in.
//!
//! # Layout
//! - [`wire`]: the neutral layer: envelopes, audiences, places, session effects, lanes, and
//!   the [`wire::SessionSink`] seam rooms deliver through.
//! - [`bus`]: a node's lanes of sequenced envelopes and the event log for resume.
//! - [`room`]: the pure `RoomState` (members, stage, chat, Q&A, polls, breakouts), the
//!   `RoomCore` that sequences its events, the actor that runs it on one node, and the
//!   [`room::registry::Rooms`] that finds a room, started by a [`room::registry::RoomStarter`]
//!   the server chooses (local actor or cluster link).
//!
//! What the room tells the node around it (metrics, webhooks, relay credentials) goes
//! through [`room::actor::RoomHooks`], which the server implements.
#![forbid(unsafe_code)]

pub mod bus;
pub mod room;
pub mod time;
pub mod wire;
