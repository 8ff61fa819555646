//! `convene load sfu`: str0m client peers subscribing to one stream, reporting packets, loss and time to first packet.

use super::LoadError;

#[derive(clap::Args, Debug)]
pub struct SfuArgs {}

pub async fn run(_args: SfuArgs) -> Result<(), LoadError> {
    Err(LoadError::Setup("load sfu is being built".into()))
}
