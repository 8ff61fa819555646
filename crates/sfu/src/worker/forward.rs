//! Packets out to subscribers: which packet goes to whom, rewritten how, and the handoff to
//! the engine or the direct egress path; NACKs answered on that path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convene_signaling::TrackKind;
use str0m::media::{Mid, Rid};
use str0m::rtp::rtcp::Nack;
use str0m::rtp::{Extension, ExtensionValues, RtpWrite};
use str0m::Rtc;

use super::state::{Ctx, OutState, Peer};
use super::{Forwarded, WorkerMsg};
use crate::directory::{PeerKey, TrackMeta};
use crate::egress::{self, ExtIds, RtpOut, SendBatch, Sent, SrtpSender};
use crate::layer::{choose_layer, Layer};
use crate::link::TcpLink;

/// How often a subscriber re-chooses its simulcast layer.
const LAYER_EVAL: Duration = Duration::from_millis(500);
/// How often one subscriber may repeat a keyframe request while it waits.
const KEYFRAME_RETRY: Duration = Duration::from_millis(300);

/// Sends a keyframe request towards the publisher of `meta` (throttled there).
pub(super) fn ask_keyframe(ctx: &mut Ctx, meta: &TrackMeta, rid: Option<Rid>) {
    if meta.publisher_worker == ctx.idx {
        // Same worker: handled next turn, like any other request, to keep one path.
        ctx.shared.send(
            ctx.idx,
            WorkerMsg::KeyframeRequest {
                track: meta.key,
                rid,
            },
        );
    } else {
        ctx.shared.send(
            meta.publisher_worker,
            WorkerMsg::KeyframeRequest {
                track: meta.key,
                rid,
            },
        );
    }
}

/// Our SSRC for the stream on `mid` and the extension ids the subscriber negotiated.
fn direct_stream(rtc: &mut Rtc, mid: Mid) -> Option<(u32, ExtIds)> {
    let ssrc = *rtc.direct_api().stream_tx_by_mid(mid, None)?.ssrc();
    let exts = rtc.media(mid)?.remote_extmap();
    let ids = ExtIds {
        mid: exts.id_of(Extension::RtpMid),
        audio_level: exts.id_of(Extension::AudioLevel),
        video_orientation: exts.id_of(Extension::VideoOrientation),
    };
    Some((ssrc, ids))
}

/// The worker's ways out for a direct-path packet (borrowed field by field from [`Ctx`]).
struct Wires<'a> {
    batch: &'a mut SendBatch,
    socket: &'a std::net::UdpSocket,
    links: &'a HashMap<SocketAddr, TcpLink>,
    tcp_out: &'a mut u64,
}

impl<'a> Wires<'a> {
    fn of(ctx: &'a mut Ctx) -> Self {
        Wires {
            batch: &mut ctx.batch,
            socket: &ctx.shared.socket,
            links: &ctx.tcp_links,
            tcp_out: &mut ctx.tcp_out,
        }
    }
}

/// Writes, protects and queues one packet on the direct egress path: into the UDP batch,
/// or (`tcp`) onto the peer's ICE-TCP connection.
fn send_direct(
    wires: Wires<'_>,
    srtp: &mut SrtpSender,
    out: &RtpOut<'_>,
    ids: ExtIds,
    payload: &[u8],
    to: SocketAddr,
    tcp: bool,
) -> bool {
    let mut buf = wires.batch.buffer();
    egress::write_header(&mut buf, out, ids);
    if !srtp.protect(&mut buf, payload, out.ssrc, out.seq) {
        wires.batch.recycle(buf);
        return false;
    }
    if tcp {
        let sent = wires.links.get(&to).is_some_and(|link| link.send(buf));
        *wires.tcp_out += u64::from(sent);
        return sent;
    }
    wires.batch.push(wires.socket, buf, to);
    true
}

/// Answers a subscriber's NACK from the direct path's history (the engine answers for
/// the packets it sent itself).
pub(super) fn retransmit(p: &mut Peer, ctx: &mut Ctx, nack: &Nack) {
    let (Some(srtp), Some(remote)) = (&mut p.srtp, p.remote) else {
        return;
    };
    let tcp = p.remote_tcp;
    let ssrc = *nack.ssrc;
    for o in &p.outs {
        let (OutState::Open(mid), Some((our_ssrc, ids))) = (o.state, o.direct) else {
            continue;
        };
        if our_ssrc != ssrc {
            continue;
        }
        for entry in nack.reports.iter() {
            for seq in egress::nacked(entry.pid, entry.blp) {
                let Some(sent) = o.history.get(seq) else {
                    continue;
                };
                let out = RtpOut {
                    pt: sent.pt,
                    marker: sent.marker,
                    seq: sent.seq,
                    time: sent.time,
                    ssrc,
                    mid: &mid,
                    audio_level: None,
                    video_orientation: sent.video_orientation,
                };
                if send_direct(Wires::of(ctx), srtp, &out, ids, &sent.data, remote, tcp) {
                    ctx.retransmits += 1;
                }
            }
        }
        return;
    }
}

