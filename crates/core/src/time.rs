//! Wall-clock readings for the edges that stamp inputs; rooms themselves take time as an input.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

pub fn unix_now_ms() -> u64 {
    unix_now_us() / 1000
}

pub fn unix_now() -> u64 {
    unix_now_us() / 1_000_000
}
