//! The `convene` command: `serve` and `token` (the load tools are `convene-load`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use convene::auth::{parse_ttl, TokenKeys};
use convene::config::Config;
use convene::http::Server;
use convene_signaling::Role;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "convene",
    version,
    about = "Live virtual convenings: webcasts, moderated Q&A and breakouts"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (one node, in-process bus, unless configured otherwise).
    Serve {
        /// A TOML file merged over the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print an access token and a join URL.
    Token {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        room: String,
        /// host, moderator, presenter or participant.
        #[arg(long)]
        role: Role,
        #[arg(long)]
        name: String,
        /// Stable identity; defaults to a new random one.
        #[arg(long)]
        identity: Option<String>,
        /// Token attributes, e.g. --attr team="Knox County" (repeatable).
        #[arg(long = "attr", value_parser = parse_attr)]
        attrs: Vec<(String, String)>,
        /// Lifetime, e.g. 90m, 2h, 7d.
        #[arg(long, default_value = "2h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
}

fn parse_attr(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {text:?}"))?;
    if key.is_empty() {
        return Err("attribute key is empty".into());
    }
    Ok((key.to_string(), value.to_string()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve { config } => serve(config),
        Cmd::Token {
            config,
            room,
            role,
            name,
            identity,
            attrs,
            ttl,
        } => {
            let config = Config::load(config.as_deref())?;
            if config.auth.jwt_secret.is_empty() {
                bail!("no JWT secret configured: set CONVENE_JWT_SECRET (or auth.jwt_secret) for both `serve` and `token`");
            }
            let keys = TokenKeys::new(config.auth.jwt_secret.as_bytes());
            let identity = identity.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let attrs: BTreeMap<String, String> = attrs.into_iter().collect();
            let claims = convene::auth::Claims {
                sub: identity,
                name,
                room,
                role,
                exp: convene::auth::unix_now() + ttl.as_secs(),
                attrs,
                nbf: None,
                jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            };
            // Refuse now what the server would refuse at every use.
            if let Err(why) = claims.check() {
                bail!("this token would be refused: {why}");
            }
            let token = keys.mint(&claims);
            let base = config.public_url(config.server.listen);
            // The only output is for the caller to pipe or click: stdout is the interface here.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{token}")?;
            writeln!(out, "{base}/?token={token}")?;
            Ok(())
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    tracing::subscriber::set_global_default(convene::logging::subscriber(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        std::io::stdout,
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
    ))
    .context("installing the log subscriber")?;
    let mut config = Config::load(config_path.as_deref()).context("loading configuration")?;
    let generated = config.auth.jwt_secret.is_empty();
    if generated {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        config.auth.jwt_secret = bytes.iter().map(|b| format!("{b:02x}")).collect();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = Server::start(config).await.context("starting the server (listen address, TLS certificate)")?;
        let base = server.state.config.public_url(server.addr);
        tracing::info!(addr = %server.addr, "convene listening; browser client at {base}/");
        if generated {
            let keys = &server.state.keys;
            let token = keys.mint_for("demo", Role::Host, "host", "Host", BTreeMap::new(), std::time::Duration::from_secs(12 * 3600));
            tracing::warn!("no JWT secret configured: generated one for this run (set CONVENE_JWT_SECRET to keep tokens across restarts)");
            tracing::info!("join room \"demo\" as host: {base}/?token={token}");
        }
        shutdown_signal().await;
        tracing::info!("shutting down: telling sessions to reconnect");
        server.shutdown().await;
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
