//! Token buckets: so many at once, refilled at a steady rate (commands, bytes).

use tokio::time::Instant;

use crate::config::Bucket;

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
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
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
        bucket
            .take_n(2000.0, start + Duration::from_secs(1))
            .unwrap();
        // More than a burst costs a whole burst: it passes a full bucket, and only that.
        let later = start + Duration::from_secs(60);
        bucket.take_n(10_000.0, later).unwrap();
        assert!(bucket.take_n(1.0, later).is_err());
    }
}
