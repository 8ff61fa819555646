//! Packets out: each subscriber's copy rewritten and handed to the engine or the direct egress path.
//!
//! Whether a subscriber gets a packet at all is the gate's call (`gate.rs`); NACKs for
//! what the direct path sent are answered here from its history.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use convene_signaling::TrackKind;
use str0m::config::CryptoProvider;
use str0m::media::{Mid, Pt, Rid};
use str0m::rtp::rtcp::Nack;
use str0m::rtp::{Extension, ExtensionValues, RtpWrite};
use str0m::Rtc;

use super::gate::{self, Layers, Packet, Verdict, Wants};
use super::state::{Ctx, OutState, Peer};
use super::{Forwarded, WorkerMsg};
use crate::directory::{PeerKey, TrackMeta};
use crate::egress::{self, ExtIds, RtpOut, SendBatch, Sent, SrtpSender};
use crate::link::TcpLink;

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
    wires: &mut Wires<'_>,
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
                if send_direct(
                    &mut Wires::of(ctx),
                    srtp,
                    &out,
                    ids,
                    &sent.data,
                    remote,
                    tcp,
                ) {
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
    let mut layers = Layers::new(&lt.meter, now);
    let mut asks: Vec<(Arc<TrackMeta>, Option<Rid>)> = Vec::new();
    // Field by field: `lt` keeps the track table borrowed.
    let mut wires = Wires {
        batch: &mut ctx.batch,
        socket: &ctx.shared.socket,
        links: &ctx.tcp_links,
        tcp_out: &mut ctx.tcp_out,
    };
    for key in &lt.subscribers {
        let Some(p) = peers.get_mut(key) else {
            continue;
        };
        if !p.connected || p.dead {
            continue;
        }
        let budget = p.video_budget();
        // A track subscribed again while its old m-line's stop is negotiated has two outs.
        let Some(oi) = p
            .outs
            .iter()
            .position(|o| o.meta.key == f.track && matches!(o.state, OutState::Open(_)))
        else {
            continue;
        };
        let wants = Wants {
            quality: p.quality_for(&p.outs[oi].meta.id),
            budget,
        };
        let o = &mut p.outs[oi];
        let OutState::Open(mid) = o.state else {
            continue;
        };
        let pkt = Packet {
            video: o.meta.kind == TrackKind::Video,
            rid: f.rid,
            keyframe: f.keyframe,
        };
        let d = gate::admit(&mut o.gate, pkt, wants, &mut layers, now);
        if let Some(rid) = d.ask {
            asks.push((o.meta.clone(), rid));
        }
        let Some(rw) = rewrite(p, oi, mid, f, d.verdict) else {
            continue;
        };
        match hand_over(p, oi, f, rw, &mut wires, &ctx.shared.crypto, now) {
            Path::Direct => {
                ctx.direct += 1;
                ctx.frames += 1;
                ctx.bytes += f.data.len() as u64;
            }
            Path::Engine => {
                ctx.frames += 1;
                ctx.bytes += f.data.len() as u64;
            }
            Path::None => {}
        }
    }
    for (meta, rid) in asks {
        ask_keyframe(ctx, &meta, rid);
    }
}

/// A packet as one subscriber gets it.
#[derive(Debug, Clone, Copy)]
struct Rewritten {
    mid: Mid,
    seq: u64,
    time: u64,
    pt: Pt,
}

/// The subscriber's sequence number, RTP time and payload type for `f` after the gate's
/// verdict; None when it is not sent (skipped, from before a restart, or a codec the
/// subscriber lacks).
fn rewrite(p: &mut Peer, oi: usize, mid: Mid, f: &Forwarded, v: Verdict) -> Option<Rewritten> {
    let o = &mut p.outs[oi];
    match v {
        Verdict::Skip => return None,
        Verdict::Send => {}
        Verdict::Resume => o.seq.rebase(f.seq),
        Verdict::Switch => {
            if let Some(rid) = f.rid {
                tracing::debug!(peer = %p.id, track = %o.meta.id, layer = %rid, "layer switch");
            }
            o.seq.rebase(f.seq);
            let ticks = u64::from(f.time.denom()) / 30;
            o.time.rebase(f.time.numer(), ticks);
        }
    }
    let seq = o.seq.map(f.seq)?;
    let time = o.time.map(f.time.numer());
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
    Some(Rewritten {
        mid,
        seq,
        time,
        pt: pt?,
    })
}

/// Which way a packet left.
enum Path {
    Direct,
    Engine,
    /// Not at all: the engine has no send stream for the m-line.
    None,
}

/// Hands one packet to a subscriber: on the direct path when the peer is on it and the
/// engine sent on this stream within `ENGINE_EVERY`, else through the engine.
fn hand_over(
    p: &mut Peer,
    oi: usize,
    f: &Forwarded,
    rw: Rewritten,
    wires: &mut Wires<'_>,
    crypto: &CryptoProvider,
    now: Instant,
) -> Path {
    let recent = p.outs[oi]
        .engine_at
        .is_some_and(|t| now.saturating_duration_since(t) < egress::ENGINE_EVERY);
    if p.direct && recent && direct_path(p, oi, f, rw, wires, crypto) {
        return Path::Direct;
    }
    // Through the engine: the first packets (before keys and address are known),
    // one per stream per `ENGINE_EVERY` on the direct path, everything otherwise.
    let o = &mut p.outs[oi];
    o.engine_at = Some(now);
    let video = o.meta.kind == TrackKind::Video;
    let mut api = p.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(rw.mid, None) else {
        return Path::None;
    };
    let ext = ExtensionValues {
        audio_level: f.audio_level,
        voice_activity: f.voice_activity,
        video_orientation: f.video_orientation,
        ..Default::default()
    };
    tx.write_rtp(
        RtpWrite::new(
            rw.pt,
            rw.seq.into(),
            rw.time as u32,
            f.network_time,
            f.data.clone(),
        )
        .marker(f.marker)
        .ext_vals(ext)
        .nackable(video),
    );
    p.dirty = true;
    Path::Engine
}

/// Protects and queues a packet on the direct path (keeping video for NACKs); false when
/// it cannot go that way yet (no keys, address or stream) or protection failed.
fn direct_path(
    p: &mut Peer,
    oi: usize,
    f: &Forwarded,
    rw: Rewritten,
    wires: &mut Wires<'_>,
    crypto: &CryptoProvider,
) -> bool {
    if p.srtp.is_none() {
        p.srtp = p.keys.get().and_then(|k| SrtpSender::new(crypto, k));
    }
    let o = &mut p.outs[oi];
    if o.direct.is_none() {
        o.direct = direct_stream(&mut p.rtc, rw.mid);
    }
    let (Some(srtp), Some(remote), Some((ssrc, ids))) = (&mut p.srtp, p.remote, o.direct) else {
        return false;
    };
    let out = RtpOut {
        pt: rw.pt,
        marker: f.marker,
        seq: rw.seq,
        time: rw.time as u32,
        ssrc,
        mid: &rw.mid,
        audio_level: f.audio_level.zip(f.voice_activity),
        video_orientation: f.video_orientation,
    };
    if !send_direct(wires, srtp, &out, ids, &f.data, remote, p.remote_tcp) {
        return false;
    }
    if o.meta.kind == TrackKind::Video {
        o.history.push(Sent {
            seq: rw.seq,
            pt: rw.pt,
            marker: f.marker,
            time: rw.time as u32,
            video_orientation: f.video_orientation,
            data: f.data.clone(),
        });
    }
    true
}
