//! Pure parts of forwarding: simulcast layer choice, keyframe-request throttling,
//! per-layer bitrate metering, RTP sequence and time rewriting across layer switches,
//! and spotting the first packet of a keyframe in an RTP payload.
//!
//! Nothing here does I/O; time is an argument, so every rule is unit-tested below.

use std::time::{Duration, Instant};

use convene_signaling::VideoQuality;

/// At most one keyframe request per track (and layer) per this interval.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// Coalesces keyframe requests from many subscribers into at most one per
/// [`KEYFRAME_INTERVAL`] for each layer of a track.
#[derive(Debug, Default)]
pub struct KeyframeThrottle {
    // (layer, last sent). A track has at most three layers: a small vec beats a map.
    last: Vec<(Option<str0m::media::Rid>, Instant)>,
}

impl KeyframeThrottle {
    /// True when a request for `rid` may go to the publisher now (and records it).
    pub fn allow(&mut self, rid: Option<str0m::media::Rid>, now: Instant) -> bool {
        match self.last.iter_mut().find(|(r, _)| *r == rid) {
            Some((_, at)) => {
                if now.saturating_duration_since(*at) < KEYFRAME_INTERVAL {
                    false
                } else {
                    *at = now;
                    true
                }
            }
            None => {
                self.last.push((rid, now));
                true
            }
        }
    }
}

/// Bitrate of each simulcast layer of one track, as seen by one worker.
#[derive(Debug, Default)]
pub struct LayerMeter {
    layers: Vec<LayerRate>,
}

#[derive(Debug, Clone, Copy)]
struct LayerRate {
    rid: str0m::media::Rid,
    window_start: Instant,
    window_bytes: u64,
    /// Bits per second over the last full window.
    bps: u64,
    last_seen: Instant,
}

const METER_WINDOW: Duration = Duration::from_millis(1000);
/// A layer not seen for this long is treated as paused (the publisher dropped it).
const LAYER_STALE: Duration = Duration::from_millis(2000);

impl LayerMeter {
    pub fn record(&mut self, rid: str0m::media::Rid, bytes: usize, now: Instant) {
        let layer = match self.layers.iter_mut().position(|l| l.rid == rid) {
            Some(i) => &mut self.layers[i],
            None => {
                self.layers.push(LayerRate {
                    rid,
                    window_start: now,
                    window_bytes: 0,
                    bps: 0,
                    last_seen: now,
                });
                let last = self.layers.len() - 1;
                &mut self.layers[last]
            }
        };
        layer.window_bytes += bytes as u64;
        layer.last_seen = now;
        let elapsed = now.saturating_duration_since(layer.window_start);
        if elapsed >= METER_WINDOW {
            layer.bps = layer.window_bytes * 8 * 1000 / (elapsed.as_millis().max(1) as u64);
            layer.window_bytes = 0;
            layer.window_start = now;
        }
    }

    /// Live layers, lowest bitrate first. Layers not measured yet sort by their
    /// byte count so far, which is good enough for the first second.
    pub fn layers(&self, now: Instant) -> impl Iterator<Item = Layer> + '_ {
        let mut v: Vec<Layer> = self
            .layers
            .iter()
            .filter(|l| now.saturating_duration_since(l.last_seen) < LAYER_STALE)
            .map(|l| Layer {
                rid: l.rid,
                bps: if l.bps > 0 { l.bps } else { l.window_bytes * 8 },
            })
            .collect();
        v.sort_by_key(|l| l.bps);
        v.into_iter()
    }
}

/// One simulcast layer as the chooser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub rid: str0m::media::Rid,
    pub bps: u64,
}

