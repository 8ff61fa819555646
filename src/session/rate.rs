//! Token buckets per command class, so one chatty or abusive client cannot flood a room.

use convene_signaling::Command;
use tokio::time::Instant;

use crate::bucket::TokenBucket;
use crate::config::RateLimits;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandClass {
    Chat,
    Qa,
    Hands,
    Signaling,
    Other,
}

impl CommandClass {
    pub fn of(cmd: &Command) -> CommandClass {
        use Command::*;
        match cmd {
            SendChat { .. } | DeleteChat { .. } | BroadcastToBreakouts { .. } => CommandClass::Chat,
            AskQuestion { .. }
            | WithdrawQuestion { .. }
            | Upvote { .. }
            | RemoveUpvote { .. }
            | ApproveQuestion { .. }
            | DismissQuestion { .. }
            | RestoreQuestion { .. }
            | EditQuestion { .. }
            | SetLiveQuestion { .. }
            | AnswerQuestion { .. }
            | ReopenQuestion { .. }
            | MarkDuplicate { .. } => CommandClass::Qa,
            RaiseHand | LowerHand { .. } | AskForHelp => CommandClass::Hands,
            RtcOffer { .. }
            | RtcAnswer { .. }
            | RtcCandidate { .. }
            | Unpublish { .. }
            | SetVideoQuality { .. } => CommandClass::Signaling,
            _ => CommandClass::Other,
        }
    }
}

/// One session's buckets.
pub struct RateLimiter {
    chat: TokenBucket,
    qa: TokenBucket,
    hands: TokenBucket,
    signaling: TokenBucket,
    other: TokenBucket,
    bytes: TokenBucket,
}

impl RateLimiter {
    pub fn new(limits: &RateLimits) -> Self {
        let now = Instant::now();
        RateLimiter {
            chat: TokenBucket::new(limits.chat, now),
            qa: TokenBucket::new(limits.qa, now),
            hands: TokenBucket::new(limits.hands, now),
            signaling: TokenBucket::new(limits.signaling, now),
            other: TokenBucket::new(limits.other, now),
            bytes: TokenBucket::new(limits.bytes, now),
        }
    }

    /// `Err(retry_after_ms)` when the session sent more bytes than its bucket allows.
    pub fn check_bytes(&mut self, bytes: usize) -> Result<(), u64> {
        self.bytes.take_n(bytes as f64, Instant::now())
    }

    /// `Err(retry_after_ms)` when this class is over its limit.
    pub fn check(&mut self, class: CommandClass) -> Result<(), u64> {
        let now = Instant::now();
        match class {
            CommandClass::Chat => self.chat.take(now),
            CommandClass::Qa => self.qa.take(now),
            CommandClass::Hands => self.hands.take(now),
            CommandClass::Signaling => self.signaling.take(now),
            CommandClass::Other => self.other.take(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_classed() {
        assert_eq!(
            CommandClass::of(&Command::SendChat { text: "x".into() }),
            CommandClass::Chat
        );
        assert_eq!(
            CommandClass::of(&Command::Upvote { question_id: 1 }),
            CommandClass::Qa
        );
        assert_eq!(CommandClass::of(&Command::RaiseHand), CommandClass::Hands);
        assert_eq!(
            CommandClass::of(&Command::RtcOffer { sdp: String::new() }),
            CommandClass::Signaling
        );
        assert_eq!(
            CommandClass::of(&Command::OpenBreakouts),
            CommandClass::Other
        );
    }
}
