//! Drains a peer's engine: sends what it transmits and acts on its events.

use str0m::bwe::{Bitrate, BweKind};
use str0m::media::Direction;
use str0m::net::Protocol;
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::RawPacket;
use str0m::{Event, IceConnectionState, Output};

use super::forward::{ask_keyframe, retransmit};
use super::publish::{on_rtp, publish};
use super::state::{Ctx, OutState, Peer};
use crate::{Counters, PeerEvent};

/// Drains one peer's output: sends datagrams, handles events.
pub(super) fn poll_peer(p: &mut Peer, ctx: &mut Ctx) {
    loop {
        let out = match p.rtc.poll_output() {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(peer = %p.id, error = %e, "rtc poll");
                p.dead = true;
                return;
            }
        };
        match out {
            Output::Timeout(t) => {
                p.timeout = t;
                return;
            }
            Output::Transmit(t) => {
                p.remote = Some(t.destination);
                p.remote_tcp = t.proto == Protocol::Tcp;
                ctx.transmit(t);
            }
            Output::Event(e) => on_event(p, ctx, e),
        }
    }
}

fn on_event(p: &mut Peer, ctx: &mut Ctx, e: Event) {
    match e {
        Event::Connected => {
            p.connected = true;
            if ctx.shared.bwe && p.opts.bandwidth_estimation {
                p.rtc
                    .bwe()
                    .set_bitrate(Bitrate::kbps(300), Bitrate::mbps(5));
            }
            let _ = p.events.send(PeerEvent::Connected);
            p.negotiate = true;
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            p.dead = true;
        }
        Event::Closed => p.dead = true,
        Event::MediaAdded(m) => match m.direction {
            // A viewer's offer is read as receive-only before the engine sees it (negotiate.rs);
            // should an m-line still say it sends, it is never a publication.
            Direction::RecvOnly | Direction::SendRecv if p.opts.receive_only => {}
            Direction::RecvOnly | Direction::SendRecv => {
                p.sending_mids.push((m.mid, m.kind, m.simulcast.clone()));
                publish(p, ctx, m.mid, m.kind, m.simulcast)
            }
            Direction::SendOnly => {
                let ours = p.outs.iter().any(|o| match o.state {
                    OutState::Negotiating(x) | OutState::Open(x) => x == m.mid,
                    _ => false,
                });
                // An m-line of our own whose track was dropped while it was negotiated is
                // stopped, never reused for another track.
                let ours = ours || p.added_mids.contains(&m.mid);
                if !ours && !p.free_slots.iter().any(|(x, _)| *x == m.mid) {
                    p.free_slots.push((m.mid, m.kind));
                    p.negotiate = true;
                }
            }
            Direction::Inactive => {}
        },
        Event::MediaChanged(m) => {
            if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) {
                // Sending again on an m-line that had gone inactive: publish it anew.
                let again = p
                    .sending_mids
                    .iter()
                    .find(|(mid, ..)| *mid == m.mid)
                    .cloned();
                if let Some((mid, kind, simulcast)) = again {
                    publish(p, ctx, mid, kind, simulcast);
                }
            } else if matches!(m.direction, Direction::SendOnly | Direction::Inactive) {
                if let Some(i) = p.tracks_in.iter().position(|(mid, _)| *mid == m.mid) {
                    let (_, key) = p.tracks_in.remove(i);
                    p.rx.retain(|r| r.track != key);
                    ctx.published.remove(&key);
                    ctx.shared.change(|d| d.remove_track(key));
                }
            }
        }
        Event::RtpPacket(pkt) => on_rtp(p, ctx, pkt),
        Event::KeyframeRequest(req) => {
            Counters::add(&ctx.shared.counters.keyframe_requests_in, 1);
            let Some(o) = p.outs.iter().find(|o| o.state == OutState::Open(req.mid)) else {
                return;
            };
            let rid = o.gate.current.or(o.gate.target);
            ask_keyframe(ctx, &o.meta, rid);
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            p.bwe_bps = Some(estimate.as_u64());
        }
        Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
            p.bwe_bps = Some(estimate.as_u64());
        }
        Event::RawPacket(raw) => {
            if let RawPacket::RtcpRx(Rtcp::Nack(nack)) = *raw {
                retransmit(p, ctx, &nack);
            }
        }
        _ => {}
    }
}
