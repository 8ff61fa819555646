//! Live captions on the stage: the caption record every source produces (a human captioner, a captioning service, the recognizer) and its limits.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Hard ceiling on one caption's text, in characters, whatever the configuration says
/// (a line being typed or recognised is a sentence or two).
pub const MAX_CAPTION_CHARS: usize = 1_000;

/// Who wrote a caption.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CaptionSource {
    /// A person the host granted the caption right (CART).
    Human,
    /// A captioning service posting to the convening's caption endpoint.
    Service,
    /// The speech recognizer on the node where the stage's media is.
    Auto,
}

/// One caption line. Partials (`final: false`) are replaced by later ones with the same
/// `id`, and finally by the line with `final: true`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Caption {
    /// Partials and their final share it; ids grow within a convening.
    pub id: u64,
    pub source: CaptionSource,
    /// Who is speaking, when the source says (a captioner's label, a stage member's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    pub text: String,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// On the stage's clock: milliseconds since the convening's first caption began.
    pub start_ms: u64,
    pub end_ms: u64,
}