/// Writes one packet to every subscriber of its track on this worker.
pub(super) fn deliver(
    peers: &mut HashMap<PeerKey, Peer>,
    ctx: &mut Ctx,
    f: &Forwarded,
    now: Instant,
) {
    let Some(lt) = ctx.subs.get_mut(&f.track) else {
        return;
    };
    if let Some(rid) = f.rid {
        lt.meter.record(rid, f.data.len(), now);
    }
    let mut layers: Option<Vec<Layer>> = None;
    let mut asks: Vec<(Arc<TrackMeta>, Option<Rid>)> = Vec::new();
    for key in &lt.subscribers {
        let Some(p) = peers.get_mut(key) else {
            continue;
        };
        if !p.connected || p.dead {
            continue;
        }
        let budget = p.video_budget();
        let Some(oi) = p.outs.iter().position(|o| o.meta.key == f.track) else {
            continue;
        };
        let quality = p.quality_for(&p.outs[oi].meta.id);
        let o = &mut p.outs[oi];
        let OutState::Open(mid) = o.state else {
            continue;
        };
        let mut rebase = false;
        if o.meta.kind == TrackKind::Video {
            if let Some(rid) = f.rid {
                if o.target.is_none()
                    || o.last_eval
                        .is_none_or(|t| now.saturating_duration_since(t) >= LAYER_EVAL)
                {
                    let l = layers.get_or_insert_with(|| lt.meter.layers(now).collect());
                    o.target = choose_layer(l, quality, budget, o.current).or(o.target);
                    o.last_eval = Some(now);
                }
                if o.current != o.target {
                    if Some(rid) == o.target && f.keyframe {
                        tracing::debug!(peer = %p.id, track = %o.meta.id, layer = %rid, "layer switch");
                        o.current = o.target;
                        rebase = true;
                        o.seq.rebase(f.seq);
                    } else if o
                        .last_ask
                        .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY)
                    {
                        o.last_ask = Some(now);
                        asks.push((o.meta.clone(), o.target));
                    }
                }
                if Some(rid) != o.current {
                    continue;
                }
            } else if o.need_keyframe {
                if f.keyframe {
                    o.need_keyframe = false;
                    o.seq.rebase(f.seq);
                } else {
                    if o.last_ask
                        .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY)
                    {
                        o.last_ask = Some(now);
                        asks.push((o.meta.clone(), None));
                    }
                    continue;
                }
            }
        }
        if rebase {
            let ticks = u64::from(f.time.denom()) / 30;
            o.time.rebase(f.time.numer(), ticks);
        }
        let Some(seq) = o.seq.map(f.seq) else {
            continue;
        };
        let t = o.time.map(f.time.numer());
        let in_pt = f.params.pt();
        let pt = match o.pt {
            Some((i, out)) if i == in_pt => out,
            _ => {
                // What `Writer::match_params` does (the writer is off limits in RTP mode).
                let out = p.rtc.codec_config().match_params(f.params).map(|c| c.pt());
                o.pt = Some((in_pt, out));
                out
            }
        };
        let Some(pt) = pt else {
            continue;
        };
        let video = o.meta.kind == TrackKind::Video;
        if p.direct
            && o.engine_at
                .is_some_and(|t| now.saturating_duration_since(t) < egress::ENGINE_EVERY)
        {
            if p.srtp.is_none() {
                p.srtp = p
                    .keys
                    .get()
                    .and_then(|k| SrtpSender::new(&ctx.shared.crypto, k));
            }
            if o.direct.is_none() {
                o.direct = direct_stream(&mut p.rtc, mid);
            }
            if let (Some(srtp), Some(remote), Some((ssrc, ids))) = (&mut p.srtp, p.remote, o.direct)
            {
                let out = RtpOut {
                    pt,
                    marker: f.marker,
                    seq,
                    time: t as u32,
                    ssrc,
                    mid: &mid,
                    audio_level: f.audio_level.zip(f.voice_activity),
                    video_orientation: f.video_orientation,
                };
                let wires = Wires {
                    batch: &mut ctx.batch,
                    socket: &ctx.shared.socket,
                    links: &ctx.tcp_links,
                    tcp_out: &mut ctx.tcp_out,
                };
                if send_direct(wires, srtp, &out, ids, &f.data, remote, p.remote_tcp) {
                    ctx.direct += 1;
                    ctx.frames += 1;
                    ctx.bytes += f.data.len() as u64;
                    if video {
                        o.history.push(Sent {
                            seq,
                            pt,
                            marker: f.marker,
                            time: t as u32,
                            video_orientation: f.video_orientation,
                            data: f.data.clone(),
                        });
                    }
                    continue;
                }
            }
        }
        // Through the engine: the first packets (before keys and address are known),
        // one per stream per `ENGINE_EVERY` on the direct path, everything otherwise.
        o.engine_at = Some(now);
        let mut api = p.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            continue;
        };
        let ext = ExtensionValues {
            audio_level: f.audio_level,
            voice_activity: f.voice_activity,
            video_orientation: f.video_orientation,
            ..Default::default()
        };
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), t as u32, f.network_time, f.data.clone())
                .marker(f.marker)
                .ext_vals(ext)
                .nackable(video),
        );
        ctx.frames += 1;
        ctx.bytes += f.data.len() as u64;
        p.dirty = true;
    }
    for (meta, rid) in asks {
        ask_keyframe(ctx, &meta, rid);
    }
}
