//! `convene-load chat` and `convene-load votes`: many WebSocket sessions in one room, with latency histograms.
//!
//! Layout:
//! - [`ChatArgs`] / [`chat`] (`scenario_chat.rs`): N sessions, K of them sending chat at M
//!   msgs/s in total. Each message carries its send time (`t=<unix nanos>`); every receiver
//!   (same process, same clock) records the delivery latency. `--scenario idle` only holds the
//!   sessions (server RSS per session), `--scenario resume` (`scenario_resume.rs`) drops them
//!   all without close frames and times their concurrent resume.
//! - `--target socketio` speaks Engine.IO v4 / Socket.IO 4 over the same WebSocket client, for the
//!   hub in `tests/peers/socketio-hub.js`, so both servers are measured by one tool in one run.
//! - [`VotesArgs`] / [`votes`] (`votes.rs`): N sessions upvote the same open questions; acks,
//!   time until all acked, and the exact final counts an observer sees.
//! - `client.rs` opens sessions, `frames.rs` reads and writes the frames, `samples.rs` gathers
//!   counters and histograms across sessions, `report.rs` holds the figures and their text;
//!   `crate::probe` reads CPU and RSS of this process and, with `--server-pid`, the server's.
//!
//! The receive path does not parse JSON: it reads the `seq` prefix and the `"text":"t=` stamp.

use std::ffi::OsString;

use serde::Serialize;

use super::LoadError;

pub(crate) mod client;
pub(crate) mod frames;
mod report;
pub(crate) mod samples;
mod scenario_chat;
mod scenario_resume;
mod votes;

pub use self::report::{
    ChatReport, Latency, NodeSplit, QuestionFigures, ResumeFigures, VotesReport,
};
pub use self::scenario_chat::chat;
pub use self::votes::votes;
pub use crate::probe::{IdleFigures, ToolUsage, Usage};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Convene's `/ws` protocol, with minted access tokens.
    Convene,
    /// Socket.IO 4 (Engine.IO v4 over WebSocket), for `tests/peers/socketio-hub.js`.
    Socketio,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// K senders, M msgs/s in total, delivery latency at every receiver.
    Chat,
    /// Connect and hold N sessions: RSS per session (needs --server-pid).
    Idle,
    /// Connect N, drop them all without close frames, resume them all at once (Convene only).
    Resume,
}

/// Options every hub scenario shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The server's base URL, e.g. ws://127.0.0.1:8080 (http:// works too); several, comma
    /// separated, spread the sessions round-robin over the nodes of a cluster.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// The room every session joins.
    #[arg(long, default_value = "load")]
    pub room: String,
    /// Sessions to open.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 1000.0)]
    pub ramp_per_sec: f64,
    /// Handshakes in flight at once while ramping up.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// The server's HS256 secret, to mint tokens; defaults to $CONVENE_JWT_SECRET.
    #[arg(long)]
    pub secret: Option<String>,
    /// Pause after everyone connected, before measuring, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// The server's process id: report its CPU per delivery and its RSS (read from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions that send chat (the first K).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Chat messages per second, all senders together.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of sending (chat), or of holding (idle).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Pad each chat text to about this many bytes.
    #[arg(long, default_value_t = 0)]
    pub size: usize,
    #[arg(long, value_enum, default_value_t = Target::Convene)]
    pub target: Target,
    #[arg(long, value_enum, default_value_t = Scenario::Chat)]
    pub scenario: Scenario,
    /// Resume scenario: wait this long between dropping the sockets and reconnecting.
    #[arg(long, default_value_t = 500)]
    pub resume_pause_ms: u64,
    /// A Redis (host:port or redis://host:port) whose commands and bytes over the window are
    /// reported (INFO stats and commandstats), e.g. the cluster's.
    #[arg(long)]
    pub redis: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct VotesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Questions to ask (open Q&A); every client upvotes every one.
    #[arg(long, default_value_t = 5)]
    pub questions: usize,
    /// Questions one asker may ask (the server's `questions_per_minute`); more askers join as needed.
    #[arg(long, default_value_t = 5)]
    pub questions_per_asker: usize,
    /// Give up waiting for acks after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

impl ChatArgs {
    /// Parses command-line style arguments (without the subcommand), e.g. for in-process tests.
    pub fn from_args<I, T>(args: I) -> Result<ChatArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        parse_flattened("chat", args)
    }
}

impl VotesArgs {
    /// Parses command-line style arguments (without the subcommand), e.g. for in-process tests.
    pub fn from_args<I, T>(args: I) -> Result<VotesArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        parse_flattened("votes", args)
    }
}

/// Parses `args` as if they followed the subcommand `name`.
fn parse_flattened<A, I, T>(name: &'static str, args: I) -> Result<A, clap::Error>
where
    A: clap::Args + clap::FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let command = A::augment_args(clap::Command::new(name));
    let matches = command.try_get_matches_from(
        std::iter::once(OsString::from(name)).chain(args.into_iter().map(Into::into)),
    )?;
    A::from_arg_matches(&matches)
}

pub(crate) fn check_common(common: &Common) -> Result<(), LoadError> {
    if common.clients == 0 {
        return Err(LoadError::Setup("--clients must be at least 1".into()));
    }
    if common.connect_concurrency == 0 {
        return Err(LoadError::Setup(
            "--connect-concurrency must be at least 1".into(),
        ));
    }
    Ok(())
}

// --- Entry points ------------------------------------------------------------------

pub async fn run_chat(args: ChatArgs) -> Result<(), LoadError> {
    let report = chat(&args).await?;
    if args.common.json {
        print_out(&serde_json::to_string(&report).expect("reports serialise"));
    } else {
        print_out(&report::chat_text(&report));
    }
    match report.scenario {
        Scenario::Chat if report.delivered == 0 => {
            Err(LoadError::Setup("no chat message was delivered".into()))
        }
        Scenario::Idle if report.connected == 0 => {
            Err(LoadError::Setup("no session connected".into()))
        }
        Scenario::Resume if report.resume.as_ref().is_none_or(|r| r.resumed == 0) => {
            Err(LoadError::Setup("no session resumed".into()))
        }
        _ => Ok(()),
    }
}

pub async fn run_votes(args: VotesArgs) -> Result<(), LoadError> {
    let report = votes(&args).await?;
    if args.common.json {
        print_out(&serde_json::to_string(&report).expect("reports serialise"));
    } else {
        print_out(&report::votes_text(&report));
    }
    if report.votes_acked == 0 {
        return Err(LoadError::Setup("no vote was acknowledged".into()));
    }
    if !report.exact {
        return Err(LoadError::Setup(format!(
            "final vote counts differ from {} clients",
            report.clients
        )));
    }
    Ok(())
}

pub(crate) fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_with_defaults() {
        let a = ChatArgs::from_args([
            "--clients",
            "5",
            "--target",
            "socketio",
            "--scenario",
            "idle",
        ])
        .unwrap();
        assert_eq!(
            (a.common.clients, a.target, a.scenario, a.senders),
            (5, Target::Socketio, Scenario::Idle, 10)
        );
        let v = VotesArgs::from_args(["--questions", "3"]).unwrap();
        assert_eq!(v.questions, 3);
    }
}
