//! Live captions in a room: who may caption, the captioning service's token and sequence, the automatic captions' switch, open lines, and the final lines kept for the WebVTT export.
//!
//! Every source ends in one place (`RoomState::caption_line`): a caption id per line, so a
//! line's partials are replaced by its final; times on the stage's clock (milliseconds since
//! the convening's first caption); `Audience::Captions`, so only sessions that turned
//! captions on receive them. Final lines are kept (at most `RoomLimits::captions_kept`) in
//! the room's state, so they survive a restart (durable log) and a failover (cluster).

use std::collections::{BTreeMap, VecDeque};

use convene_signaling::{
    Caption, CaptionSource, Command, Millis, Role, RoomEvent, MAX_CAPTION_CHARS,
};
use serde::{Deserialize, Serialize};

use super::{check_text, Audience, Denied, Event, Outcome, RoomState};

/// A speaker label's length, in characters.
const MAX_SPEAKER_CHARS: usize = 100;

#[derive(Default, Serialize, Deserialize)]
pub(super) struct Captions {
    next_id: u64,
    /// The stage's clock starts with the convening's first caption.
    origin: Option<Millis>,
    /// The line each writer has open (`human:<identity>`, `service`, `auto`): its id and start.
    open: BTreeMap<String, (u64, Millis)>,
    finals: VecDeque<Caption>,
    service: Option<Service>,
    auto: bool,
}

#[derive(Serialize, Deserialize)]
struct Service {
    /// SHA-256 (hex) of the endpoint's token: the token itself is never stored.
    token_sha256: String,
    next_seq: u64,
}

/// What the operator side (admin API, captioning endpoint, recognizer) asks of a room's captions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CaptionOp {
    /// Opens the captioning service's endpoint with a fresh token (its SHA-256); the
    /// sequence starts again at 1. Replaces an earlier token.
    OpenService {
        token_sha256: String,
    },
    CloseService,
    /// A captioning service's line: refused unless the token matches and `seq` is the next.
    Post {
        token_sha256: String,
        seq: u64,
        text: String,
        is_final: bool,
        speaker: Option<String>,
    },
    /// Automatic captions on or off for this convening.
    SetAuto {
        on: bool,
    },
    /// The recognizer's line (only while automatic captions are on).
    Recognized {
        text: String,
        is_final: bool,
        speaker: Option<String>,
    },
    /// Reads the final lines kept (the WebVTT export) and the switches.
    Log,
}

/// How a room answered a caption operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaptionAnswer {
    Accepted {
        caption_id: Option<u64>,
        /// The sequence number the service must send next.
        next_seq: Option<u64>,
    },
    /// No endpoint is open, or the token is not its token.
    BadToken,
    /// A sequence number out of order or repeated: nothing was shown.
    OutOfOrder {
        expected: u64,
    },
    /// Automatic captions are off in this convening.
    Off,
    Invalid(String),
    Log {
        captions: Vec<Caption>,
        service_open: bool,
        auto: bool,
    },
}

fn sha_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn speaker_label(speaker: Option<&str>) -> Result<Option<String>, Denied> {
    speaker
        .filter(|s| !s.trim().is_empty())
        .map(|s| check_text(s, MAX_SPEAKER_CHARS, "the speaker's name"))
        .transpose()
}

impl RoomState {
    /// Whether automatic captions are on (the media glue starts the recognizer).
    pub fn auto_captions(&self) -> bool {
        self.captions.auto
    }

    /// `grant_captions` and `send_caption` from a member.
    pub(super) fn apply_captions(
        &mut self,
        cmd: &Command,
        by: &str,
        role: Role,
        now: Millis,
    ) -> Result<Outcome, Denied> {
        match cmd {
            Command::GrantCaptions { identity, granted } => {
                if !role.can_moderate() {
                    return Err(Denied::forbidden("grant the caption right"));
                }
                let Some(state) = self.members.get_mut(identity) else {
                    return Err(Denied::not_found("participant"));
                };
                if state.member.captioner == *granted {
                    return Ok(Outcome::default());
                }
                state.member.captioner = *granted;
                if !granted {
                    self.captions.open.remove(&format!("human:{identity}"));
                }
                Ok(self
                    .member_updated(identity)
                    .into_iter()
                    .collect::<Vec<_>>()
                    .into())
            }
            Command::SendCaption {
                text,
                is_final,
                speaker,
            } => {
                if !self.member(by).is_some_and(|m| m.captioner) {
                    return Err(Denied::forbidden(
                        "send captions: the host has not granted you the caption right",
                    ));
                }
                let text = check_text(text, MAX_CAPTION_CHARS, "a caption")?;
                let speaker = speaker_label(speaker.as_deref())?;
                let key = format!("human:{by}");
                let event =
                    self.caption_line(&key, CaptionSource::Human, speaker, text, *is_final, now);
                let created = caption_id(&event);
                Ok(Outcome {
                    events: vec![event],
                    created,
                })
            }
            _ => Ok(Outcome::default()),
        }
    }

