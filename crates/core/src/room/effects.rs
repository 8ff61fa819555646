//! What a room event does to sessions beyond its bytes (moves, kicks, access rechecks), and where a viewer stood before a replay.

use std::sync::Arc;

use convene_signaling::RoomEvent;

use super::{Audience, Place, RoomState, Viewer};
use crate::wire::{Envelope, SessionEffect};

/// The session effect an event carries: sessions follow it without parsing the event.
pub(super) fn effect_of(
    state: &RoomState,
    audience: &Audience,
    body: &RoomEvent,
) -> Option<SessionEffect> {
    if let RoomEvent::SettingsChanged { .. } | RoomEvent::MediaMuted { .. } = body {
        return Some(SessionEffect::Recheck);
    }
    if let RoomEvent::MemberUpdated { member } = body {
        return Some(SessionEffect::Access {
            identity: member.identity.clone(),
            place: Place::from_breakout(member.breakout),
            may_publish: state.may_publish(&member.identity),
            muted: member.media_muted.clone(),
        });
    }
    let Audience::Some {
        person: Some(identity),
        ..
    } = audience
    else {
        return None;
    };
    match body {
        RoomEvent::Moved { from, breakout, .. } => Some(SessionEffect::Move {
            identity: identity.clone(),
            from: Place::from_breakout(*from),
            to: Place::from_breakout(*breakout),
            may_publish: state.may_publish(identity),
        }),
        // Into a scheduled convening's lobby, and out of it when it starts.
        RoomEvent::Lobby { .. } => Some(SessionEffect::Move {
            identity: identity.clone(),
            from: Place::Main,
            to: Place::Lobby,
            may_publish: false,
        }),
        RoomEvent::Admitted { .. } => Some(SessionEffect::Move {
            identity: identity.clone(),
            from: Place::Lobby,
            to: state.viewer(identity).map_or(Place::Main, |v| v.place),
            may_publish: state.may_publish(identity),
        }),
        RoomEvent::Removed { .. } => Some(SessionEffect::Kick {
            identity: identity.clone(),
        }),
        _ => None,
    }
}

/// Where the viewer was at the start of a replay: before the first move it contains.
pub(super) fn viewer_before(mut viewer: Viewer, replay: &[Arc<Envelope>]) -> Viewer {
    let first_move = replay.iter().find_map(|e| match &e.effect {
        Some(SessionEffect::Move { identity, from, .. }) if *identity == viewer.identity => {
            Some(*from)
        }
        _ => None,
    });
    if let Some(place) = first_move {
        viewer.place = place;
    }
    viewer
}
