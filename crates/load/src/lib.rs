//! Load tools: real WebSocket and WebRTC clients that drive a running server and print figures.
//!
//! `convene-load chat|votes` drives the signaling hub (see `chat/`), `convene-load failover`
//! kills a cluster's room owner under traffic (see `failover/`); `convene-load sfu`
//! drives the media path with str0m client peers (see `sfu/`); `convene-load udp-floor`
//! measures the kernel's share of sending a datagram (see `floor.rs`), and `tcp-floor` the
//! kernel's share of writing a frame to a session socket (see `tcp_floor.rs`). `probe.rs` reads CPU
//! and memory from `/proc` for chat, votes, sfu and udp-floor; `report` times a convening's
//! report from a synthetic record (see `report.rs`).
#![forbid(unsafe_code)]

pub mod chat;
pub mod failover;
pub mod floor;
mod probe;
pub mod redis_info;
pub mod report;
pub mod sfu;
pub mod tcp_floor;

/// A load run that could not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Setup(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(clap::Subcommand)]
pub enum LoadCommand {
    /// N WebSocket clients in one room, K of them sending chat at M msgs/s in total.
    Chat(chat::ChatArgs),
    /// N WebSocket clients upvoting the same questions.
    Votes(chat::VotesArgs),
    /// Chat through a cluster, kill -9 the room's owner node, time the recovery and count losses.
    Failover(failover::FailoverArgs),
    /// WebRTC subscribers (str0m peers) of one published stream.
    Sfu(sfu::SfuArgs),
    /// Plain UDP datagrams to N sockets: the kernel's CPU per datagram, the SFU's floor.
    UdpFloor(floor::FloorArgs),
    /// A convening's report generated from a synthetic record (5,000 people, 3 hours) in SQLite.
    Report(report::ReportArgs),
    /// One frame per message to N loopback TCP sockets, no hub: the kernel's CPU per delivery, the hub's floor.
    TcpFloor(tcp_floor::TcpFloorArgs),
}

pub async fn run(command: LoadCommand) -> Result<(), LoadError> {
    match command {
        LoadCommand::Chat(args) => chat::run_chat(args).await,
        LoadCommand::Votes(args) => chat::run_votes(args).await,
        LoadCommand::Failover(args) => failover::run(args).await,
        LoadCommand::Sfu(args) => sfu::run(args).await,
        LoadCommand::UdpFloor(args) => floor::run(args).await,
        LoadCommand::TcpFloor(args) => tcp_floor::run(args).await,
        LoadCommand::Report(args) => report::run(args).await,
    }
}
