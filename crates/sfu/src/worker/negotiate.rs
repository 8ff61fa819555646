//! Offers and answers: which m-line carries which track, and the renegotiation that gets it there.
//!
//! The client's offers and answers, slots it offered (recvonly m-lines), m-lines we add
//! and stop by a server offer.

use std::panic::{catch_unwind, AssertUnwindSafe};

use convene_signaling::TrackKind;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind};

use super::state::{OutState, Peer};
use crate::{Counters, PeerEvent, SfuError, Shared};

pub(super) fn accept_offer(p: &mut Peer, offer: SdpOffer) -> Result<String, SfuError> {
    let offer = if p.opts.receive_only {
        receive_only(&offer)?
    } else {
        offer
    };
    let r = catch_unwind(AssertUnwindSafe(|| p.rtc.sdp_api().accept_offer(offer)));
    p.dirty = true;
    let answer = match r {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(crate::bad_sdp("the offer was not accepted", &e)),
        Err(_) => {
            p.dead = true;
            return Err(SfuError::BadSdp("offer rejected".into()));
        }
    };
    p.has_remote = true;
    // A client offer cancels ours: redo those changes afterwards.
    p.pending = None;
    for o in &mut p.outs {
        match o.state {
            OutState::Negotiating(_) if o.unwanted => o.state = OutState::ToOpen,
            OutState::Negotiating(_) => o.state = OutState::ToOpen,
            OutState::NegotiatingStop(m) => o.state = OutState::ToStop(m),
            _ => {}
        }
    }
    p.outs
        .retain(|o| !(o.unwanted && o.state == OutState::ToOpen));
    p.negotiate = true;
    Ok(scrubbed(answer.to_sdp_string()))
}

/// The offer as a peer that never publishes reads it: what the client would send it keeps
/// to itself (`sendrecv` -> `recvonly`, `sendonly` -> `inactive`), so the answer is
/// `sendonly`/`inactive` and no m-line of it becomes a publication.
fn receive_only(offer: &SdpOffer) -> Result<SdpOffer, SfuError> {
    let text: String = offer
        .to_sdp_string()
        .split_inclusive('\n')
        .map(|line| match line.trim_end() {
            "a=sendrecv" => "a=recvonly\r\n",
            "a=sendonly" => "a=inactive\r\n",
            _ => line,
        })
        .collect();
    SdpOffer::from_sdp_string(&text).map_err(|e| crate::bad_sdp("the offer was not accepted", &e))
}

/// Our SDP without the engine's name and version in its origin line (`o=str0m-0.25 ...`):
/// a client learns nothing from it but which exploits to try.
fn scrubbed(sdp: String) -> String {
    match sdp.strip_prefix("v=0\r\no=") {
        Some(rest) if !rest.starts_with("- ") => {
            let after_user = rest.find(' ').map_or(rest.len(), |i| i);
            format!("v=0\r\no=-{}", &rest[after_user..])
        }
        _ => sdp,
    }
}

pub(super) fn accept_answer(p: &mut Peer, answer: SdpAnswer) -> Result<(), SfuError> {
    let Some(pending) = p.pending.take() else {
        return Err(SfuError::NoPendingOffer);
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        p.rtc.sdp_api().accept_answer(pending, answer)
    }));
    p.dirty = true;
    p.negotiate = true;
    let ok = matches!(r, Ok(Ok(())));
    for o in &mut p.outs {
        match (o.state, ok) {
            (OutState::Negotiating(m), true) if o.unwanted => o.state = OutState::ToStop(m),
            (OutState::Negotiating(m), true) => o.open(m),
            (OutState::Negotiating(_), false) => o.state = OutState::ToOpen,
            (OutState::NegotiatingStop(m), false) => o.state = OutState::ToStop(m),
            _ => {}
        }
    }
    if ok {
        // Stopped m-lines are done (str0m may recycle them).
        p.outs
            .retain(|o| !matches!(o.state, OutState::NegotiatingStop(_)));
    } else {
        p.outs
            .retain(|o| !(o.unwanted && o.state == OutState::ToOpen));
    }
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(crate::bad_sdp("the answer was not accepted", &e)),
        Err(_) => {
            p.dead = true;
            Err(SfuError::BadSdp("answer rejected".into()))
        }
    }
}

/// Binds waiting tracks to free client-offered m-lines; then, if the peer
/// renegotiates and no offer is outstanding, offers new m-lines and stops ended ones.
pub(super) fn negotiate(p: &mut Peer, shared: &Shared) {
    p.negotiate = false;
    // Ended tracks on slots just free the slot.
    let mut freed = Vec::new();
    p.outs.retain(|o| match o.state {
        OutState::ToStop(m) if o.slot => {
            freed.push((m, kind_of(o.meta.kind)));
            false
        }
        _ => true,
    });
    p.free_slots.extend(freed);
    for o in &mut p.outs {
        if o.state != OutState::ToOpen {
            continue;
        }
        let want = kind_of(o.meta.kind);
        if let Some(i) = p.free_slots.iter().position(|(_, k)| *k == want) {
            let (mid, _) = p.free_slots.remove(i);
            o.slot = true;
            o.open(mid);
            p.dirty = true;
        }
    }
    if !p.opts.renegotiate || !p.has_remote || p.pending.is_some() {
        return;
    }
    let mut api = p.rtc.sdp_api();
    for o in &mut p.outs {
        match o.state {
            OutState::ToOpen => {
                let mid = api.add_media(
                    kind_of(o.meta.kind),
                    Direction::SendOnly,
                    Some(o.meta.stream_id.clone()),
                    Some(o.meta.id.clone()),
                    None,
                );
                p.added_mids.push(mid);
                o.state = OutState::Negotiating(mid);
            }
            OutState::ToStop(mid) => {
                api.stop_media(mid);
                o.state = OutState::NegotiatingStop(mid);
            }
            _ => {}
        }
    }
    if !api.has_changes() {
        return;
    }
    if let Some((offer, pending)) = api.apply() {
        p.pending = Some(pending);
        p.dirty = true;
        Counters::add(&shared.counters.offers_sent, 1);
        let _ = p
            .events
            .send(PeerEvent::Offer(scrubbed(offer.to_sdp_string())));
    }
}

pub(super) fn kind_of(k: TrackKind) -> MediaKind {
    match k {
        TrackKind::Audio => MediaKind::Audio,
        TrackKind::Video => MediaKind::Video,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_line_names_no_engine() {
        let sdp = "v=0\r\no=str0m-0.25 5058682828002148772 2 IN IP4 0.0.0.0\r\ns=-\r\n".to_string();
        assert_eq!(
            scrubbed(sdp),
            "v=0\r\no=- 5058682828002148772 2 IN IP4 0.0.0.0\r\ns=-\r\n"
        );
        let plain = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n".to_string();
        assert_eq!(scrubbed(plain.clone()), plain);
    }
}