/// Chooses the layer a subscriber should get.
///
/// `layers` are sorted lowest bitrate first. `quality` caps the layer (Low is the
/// lowest, Medium the middle, High the top). `budget_bps` is the subscriber's
/// bandwidth estimate share for this track: the choice steps down while the
/// layer does not fit. `current` gives hysteresis: moving up needs 25% headroom.
/// Returns `None` only when there are no layers.
pub fn choose_layer(
    layers: &[Layer],
    quality: VideoQuality,
    budget_bps: Option<u64>,
    current: Option<str0m::media::Rid>,
) -> Option<str0m::media::Rid> {
    if layers.is_empty() {
        return None;
    }
    let top = layers.len() - 1;
    let mut idx = match quality {
        VideoQuality::Low => 0,
        VideoQuality::Medium => top / 2,
        VideoQuality::High => top,
    }
    .min(top);
    if let Some(budget) = budget_bps {
        let current_idx = current.and_then(|c| layers.iter().position(|l| l.rid == c));
        while idx > 0 {
            let need = layers[idx].bps;
            let need = match current_idx {
                Some(c) if idx > c => need + need / 4,
                _ => need,
            };
            if need <= budget {
                break;
            }
            idx -= 1;
        }
    }
    Some(layers[idx].rid)
}

/// Rewrites RTP time so a subscriber sees one continuous clock across layer
/// switches (simulcast layers have independent RTP timestamp bases).
#[derive(Debug, Default, Clone, Copy)]
pub struct TimeRewriter {
    offset: i64,
    last_out: Option<u64>,
}

impl TimeRewriter {
    /// Call on the first frame after a switch (a keyframe of the new layer).
    /// `frame_ticks` is the assumed gap to the previous frame.
    pub fn rebase(&mut self, incoming: u64, frame_ticks: u64) {
        self.offset = match self.last_out {
            Some(last) => (last + frame_ticks) as i64 - incoming as i64,
            None => 0,
        };
    }

    /// The outgoing time of a packet. Not clamped: a retransmitted packet keeps the
    /// time of its frame (stale packets of an old layer are not forwarded at all).
    pub fn map(&mut self, incoming: u64) -> u64 {
        let out = (incoming as i64).saturating_add(self.offset).max(0) as u64;
        self.last_out = Some(self.last_out.map_or(out, |l| l.max(out)));
        out
    }
}

/// Rewrites RTP sequence numbers (extended, 64-bit) so a subscriber sees one gapless
/// sequence that starts wherever it joins and continues across layer switches.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqRewriter {
    offset: i64,
    /// First incoming number of the current run; older packets are not forwarded.
    base_in: Option<u64>,
    max_out: Option<u64>,
}

impl SeqRewriter {
    /// The next packet forwarded is `incoming` (a keyframe start, a new layer): number it
    /// right after the last one sent, or for the first run in the first rollover (no ROC
    /// to signal).
    pub fn rebase(&mut self, incoming: u64) {
        let next = match self.max_out {
            Some(m) => m + 1,
            None => incoming & 0xffff,
        };
        self.offset = next as i64 - incoming as i64;
        self.base_in = Some(incoming);
    }

    /// The outgoing number, or None for a packet from before the current run.
    /// The first packet ever starts a run.
    pub fn map(&mut self, incoming: u64) -> Option<u64> {
        let base = match self.base_in {
            Some(b) => b,
            None => {
                self.rebase(incoming);
                incoming
            }
        };
        if incoming < base {
            return None;
        }
        let out = (incoming as i64 + self.offset) as u64;
        self.max_out = Some(self.max_out.map_or(out, |m| m.max(out)));
        Some(out)
    }
}

/// Is this RTP payload the first packet of a keyframe? VP8: start of partition 0 with a
/// key frame tag; H264: an SPS or IDR NAL unit (single, in a STAP-A, or an FU-A start);
/// VP9: start of a frame that is not inter-predicted; AV1: the N bit (new coded video
/// sequence). Other codecs: never.
pub fn is_keyframe_start(codec: str0m::format::Codec, payload: &[u8]) -> bool {
    use str0m::format::Codec;
    match codec {
        Codec::Vp8 => vp8_keyframe_start(payload),
        Codec::H264 => h264_keyframe_start(payload),
        Codec::Vp9 => payload
            .first()
            .is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0),
        Codec::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
        _ => false,
    }
}

fn vp8_keyframe_start(p: &[u8]) -> bool {
    // RFC 7741 payload descriptor: X R N S R PID(3).
    let Some(&b0) = p.first() else {
        return false;
    };
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(1) else {
            return false;
        };
        i = 2;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let Some(&pid) = p.get(i) else {
                return false;
            };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    // VP8 frame tag: bit 0 is the inverse key frame flag.
    p.get(i).is_some_and(|tag| tag & 0x01 == 0)
}

