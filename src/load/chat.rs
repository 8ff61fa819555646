//! `convene load chat` and `convene load votes`: many WebSocket sessions in one room, with latency histograms.

use super::LoadError;

#[derive(clap::Args, Debug)]
pub struct ChatArgs {}

#[derive(clap::Args, Debug)]
pub struct VotesArgs {}

pub async fn run_chat(_args: ChatArgs) -> Result<(), LoadError> {
    Err(LoadError::Setup("load chat is being built".into()))
}

pub async fn run_votes(_args: VotesArgs) -> Result<(), LoadError> {
    Err(LoadError::Setup("load votes is being built".into()))
}
