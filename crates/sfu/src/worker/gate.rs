//! The forwarding decision: whether one subscriber gets one packet, and when to ask for a keyframe.
//!
//! Which simulcast layer it gets, when it waits for a keyframe, when to ask for one. Pure
//! (state, packet and time in, verdict out), so it is tested with chosen times.

use std::time::{Duration, Instant};

use convene_signaling::VideoQuality;
use str0m::media::Rid;

use crate::layer::{choose_layer, Layer, LayerMeter};

/// How often a subscriber re-chooses its simulcast layer.
const LAYER_EVAL: Duration = Duration::from_millis(500);
/// How often one subscriber may repeat a keyframe request while it waits.
const KEYFRAME_RETRY: Duration = Duration::from_millis(300);

/// Where one subscriber stands in one track's packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Gate {
    /// Simulcast layer being forwarded, and the one wanted.
    pub current: Option<Rid>,
    pub target: Option<Rid>,
    /// Video without a keyframe yet (single-layer tracks).
    pub need_keyframe: bool,
    /// When the layer was last chosen (None: choose on the next packet).
    pub last_eval: Option<Instant>,
    pub last_ask: Option<Instant>,
}

/// One packet as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Packet {
    pub video: bool,
    pub rid: Option<Rid>,
    /// The first packet of a keyframe.
    pub keyframe: bool,
}

/// What the subscriber may receive of a track: its quality cap and its bandwidth share.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wants {
    pub quality: VideoQuality,
    pub budget: Option<u64>,
}

/// The track's layers as measured now: read once per packet, however many subscribers.
pub(super) struct Layers<'a> {
    meter: &'a LayerMeter,
    now: Instant,
    seen: Option<Vec<Layer>>,
}

impl<'a> Layers<'a> {
    pub fn new(meter: &'a LayerMeter, now: Instant) -> Self {
        Layers {
            meter,
            now,
            seen: None,
        }
    }