    /// An operator's caption action: the events to publish and the answer.
    pub(super) fn operate_captions(
        &mut self,
        op: &CaptionOp,
        now: Millis,
    ) -> (Vec<Event>, CaptionAnswer) {
        let accepted = |event: &Event, next_seq| CaptionAnswer::Accepted {
            caption_id: caption_id(event),
            next_seq,
        };
        match op {
            CaptionOp::OpenService { token_sha256 } => {
                self.captions.service = Some(Service {
                    token_sha256: token_sha256.clone(),
                    next_seq: 1,
                });
                self.captions.open.remove("service");
                (
                    Vec::new(),
                    CaptionAnswer::Accepted {
                        caption_id: None,
                        next_seq: Some(1),
                    },
                )
            }
            CaptionOp::CloseService => {
                self.captions.service = None;
                (
                    Vec::new(),
                    CaptionAnswer::Accepted {
                        caption_id: None,
                        next_seq: None,
                    },
                )
            }
            CaptionOp::Post {
                token_sha256,
                seq,
                text,
                is_final,
                speaker,
            } => {
                let Some(service) = self
                    .captions
                    .service
                    .as_mut()
                    .filter(|s| sha_eq(&s.token_sha256, token_sha256))
                else {
                    return (Vec::new(), CaptionAnswer::BadToken);
                };
                if *seq != service.next_seq {
                    let expected = service.next_seq;
                    return (Vec::new(), CaptionAnswer::OutOfOrder { expected });
                }
                let line = check_text(text, MAX_CAPTION_CHARS, "a caption")
                    .and_then(|text| Ok((text, speaker_label(speaker.as_deref())?)));
                let (text, speaker) = match line {
                    Ok(line) => line,
                    Err(denied) => return (Vec::new(), CaptionAnswer::Invalid(denied.message)),
                };
                service.next_seq += 1;
                let next = service.next_seq;
                let event = self.caption_line(
                    "service",
                    CaptionSource::Service,
                    speaker,
                    text,
                    *is_final,
                    now,
                );
                let answer = accepted(&event, Some(next));
                (vec![event], answer)
            }
            CaptionOp::SetAuto { on } => {
                self.captions.auto = *on;
                if !on {
                    self.captions.open.remove("auto");
                }
                (
                    Vec::new(),
                    CaptionAnswer::Accepted {
                        caption_id: None,
                        next_seq: None,
                    },
                )
            }
            CaptionOp::Recognized {
                text,
                is_final,
                speaker,
            } => {
                if !self.captions.auto {
                    return (Vec::new(), CaptionAnswer::Off);
                }
                let text = match check_text(text, MAX_CAPTION_CHARS, "a caption") {
                    Ok(text) => text,
                    Err(denied) => return (Vec::new(), CaptionAnswer::Invalid(denied.message)),
                };
                let speaker = speaker
                    .as_deref()
                    .map(|s| s.chars().take(MAX_SPEAKER_CHARS).collect());
                let event =
                    self.caption_line("auto", CaptionSource::Auto, speaker, text, *is_final, now);
                let answer = accepted(&event, None);
                (vec![event], answer)
            }
            CaptionOp::Log => (
                Vec::new(),
                CaptionAnswer::Log {
                    captions: self.captions.finals.iter().cloned().collect(),
                    service_open: self.captions.service.is_some(),
                    auto: self.captions.auto,
                },
            ),
        }
    }

    /// One line from one writer: a partial opens (or continues) the writer's line, a final
    /// closes it and is kept for the export.
    fn caption_line(
        &mut self,
        writer: &str,
        source: CaptionSource,
        speaker: Option<String>,
        text: String,
        is_final: bool,
        now: Millis,
    ) -> Event {
        let captions = &mut self.captions;
        let origin = *captions.origin.get_or_insert(now);
        let (id, start) = match captions.open.get(writer) {
            Some(open) => *open,
            None => {
                captions.next_id += 1;
                (captions.next_id, now)
            }
        };
        if is_final {
            captions.open.remove(writer);
        } else {
            captions.open.insert(writer.to_string(), (id, start));
        }
        let caption = Caption {
            id,
            source,
            speaker,
            text,
            is_final,
            start_ms: start.saturating_sub(origin),
            end_ms: now.saturating_sub(origin),
        };
        if is_final {
            captions.finals.push_back(caption.clone());
            while captions.finals.len() > self.limits.captions_kept.max(1) {
                captions.finals.pop_front();
            }
        }
        Event::new(Audience::Captions, RoomEvent::Caption { caption })
    }
}

