//! Token buckets per command class, so one chatty or abusive client cannot flood a room.

use convene_signaling::Command;
use tokio::time::Instant;

use crate::config::{Bucket, RateLimits};

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

#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    per_second: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(config: Bucket, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(config.burst),
            per_second: config.per_second.max(0.001),
            burst: f64::from(config.burst.max(1)),
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    fn take(&mut self, now: Instant) -> Result<(), u64> {
        self.take_n(1.0, now)
    }

    /// Takes `n` tokens (at most a burst's worth), or says how long until they are there.
    pub fn take_n(&mut self, n: f64, now: Instant) -> Result<(), u64> {
        let n = n.min(self.burst);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = now;
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err((((n - self.tokens) / self.per_second) * 1000.0).ceil() as u64)
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
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            Bucket {
                per_second: 2.0,
                burst: 3,
            },
            start,
        );
        for _ in 0..3 {
            bucket.take(start).unwrap();
        }
        let retry = bucket.take(start).unwrap_err();
        assert_eq!(retry, 500);
        bucket.take(start + Duration::from_millis(500)).unwrap();
        assert!(bucket.take(start + Duration::from_millis(500)).is_err());
        // Refill caps at the burst.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            bucket.take(later).unwrap();
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn a_byte_bucket_takes_sizes() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            Bucket {
                per_second: 1000.0,
                burst: 4000,
            },
            start,
        );
        bucket.take_n(3000.0, start).unwrap();
        assert_eq!(bucket.take_n(2000.0, start), Err(1000));
        bucket.take_n(2000.0, start + Duration::from_secs(1)).unwrap();
        // More than a burst costs a whole burst: it passes a full bucket, and only that.
        let later = start + Duration::from_secs(60);
        bucket.take_n(10_000.0, later).unwrap();
        assert!(bucket.take_n(1.0, later).is_err());
    }

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