    fn get(&mut self) -> &[Layer] {
        let (meter, now) = (self.meter, self.now);
        self.seen.get_or_insert_with(|| meter.layers(now).collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not for this subscriber: another layer, or before the keyframe it waits for.
    Skip,
    Send,
    /// Send; sequence numbers restart here (the keyframe that ends a wait).
    Resume,
    /// Send; sequence numbers and RTP time restart here (the first keyframe of the new layer).
    Switch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decision {
    pub verdict: Verdict,
    /// Ask the publisher for a keyframe of this layer (`Some(None)`: of its only one).
    pub ask: Option<Option<Rid>>,
}

/// Decides what one subscriber does with one packet of a track it receives, and moves its
/// gate: re-chooses the layer every `LAYER_EVAL`, switches on a keyframe of the chosen
/// layer, and asks for that keyframe at most every `KEYFRAME_RETRY` while it waits.
pub(super) fn admit(
    g: &mut Gate,
    pkt: Packet,
    wants: Wants,
    layers: &mut Layers<'_>,
    now: Instant,
) -> Decision {
    let mut d = Decision {
        verdict: Verdict::Send,
        ask: None,
    };
    if !pkt.video {
        return d;
    }
    if let Some(rid) = pkt.rid {
        if g.target.is_none() || elapsed(g.last_eval, now, LAYER_EVAL) {
            g.target =
                choose_layer(layers.get(), wants.quality, wants.budget, g.current).or(g.target);
            g.last_eval = Some(now);
        }
        if g.current != g.target {
            if Some(rid) == g.target && pkt.keyframe {
                g.current = g.target;
                d.verdict = Verdict::Switch;
            } else if may_ask(g, now) {
                d.ask = Some(g.target);
            }
        }
        if Some(rid) != g.current {
            d.verdict = Verdict::Skip;
        }
    } else if g.need_keyframe {
        if pkt.keyframe {
            g.need_keyframe = false;
            d.verdict = Verdict::Resume;
        } else {
            if may_ask(g, now) {
                d.ask = Some(None);
            }
            d.verdict = Verdict::Skip;
        }
    }
    d
}

/// At least `every` since `last` (or never).
fn elapsed(last: Option<Instant>, now: Instant, every: Duration) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= every)
}

fn may_ask(g: &mut Gate, now: Instant) -> bool {
    let ask = elapsed(g.last_ask, now, KEYFRAME_RETRY);
    if ask {
        g.last_ask = Some(now);
    }
    ask
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIGH: Wants = Wants {
        quality: VideoQuality::High,
        budget: None,
    };

    fn video(rid: Option<&str>, keyframe: bool) -> Packet {
        Packet {
            video: true,
            rid: rid.map(Rid::from),
            keyframe,
        }
    }

    /// A meter that has seen layers `l` (small) and `h` (big).
    fn meter(now: Instant) -> LayerMeter {
        let mut m = LayerMeter::default();
        m.record(Rid::from("l"), 100, now);
        m.record(Rid::from("h"), 1000, now);
        m
    }

    fn admit_at(g: &mut Gate, pkt: Packet, wants: Wants, m: &LayerMeter, now: Instant) -> Decision {
        admit(g, pkt, wants, &mut Layers::new(m, now), now)
    }

    fn verdict(v: Verdict, ask: Option<Option<&str>>) -> Decision {
        Decision {
            verdict: v,
            ask: ask.map(|r| r.map(Rid::from)),
        }
    }

    #[test]
    fn audio_always_passes() {
        let t0 = Instant::now();
        let mut g = Gate::default();
        let m = LayerMeter::default();
        let pkt = Packet {
            video: false,
            rid: None,
            keyframe: false,
        };
        assert_eq!(
            admit_at(&mut g, pkt, HIGH, &m, t0),
            verdict(Verdict::Send, None)
        );
        assert_eq!(g, Gate::default());
    }

    #[test]
    fn single_layer_video_waits_for_a_keyframe_and_asks_at_most_every_retry() {
        let t0 = Instant::now();
        let m = LayerMeter::default();
        let mut g = Gate {
            need_keyframe: true,
            ..Gate::default()
        };
        let delta = video(None, false);
        assert_eq!(
            admit_at(&mut g, delta, HIGH, &m, t0),
            verdict(Verdict::Skip, Some(None))
        );
        let soon = t0 + Duration::from_millis(100);
        assert_eq!(
            admit_at(&mut g, delta, HIGH, &m, soon),
            verdict(Verdict::Skip, None)
        );
        let later = t0 + KEYFRAME_RETRY;
        assert_eq!(
            admit_at(&mut g, delta, HIGH, &m, later),
            verdict(Verdict::Skip, Some(None))
        );
        let key = video(None, true);
        assert_eq!(
            admit_at(&mut g, key, HIGH, &m, later),
            verdict(Verdict::Resume, None)
        );
        assert!(!g.need_keyframe);
        assert_eq!(
            admit_at(&mut g, delta, HIGH, &m, later),
            verdict(Verdict::Send, None)
        );
    }

    #[test]
    fn simulcast_starts_on_a_keyframe_of_the_chosen_layer() {
        let t0 = Instant::now();
        let m = meter(t0);
        let mut g = Gate::default();
        // High wants `h`: a packet of `l` is skipped, and `h`'s keyframe asked for.
        let d = admit_at(&mut g, video(Some("l"), true), HIGH, &m, t0);
        assert_eq!(d, verdict(Verdict::Skip, Some(Some("h"))));
        assert_eq!(g.target, Some(Rid::from("h")));
        // A delta of `h` is not a place to start; the ask is not repeated yet.
        let d = admit_at(&mut g, video(Some("h"), false), HIGH, &m, t0);
        assert_eq!(d, verdict(Verdict::Skip, None));
        let d = admit_at(&mut g, video(Some("h"), true), HIGH, &m, t0);
        assert_eq!(d, verdict(Verdict::Switch, None));
        assert_eq!(g.current, Some(Rid::from("h")));
        let d = admit_at(&mut g, video(Some("h"), false), HIGH, &m, t0);
        assert_eq!(d, verdict(Verdict::Send, None));
        let d = admit_at(&mut g, video(Some("l"), false), HIGH, &m, t0);
        assert_eq!(d, verdict(Verdict::Skip, None));
    }

    #[test]
    fn a_lower_cap_switches_down_after_the_next_evaluation_only() {
        let t0 = Instant::now();
        let m = meter(t0);
        let mut g = Gate::default();
        admit_at(&mut g, video(Some("h"), true), HIGH, &m, t0);
        assert_eq!(g.current, Some(Rid::from("h")));
        let low = Wants {
            quality: VideoQuality::Low,
            budget: None,
        };
        // Within LAYER_EVAL the old choice stands.
        let soon = t0 + Duration::from_millis(100);
        let d = admit_at(&mut g, video(Some("h"), false), low, &m, soon);
        assert_eq!(d, verdict(Verdict::Send, None));
        // Then `l` is chosen: `h` keeps flowing until `l`'s keyframe, which is asked for.
        let later = t0 + LAYER_EVAL;
        let d = admit_at(&mut g, video(Some("h"), false), low, &m, later);
        assert_eq!(d, verdict(Verdict::Send, Some(Some("l"))));
        let d = admit_at(&mut g, video(Some("l"), true), low, &m, later);
        assert_eq!(d, verdict(Verdict::Switch, None));
        let d = admit_at(&mut g, video(Some("h"), false), low, &m, later);
        assert_eq!(d, verdict(Verdict::Skip, None));
    }

    #[test]
    fn a_cleared_evaluation_rechooses_at_once() {
        let t0 = Instant::now();
        let m = meter(t0);
        let mut g = Gate::default();
        admit_at(&mut g, video(Some("h"), true), HIGH, &m, t0);
        // What SetQuality does.
        g.last_eval = None;
        let low = Wants {
            quality: VideoQuality::Low,
            budget: None,
        };
        let d = admit_at(&mut g, video(Some("h"), false), low, &m, t0);
        assert_eq!(d.ask, Some(Some(Rid::from("l"))));
        assert_eq!(g.target, Some(Rid::from("l")));
    }

    #[test]
    fn no_layer_measured_keeps_the_old_target() {
        let t0 = Instant::now();
        let mut g = Gate {
            current: Some(Rid::from("h")),
            target: Some(Rid::from("h")),
            ..Gate::default()
        };
        // Every layer went stale: nothing to choose from, so nothing changes.
        let empty = LayerMeter::default();
        let d = admit_at(&mut g, video(Some("h"), false), HIGH, &empty, t0);
        assert_eq!(d, verdict(Verdict::Send, None));
        assert_eq!(g.target, Some(Rid::from("h")));
        assert_eq!(g.last_eval, Some(t0));
    }
}