fn caption_id(event: &Event) -> Option<u64> {
    match &event.body {
        RoomEvent::Caption { caption } => Some(caption.id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{Joiner, RoomLimits};
    use convene_signaling::ErrorCode;

    fn joiner(identity: &str, role: Role) -> Joiner {
        Joiner {
            identity: identity.into(),
            name: identity.to_uppercase(),
            role,
            attrs: Default::default(),
            on_stage: false,
            credentials_until: None,
        }
    }

    fn line(text: &str, is_final: bool) -> Command {
        Command::SendCaption {
            text: text.into(),
            is_final,
            speaker: None,
        }
    }

    fn caption(outcome: &Outcome) -> &Caption {
        match &outcome.events[0].body {
            RoomEvent::Caption { caption } => caption,
            other => panic!("not a caption: {other:?}"),
        }
    }

    #[test]
    fn a_granted_captioner_streams_partials_that_their_final_replaces() {
        let mut room = RoomState::new("r", RoomLimits::default());
        room.join(joiner("host", Role::Host), 0).unwrap();
        room.join(joiner("cy", Role::Participant), 0).unwrap();
        let refused = room.apply(&line("hello", false), "cy", 10).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
        let grant = Command::GrantCaptions {
            identity: "cy".into(),
            granted: true,
        };
        assert_eq!(
            room.apply(&grant, "cy", 10).unwrap_err().code,
            ErrorCode::Forbidden
        );
        let granted = room.apply(&grant, "host", 20).unwrap();
        assert!(room.member("cy").unwrap().captioner);
        assert_eq!(granted.events.len(), 1);
        let first = room.apply(&line("Welcome", false), "cy", 1_000).unwrap();
        let second = room
            .apply(&line("Welcome to the", false), "cy", 1_400)
            .unwrap();
        let last = room
            .apply(&line("Welcome to the launch.", true), "cy", 2_000)
            .unwrap();
        assert_eq!(first.events[0].audience, Audience::Captions);
        assert_eq!(caption(&first).id, caption(&last).id);
        assert_eq!(caption(&second).id, caption(&last).id);
        assert_eq!(last.created, Some(caption(&last).id));
        assert!(caption(&last).is_final && !caption(&first).is_final);
        // The stage's clock starts with the first caption.
        assert_eq!((caption(&last).start_ms, caption(&last).end_ms), (0, 1_000));
        // The next line is a new caption.
        let next = room.apply(&line("Next.", true), "cy", 3_000).unwrap();
        assert_ne!(caption(&next).id, caption(&last).id);
        let (_, log) = room.operate_captions(&CaptionOp::Log, 3_100);
        let CaptionAnswer::Log { captions, .. } = log else {
            panic!("{log:?}")
        };
        assert_eq!(captions.len(), 2);
        assert_eq!(
            room.apply(&line(&"x".repeat(MAX_CAPTION_CHARS + 1), true), "cy", 4_000)
                .unwrap_err()
                .code,
            ErrorCode::InvalidArgument
        );
        // Taking the right back stops them.
        let revoke = Command::GrantCaptions {
            identity: "cy".into(),
            granted: false,
        };
        room.apply(&revoke, "host", 5_000).unwrap();
        assert!(room.apply(&line("more", true), "cy", 5_100).is_err());
    }

    #[test]
    fn the_service_needs_its_token_and_the_next_sequence_number() {
        let mut room = RoomState::new("r", RoomLimits::default());
        let post = |token: &str, seq| CaptionOp::Post {
            token_sha256: token.into(),
            seq,
            text: "Good morning".into(),
            is_final: true,
            speaker: None,
        };
        assert_eq!(
            room.operate_captions(&post("aa", 1), 0).1,
            CaptionAnswer::BadToken
        );
        room.operate_captions(
            &CaptionOp::OpenService {
                token_sha256: "aa".into(),
            },
            0,
        );
        assert_eq!(
            room.operate_captions(&post("ab", 1), 0).1,
            CaptionAnswer::BadToken
        );
        let (events, answer) = room.operate_captions(&post("aa", 1), 10);
        assert_eq!(events.len(), 1);
        assert!(matches!(
            answer,
            CaptionAnswer::Accepted {
                next_seq: Some(2),
                ..
            }
        ));
        for seq in [1, 3] {
            let (events, answer) = room.operate_captions(&post("aa", seq), 20);
            assert!(events.is_empty());
            assert_eq!(answer, CaptionAnswer::OutOfOrder { expected: 2 });
        }
        assert!(matches!(
            room.operate_captions(&post("aa", 2), 30).1,
            CaptionAnswer::Accepted {
                next_seq: Some(3),
                ..
            }
        ));
    }

    #[test]
    fn recognized_lines_need_automatic_captions_on_and_the_log_is_bounded() {
        let limits = RoomLimits {
            captions_kept: 2,
            ..RoomLimits::default()
        };
        let mut room = RoomState::new("r", limits);
        let heard = |text: &str| CaptionOp::Recognized {
            text: text.into(),
            is_final: true,
            speaker: Some("Ana".into()),
        };
        assert_eq!(
            room.operate_captions(&heard("one"), 0).1,
            CaptionAnswer::Off
        );
        room.operate_captions(&CaptionOp::SetAuto { on: true }, 0);
        assert!(room.auto_captions());
        for (at, text) in ["one", "two", "three"].iter().enumerate() {
            let (events, _) = room.operate_captions(&heard(text), at as u64 * 1000);
            assert_eq!(events.len(), 1);
        }
        let CaptionAnswer::Log { captions, auto, .. } = room.operate_captions(&CaptionOp::Log, 5).1
        else {
            panic!()
        };
        assert!(auto);
        let texts: Vec<_> = captions.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["two", "three"]);
    }
}