fn h264_keyframe_start(p: &[u8]) -> bool {
    let key = |t: u8| t == 5 || t == 7;
    let Some(&b0) = p.first() else {
        return false;
    };
    match b0 & 0x1f {
        24 => {
            // STAP-A: (16-bit size, NAL unit)*
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if key(p[i + 2] & 0x1f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|h| h & 0x80 != 0 && key(h & 0x1f)),
        t => key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::Rid;

    fn layers() -> Vec<Layer> {
        vec![
            Layer {
                rid: Rid::from("l"),
                bps: 150_000,
            },
            Layer {
                rid: Rid::from("m"),
                bps: 500_000,
            },
            Layer {
                rid: Rid::from("h"),
                bps: 1_500_000,
            },
        ]
    }

    #[test]
    fn quality_caps_the_layer() {
        let l = layers();
        assert_eq!(
            choose_layer(&l, VideoQuality::High, None, None),
            Some(Rid::from("h"))
        );
        assert_eq!(
            choose_layer(&l, VideoQuality::Medium, None, None),
            Some(Rid::from("m"))
        );
        assert_eq!(
            choose_layer(&l, VideoQuality::Low, None, None),
            Some(Rid::from("l"))
        );
        assert_eq!(choose_layer(&[], VideoQuality::High, None, None), None);
    }

    #[test]
    fn medium_with_two_layers_is_the_lower_one() {
        let l = &layers()[..2];
        assert_eq!(
            choose_layer(l, VideoQuality::Medium, None, None),
            Some(Rid::from("l"))
        );
        assert_eq!(
            choose_layer(l, VideoQuality::High, None, None),
            Some(Rid::from("m"))
        );
    }

    #[test]
    fn bandwidth_steps_down_but_never_below_lowest() {
        let l = layers();
        let q = VideoQuality::High;
        assert_eq!(
            choose_layer(&l, q, Some(1_000_000), None),
            Some(Rid::from("m"))
        );
        assert_eq!(
            choose_layer(&l, q, Some(200_000), None),
            Some(Rid::from("l"))
        );
        assert_eq!(choose_layer(&l, q, Some(10), None), Some(Rid::from("l")));
    }

    #[test]
    fn moving_up_needs_headroom() {
        let l = layers();
        let q = VideoQuality::High;
        // 1.6 Mbps fits "h" (1.5) from scratch but not as an upgrade from "m" (needs 1.875).
        assert_eq!(
            choose_layer(&l, q, Some(1_600_000), None),
            Some(Rid::from("h"))
        );
        let from_m = choose_layer(&l, q, Some(1_600_000), Some(Rid::from("m")));
        assert_eq!(from_m, Some(Rid::from("m")));
        // Staying on "h" needs no headroom.
        let on_h = choose_layer(&l, q, Some(1_600_000), Some(Rid::from("h")));
        assert_eq!(on_h, Some(Rid::from("h")));
    }

    #[test]
    fn throttle_allows_one_per_second_per_layer() {
        let t0 = Instant::now();
        let mut t = KeyframeThrottle::default();
        assert!(t.allow(None, t0));
        assert!(!t.allow(None, t0 + Duration::from_millis(10)));
        assert!(!t.allow(None, t0 + Duration::from_millis(999)));
        assert!(t.allow(Some(Rid::from("h")), t0 + Duration::from_millis(10)));
        assert!(t.allow(None, t0 + Duration::from_millis(1000)));
        // 50 subscribers asking within one second produce one request.
        let granted = (0..50)
            .filter(|i| t.allow(None, t0 + Duration::from_millis(1001 + i * 10)))
            .count();
        assert_eq!(granted, 0);
    }

    #[test]
    fn meter_orders_layers_by_bitrate() {
        let t0 = Instant::now();
        let mut m = LayerMeter::default();
        for i in 0..30u64 {
            let at = t0 + Duration::from_millis(i * 40);
            m.record(Rid::from("f"), 5000, at);
            m.record(Rid::from("q"), 300, at);
            m.record(Rid::from("h"), 1500, at);
        }
        let order: Vec<String> = m
            .layers(t0 + Duration::from_millis(1200))
            .map(|l| l.rid.to_string())
            .collect();
        assert_eq!(order, ["q", "h", "f"]);
        // A layer that stopped arriving drops out.
        let later = t0 + Duration::from_millis(1200) + LAYER_STALE;
        m.record(Rid::from("q"), 300, later);
        let order: Vec<String> = m.layers(later).map(|l| l.rid.to_string()).collect();
        assert_eq!(order, ["q"]);
    }

    #[test]
    fn time_is_continuous_across_switches() {
        let mut r = TimeRewriter::default();
        assert_eq!(r.map(1000), 1000);
        assert_eq!(r.map(4000), 4000);
        // Switch to a layer whose clock is at 900_000.
        r.rebase(900_000, 3000);
        assert_eq!(r.map(900_000), 7000);
        assert_eq!(r.map(903_000), 10_000);
        // Switch to a layer with a lower base.
        r.rebase(50, 3000);
        assert_eq!(r.map(50), 13_000);
    }

    #[test]
    fn sequence_is_gapless_across_runs() {
        let mut s = SeqRewriter::default();
        // Joins late in a long stream: starts in the first rollover.
        assert_eq!(s.map(70_000), Some(70_000 & 0xffff));
        assert_eq!(s.map(70_001), Some((70_000 & 0xffff) + 1));
        // A retransmission from before the join is not forwarded.
        assert_eq!(s.map(69_999), None);
        // Layer switch: the new layer's keyframe follows the last packet sent.
        s.rebase(500);
        assert_eq!(s.map(500), Some((70_000 & 0xffff) + 2));
        assert_eq!(s.map(499), None);
        // A gap upstream stays a gap (the subscriber NACKs it; the repair fills it).
        assert_eq!(s.map(502), Some((70_000 & 0xffff) + 4));
        assert_eq!(s.map(501), Some((70_000 & 0xffff) + 3));
    }

    #[test]
    fn packet_times_are_not_clamped() {
        let mut r = TimeRewriter::default();
        assert_eq!(r.map(3000), 3000);
        assert_eq!(r.map(6000), 6000);
        // A retransmitted packet of an older frame keeps its time.
        assert_eq!(r.map(3000), 3000);
        r.rebase(900_000, 3000);
        assert_eq!(r.map(900_000), 9000);
    }

    #[test]
    fn keyframe_starts() {
        use str0m::format::Codec;
        // VP8: S=1, PID=0, no extension; frame tag P bit 0 (key) / 1 (delta).
        assert!(is_keyframe_start(Codec::Vp8, &[0x10, 0x00, 0x9d]));
        assert!(!is_keyframe_start(Codec::Vp8, &[0x10, 0x01, 0x9d]));
        // Not the start of the partition.
        assert!(!is_keyframe_start(Codec::Vp8, &[0x00, 0x00, 0x9d]));
        // With X, I and a 15-bit picture id, then the tag.
        assert!(is_keyframe_start(
            Codec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x10]
        ));
        assert!(!is_keyframe_start(
            Codec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x11]
        ));
        // 7-bit picture id, TL0PICIDX and TID.
        assert!(is_keyframe_start(
            Codec::Vp8,
            &[0x90, 0xe0, 0x05, 0x07, 0x20, 0x00]
        ));
        assert!(!is_keyframe_start(Codec::Vp8, &[0x90]));
        // H264: SPS, IDR, non-IDR, STAP-A with SPS, FU-A start/middle of an IDR.
        assert!(is_keyframe_start(Codec::H264, &[0x67, 0x42]));
        assert!(is_keyframe_start(Codec::H264, &[0x65, 0x88]));
        assert!(!is_keyframe_start(Codec::H264, &[0x41, 0x9a]));
        assert!(is_keyframe_start(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]
        ));
        assert!(!is_keyframe_start(Codec::H264, &[0x78, 0x00, 0x01, 0x06]));
        assert!(is_keyframe_start(Codec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x05, 0x00]));
        assert!(!is_keyframe_start(Codec::Opus, &[0x10, 0x00, 0x9d]));
        assert!(!is_keyframe_start(Codec::Vp8, &[]));
    }
}
