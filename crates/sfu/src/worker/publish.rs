//! The publisher's side: its tracks announced, its RTP queued for subscribers' workers, PLIs sent to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use convene_signaling::{TrackKind, TrackSource};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::rtp::RtpPacket;

use super::state::{Ctx, Peer, Published, RxStream};
use super::Forwarded;
use crate::directory::{PeerKey, TrackKey, TrackMeta};
use crate::layer::{is_keyframe_start, KeyframeThrottle};
use crate::Counters;

static NEXT_TRACK: AtomicU64 = AtomicU64::new(1);

/// A publisher's RTP packet: queued for every worker with subscribers of its track.
pub(super) fn on_rtp(p: &mut Peer, ctx: &mut Ctx, pkt: RtpPacket) {
    let ssrc = pkt.header.ssrc;
    let i = match p.rx.iter().position(|r| r.ssrc == ssrc) {
        Some(i) => i,
        None => {
            let (mid, rid) = {
                let mut api = p.rtc.direct_api();
                let Some(s) = api.stream_rx(&ssrc) else {
                    return;
                };
                (s.mid(), s.rid())
            };
            // Not yet published (the MediaAdded event comes first): nothing to forward.
            let Some(&(_, track)) = p.tracks_in.iter().find(|(m, _)| *m == mid) else {
                return;
            };
            p.rx.push(RxStream {
                ssrc,
                track,
                rid,
                params: None,
            });
            p.rx.len() - 1
        }
    };
    let pt = pkt.header.payload_type;
    let rx = &mut p.rx[i];
    let params = match rx.params {
        Some(pp) if pp.pt() == pt => pp,
        _ => {
            let Some(pp) = p.rtc.codec_config().find(|c| c.pt() == pt).copied() else {
                return;
            };
            rx.params = Some(pp);
            pp
        }
    };
    let Some(pubd) = ctx.published.get(&rx.track) else {
        return;
    };
    if pubd.fanout.is_empty() || pkt.payload.is_empty() {
        return;
    }
    let codec = params.spec().codec;
    let ext = &pkt.header.ext_vals;
    let f = Forwarded {
        track: rx.track,
        rid: rx.rid,
        params,
        seq: *pkt.seq_no,
        time: pkt.time,
        network_time: pkt.timestamp,
        marker: pkt.header.marker,
        keyframe: codec.is_video() && is_keyframe_start(codec, &pkt.payload),
        audio_level: ext.audio_level,
        voice_activity: ext.voice_activity,
        video_orientation: ext.video_orientation,
        data: pkt.payload,
    };
    for &w in &pubd.fanout {
        if w == ctx.idx {
            ctx.local.push(f.clone());
        } else if let Some(b) = ctx.outbox.get_mut(w) {
            b.push(f.clone());
        }
    }
}

pub(super) fn publish(
    p: &mut Peer,
    ctx: &mut Ctx,
    mid: Mid,
    kind: MediaKind,
    simulcast: Option<str0m::media::Simulcast>,
) {
    if p.tracks_in.iter().any(|(m, _)| *m == mid) {
        return;
    }
    let kind = match kind {
        MediaKind::Audio => TrackKind::Audio,
        MediaKind::Video => TrackKind::Video,
    };
    let msid = p
        .rtc
        .media(mid)
        .map(|m| format!("{} {}", m.stream_id(), m.track_id()))
        .unwrap_or_default();
    let source = infer_source(kind, &msid, p.opts.source_hint);
    let layers: Vec<String> = simulcast
        .map(|s| if s.recv.is_empty() { s.send } else { s.recv })
        .unwrap_or_default()
        .iter()
        .take(3)
        .map(|l| l.rid.to_string())
        .collect();
    let key = NEXT_TRACK.fetch_add(1, Ordering::Relaxed);
    // Opaque ids: identities are up to 200 bytes and free text, so ids built from them
    // would have to be cut (and then collide) or would leak them into SDP.
    let stream_id = format!("p{}", p.key);
    let meta = Arc::new(TrackMeta {
        key,
        id: format!("t{key}"),
        stream_id,
        kind,
        publisher: p.key,
        publisher_worker: ctx.idx,
    });
    tracing::info!(peer = %p.id, track = %meta.id, ?kind, ?source, ?layers, "track published");
    p.tracks_in.push((mid, key));
    ctx.published.insert(
        key,
        Published {
            publisher: p.key,
            mid,
            fanout: Vec::new(),
            throttle: KeyframeThrottle::default(),
        },
    );
    ctx.shared.change(|d| d.add_track(meta, source, layers));
}

/// Source from the msid (a label containing "screen" means a screen share), else the hint
/// for video, else camera/microphone.
fn infer_source(kind: TrackKind, msid: &str, hint: Option<TrackSource>) -> TrackSource {
    let screen = msid.to_ascii_lowercase().contains("screen");
    match (kind, screen, hint) {
        (TrackKind::Video, true, _) => TrackSource::Screen,
        (TrackKind::Audio, true, _) => TrackSource::ScreenAudio,
        (TrackKind::Video, false, Some(h @ (TrackSource::Screen | TrackSource::Camera))) => h,
        (TrackKind::Audio, false, Some(TrackSource::Screen | TrackSource::ScreenAudio)) => {
            TrackSource::ScreenAudio
        }
        (TrackKind::Video, false, _) => TrackSource::Camera,
        (TrackKind::Audio, false, _) => TrackSource::Microphone,
    }
}

pub(super) fn request_keyframe(
    peers: &mut HashMap<PeerKey, Peer>,
    ctx: &mut Ctx,
    track: TrackKey,
    rid: Option<Rid>,
    now: Instant,
) {
    let Some(pubd) = ctx.published.get_mut(&track) else {
        return;
    };
    let Some(p) = peers.get_mut(&pubd.publisher) else {
        return;
    };
    if !pubd.throttle.allow(rid, now) {
        return;
    }
    // RTP mode: the request goes on the receive stream of the layer (PLI; every
    // WebRTC client negotiates it).
    let mut api = p.rtc.direct_api();
    match api.stream_rx_by_mid(pubd.mid, rid) {
        Some(rx) => {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            Counters::add(&ctx.shared.counters.keyframe_requests_out, 1);
            p.dirty = true;
        }
        None => tracing::debug!(peer = %p.id, ?rid, "keyframe request: no receive stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_inference() {
        use TrackKind::*;
        use TrackSource::*;
        assert_eq!(infer_source(Video, "abc def", None), Camera);
        assert_eq!(infer_source(Audio, "abc def", None), Microphone);
        assert_eq!(infer_source(Video, "s screen-1", None), Screen);
        assert_eq!(infer_source(Audio, "ScreenShare a", None), ScreenAudio);
        assert_eq!(infer_source(Video, "x y", Some(Screen)), Screen);
        assert_eq!(infer_source(Audio, "x y", Some(Screen)), ScreenAudio);
        assert_eq!(infer_source(Audio, "x y", Some(Camera)), Microphone);
    }
}
