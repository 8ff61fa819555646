//! WebVTT (W3C) from a convening's final caption lines: one cue per line, on the stage's clock.

use convene_signaling::Caption;

/// A cue shorter than this is stretched, so a line typed at once is still readable.
const MIN_CUE_MS: u64 = 1_000;

fn timestamp(ms: u64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    format!("{h:02}:{m:02}:{:02}.{:03}", rest / 1000, rest % 1000)
}

/// Cue text: no blank line or `-->` can end the cue early, and `<`/`&` cannot open markup.
fn escape(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The WebVTT file of these captions, in order; the speaker, when known, as a voice span.
pub fn render(captions: &[Caption]) -> String {
    let mut out = String::from("WEBVTT\n");
    for c in captions.iter().filter(|c| c.is_final) {
        let end = c.end_ms.max(c.start_ms + MIN_CUE_MS);
        let text = match &c.speaker {
            Some(speaker) => format!("<v {}>{}", escape(speaker), escape(&c.text)),
            None => escape(&c.text),
        };
        out.push_str(&format!(
            "\n{}\n{} --> {}\n{}\n",
            c.id,
            timestamp(c.start_ms),
            timestamp(end),
            text
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use convene_signaling::CaptionSource;

    #[test]
    fn cues_are_timed_escaped_and_voiced() {
        let line = |id, speaker: Option<&str>, text: &str, start_ms, end_ms| Caption {
            id,
            source: CaptionSource::Human,
            speaker: speaker.map(Into::into),
            text: text.into(),
            is_final: true,
            start_ms,
            end_ms,
        };
        let vtt = render(&[
            line(1, Some("Ana"), "Welcome to the launch.", 0, 2_500),
            line(2, None, "a <b> & c --> d\n\ne", 3_723_004, 3_723_004),
        ]);
        assert_eq!(
            vtt,
            "WEBVTT\n\n1\n00:00:00.000 --> 00:00:02.500\n<v Ana>Welcome to the launch.\n\n\
             2\n01:02:03.004 --> 01:02:04.004\na &lt;b&gt; &amp; c --&gt; d e\n"
        );
    }
}
