//! The numbered chat commands of the failover run, and reading their numbers back from events and replies.

use crate::chat::frames::{leading_u64, unix_nanos};

/// The `r=<n>` request number in a relayed chat message.
pub(super) fn request_number(text: &str) -> Option<u64> {
    const KEY: &str = "\"text\":\"t=";
    let rest = &text[text.find(KEY)? + KEY.len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    leading_u64(rest.strip_prefix(" r=")?)
}

/// A chat command with request id `r<n>` whose text carries the number too.
pub(super) fn command(n: u64) -> String {
    format!(
        r#"{{"type":"send_chat","request_id":"r{n}","text":"t={} r={n}"}}"#,
        unix_nanos()
    )
}

/// The `r<n>` in an `ack` or `error` reply.
pub(super) fn reply_number(text: &str) -> Option<u64> {
    const KEY: &str = r#""request_id":"r"#;
    leading_u64(&text[text.find(KEY)? + KEY.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_back() {
        let event = r#"{"type":"event","seq":9,"event":{"type":"chat_message","message":{"id":1,"text":"t=123 r=42","at":1}}}"#;
        assert_eq!(request_number(event), Some(42));
        assert_eq!(request_number(r#"{"text":"t=123 n=1"}"#), None);
        assert_eq!(
            reply_number(r#"{"type":"ack","request_id":"r17","id":3}"#),
            Some(17)
        );
        assert_eq!(reply_number(r#"{"type":"ack","request_id":"q17"}"#), None);
        let cmd = command(5);
        assert_eq!(reply_number(&cmd), Some(5));
        assert!(cmd.contains(" r=5\""));
    }
}
