//! The synthetic stream a `--publish synthetic` run sends: VP8 frames of filler bytes at 30 fps and Opus-sized audio.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{MediaTime, Mid};
use str0m::Rtc;

pub(super) const KEYFRAME_EVERY: u32 = 60;
const FPS: u32 = 30;
const AUDIO_PER_S: u32 = 50;
const AUDIO_BYTES: usize = 120;

/// The synthetic VP8 + Opus source.
pub(super) struct Synthetic {
    pub(super) video: Mid,
    pub(super) audio: Mid,
    key: Arc<[u8]>,
    delta: Arc<[u8]>,
    opus: Arc<[u8]>,
    pub(super) started: Option<Instant>,
    next_video: u64,
    next_audio: u64,
    pub(super) want_keyframe: bool,
    frames: Arc<AtomicU64>,
    /// RTP packets sent (retransmissions included).
    pub(super) packets: Arc<AtomicU64>,
}

impl Synthetic {
    pub(super) fn new(bitrate_kbps: u64, frames: Arc<AtomicU64>, packets: Arc<AtomicU64>) -> Self {
        let audio_bps = u64::from(AUDIO_PER_S) * AUDIO_BYTES as u64 * 8;
        let video_bps = (bitrate_kbps * 1000).saturating_sub(audio_bps).max(100_000);
        // A keyframe every KEYFRAME_EVERY frames, four times the size of a delta frame.
        let per_frame = video_bps / 8 / u64::from(FPS);
        let delta =
            (per_frame * u64::from(KEYFRAME_EVERY) / u64::from(KEYFRAME_EVERY + 3)) as usize;
        Synthetic {
            video: Mid::from("1"),
            audio: Mid::from("0"),
            key: vp8_frame(true, delta * 4).into(),
            delta: vp8_frame(false, delta).into(),
            opus: vec![0xfc; AUDIO_BYTES].into(),
            started: None,
            next_video: 0,
            next_audio: 0,
            want_keyframe: true,
            frames,
            packets,
        }
    }

    pub(super) fn due(&self) -> Option<Instant> {
        let s = self.started?;
        let v = s + Duration::from_micros(self.next_video * 1_000_000 / u64::from(FPS));
        let a = s + Duration::from_micros(self.next_audio * 1_000_000 / u64::from(AUDIO_PER_S));
        Some(v.min(a))
    }

    /// Writes every frame that is due by `now`.
    pub(super) fn write_due(&mut self, rtc: &mut Rtc, now: Instant) {
        let Some(start) = self.started else {
            return;
        };
        let elapsed = now.saturating_duration_since(start).as_micros() as u64;
        while self.next_video * 1_000_000 / u64::from(FPS) <= elapsed {
            let n = self.next_video;
            self.next_video += 1;
            let key = self.want_keyframe || n.is_multiple_of(u64::from(KEYFRAME_EVERY));
            self.want_keyframe = false;
            let data = if key {
                self.key.clone()
            } else {
                self.delta.clone()
            };
            let time = MediaTime::new(
                n * 90_000 / u64::from(FPS),
                str0m::media::Frequency::NINETY_KHZ,
            );
            if write(rtc, self.video, Codec::Vp8, now, time, data) {
                // The frame index (not a count): its rate is the frame rate, and its phase
                // tells where the periodic keyframes are.
                self.frames.store(n + 1, Ordering::Relaxed);
            }
        }
        while self.next_audio * 1_000_000 / u64::from(AUDIO_PER_S) <= elapsed {
            let n = self.next_audio;
            self.next_audio += 1;
            let time = MediaTime::new(
                n * 48_000 / u64::from(AUDIO_PER_S),
                str0m::media::Frequency::FORTY_EIGHT_KHZ,
            );
            write(rtc, self.audio, Codec::Opus, now, time, self.opus.clone());
        }
    }
}

fn write(
    rtc: &mut Rtc,
    mid: Mid,
    codec: Codec,
    now: Instant,
    time: MediaTime,
    data: Arc<[u8]>,
) -> bool {
    let Some(w) = rtc.writer(mid) else {
        return false;
    };
    let Some(pt) = w
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
    else {
        return false;
    };
    w.write(pt, now, time, data).is_ok()
}

/// A VP8 frame of `len` bytes: a valid frame tag (and keyframe start code and size), then filler.
fn vp8_frame(key: bool, len: usize) -> Vec<u8> {
    let len = len.max(16);
    let mut f = vec![0u8; len];
    // Frame tag: bit 0 frame type (0 = key), bits 1-3 version 0, bit 4 show_frame,
    // bits 5-23 size of the first partition (here: a fixed 64 bytes).
    let tag: u32 = u32::from(!key) | (1 << 4) | (64 << 5);
    f[0] = tag as u8;
    f[1] = (tag >> 8) as u8;
    f[2] = (tag >> 16) as u8;
    if key {
        f[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        f[6..8].copy_from_slice(&640u16.to_le_bytes());
        f[8..10].copy_from_slice(&360u16.to_le_bytes());
    }
    for (i, b) in f.iter_mut().enumerate().skip(10) {
        *b = (i as u8).wrapping_mul(31) ^ 0x5a;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_frames_mark_keyframes_in_bit_zero() {
        assert_eq!(vp8_frame(true, 100)[0] & 1, 0);
        assert_eq!(vp8_frame(false, 100)[0] & 1, 1);
        assert_eq!(&vp8_frame(true, 100)[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(vp8_frame(false, 7000).len(), 7000);
    }
}
