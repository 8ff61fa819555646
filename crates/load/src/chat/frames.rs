//! What the load tool reads from and writes into frames without parsing JSON: send stamps, sequence numbers, chat text.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Target;

pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// The digits at the start of `text`.
pub(crate) fn leading_u64(text: &str) -> Option<u64> {
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

/// The send time embedded in a relayed chat message (`"text":"t=<nanos>`), either protocol.
pub(crate) fn stamp(text: &str) -> Option<u64> {
    const KEY: &str = "\"text\":\"t=";
    let at = text.find(KEY)?;
    leading_u64(&text[at + KEY.len()..])
}

/// The sender's node in a relayed chat message: the `n=<node>` after the stamp.
pub(super) fn stamp_node(text: &str) -> Option<usize> {
    const KEY: &str = "\"text\":\"t=";
    let rest = &text[text.find(KEY)? + KEY.len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    leading_u64(rest.strip_prefix(" n=")?).map(|n| n as usize)
}

/// A chat frame carrying its send time and the sender's node.
pub(super) fn chat_frame(target: Target, node: usize, pad: &str) -> String {
    let t = unix_nanos();
    match target {
        Target::Convene => format!(r#"{{"type":"send_chat","text":"t={t} n={node}{pad}"}}"#),
        Target::Socketio => format!(r#"42["chat",{{"text":"t={t} n={node}{pad}"}}]"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_in_both_protocols() {
        let convene = r#"{"type":"event","seq":42,"event":{"type":"chat_message","message":{"id":1,"from":"a","name":"A","text":"t=1700000000123456789 xx","at":1,"breakout":null}}}"#;
        assert_eq!(stamp(convene), Some(1_700_000_000_123_456_789));
        assert_eq!(
            convene
                .strip_prefix(r#"{"type":"event","seq":"#)
                .and_then(leading_u64),
            Some(42)
        );
        let sio =
            r#"42["chat",{"id":3,"from":"x","name":"c1","text":"t=17 ","at":5,"breakout":null}]"#;
        assert_eq!(stamp(sio), Some(17));
        assert_eq!(stamp_node(sio), None);
        let from_node = r#"42["chat",{"id":3,"text":"t=17 n=2 xx"}]"#;
        assert_eq!(
            (stamp(from_node), stamp_node(from_node)),
            (Some(17), Some(2))
        );
        assert_eq!(stamp_node(&chat_frame(Target::Convene, 1, " x")), Some(1));
        assert_eq!(stamp(r#"{"type":"pong"}"#), None);
    }
}
