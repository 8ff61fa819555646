//! The `convene-load` command: drives a running server with real clients and prints figures.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "convene-load",
    version,
    about = "Load tools for Convene: real clients against a running server"
)]
struct Cli {
    #[command(subcommand)]
    tool: convene_load::LoadCommand,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(convene_load::run(cli.tool))?;
    Ok(())
}
