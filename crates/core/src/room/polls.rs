//! Polls: launch, one answer per identity, close, share results, and what each viewer may see.

use std::collections::{BTreeMap, BTreeSet};

use convene_signaling::{Millis, Poll, PollState, Role, RoomEvent};
use serde::{Deserialize, Serialize};

use super::{Audience, Denied, Event, Outcome};

/// Polls per room; a launch webcast runs a handful.
pub const MAX_POLLS: usize = 50;
pub const MAX_OPTIONS: usize = 10;
const MAX_QUESTION_CHARS: usize = 300;
const MAX_OPTION_CHARS: usize = 100;
/// Answer counts go out at most this often (a webcast answers a poll all at once).
pub const COUNTS_INTERVAL_MS: Millis = 500;

#[derive(Serialize, Deserialize)]
struct Entry {
    /// The full poll: `counts` and `voters` always set here, trimmed per viewer.
    poll: Poll,
    /// identity -> chosen option indexes (sorted, distinct).
    answers: BTreeMap<String, Vec<u32>>,
}

impl Entry {
    /// Results are for everyone once shared, or all along with live results.
    fn public(&self) -> bool {
        self.poll.shared || self.poll.live_results
    }

    fn view(&self, staff: bool) -> Poll {
        let mut poll = self.poll.clone();
        if !staff && !self.public() {
            poll.counts = None;
            poll.voters = None;
        }
        poll
    }

    fn recount(&mut self) {
        let mut counts = vec![0u32; self.poll.options.len()];
        for choice in self.answers.values().flatten() {
            counts[*choice as usize] += 1;
        }
        self.poll.counts = Some(counts);
        self.poll.voters = Some(self.answers.len() as u32);
    }
}

#[derive(Default, Serialize, Deserialize)]
pub struct Polls {
    polls: BTreeMap<u64, Entry>,
    next_id: u64,
    /// Polls answered since their counts last went out.
    dirty: BTreeSet<u64>,
    counts_sent_at: Option<Millis>,
}

impl Polls {
    pub fn launch(
        &mut self,
        role: Role,
        question: &str,
        options: &[String],
        multiple: bool,
        live_results: bool,
        now: Millis,
    ) -> Result<Outcome, Denied> {
        if !role.can_moderate() {
            return Err(Denied::forbidden("launch polls"));
        }
        if self.polls.len() >= MAX_POLLS {
            return Err(Denied::conflict(format!(
                "this room has {MAX_POLLS} polls already"
            )));
        }
        let question = question.trim();
        if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
            return Err(Denied::invalid(format!(
                "a poll question has 1-{MAX_QUESTION_CHARS} characters"
            )));
        }
        let options: Vec<String> = options.iter().map(|o| o.trim().to_string()).collect();
        if options.len() < 2 || options.len() > MAX_OPTIONS {
            return Err(Denied::invalid(format!(
                "a poll has 2-{MAX_OPTIONS} options"
            )));
        }
        if options
            .iter()
            .any(|o| o.is_empty() || o.chars().count() > MAX_OPTION_CHARS)
        {
            return Err(Denied::invalid(format!(
                "each option has 1-{MAX_OPTION_CHARS} characters"
            )));
        }
        self.next_id += 1;
        let id = self.next_id;
        let mut entry = Entry {
            poll: Poll {
                id,
                question: question.to_string(),
                options,
                multiple,
                live_results,
                state: PollState::Open,
                shared: false,
                counts: None,
                voters: None,
                created_at: now,
                closed_at: None,
            },
            answers: BTreeMap::new(),
        };
        entry.recount();
        self.polls.insert(id, entry);
        Ok(Outcome {
            events: self.events(id),
            created: Some(id),
        })
    }

    pub fn vote(
        &mut self,
        identity: &str,
        poll_id: u64,
        choices: &[u32],
        now: Millis,
    ) -> Result<Outcome, Denied> {
        let entry = self
            .polls
            .get_mut(&poll_id)
            .ok_or_else(|| Denied::not_found("poll"))?;
        if entry.poll.state != PollState::Open {
            return Err(Denied::conflict("this poll is closed"));
        }
        let mut chosen = choices.to_vec();
        chosen.sort_unstable();
        chosen.dedup();
        if chosen.is_empty() || (!entry.poll.multiple && chosen.len() > 1) {
            return Err(Denied::invalid(if entry.poll.multiple {
                "choose at least one option"
            } else {
                "choose exactly one option"
            }));
        }
        if chosen
            .iter()
            .any(|c| *c as usize >= entry.poll.options.len())
        {
            return Err(Denied::invalid("no such option"));
        }
        if entry.answers.get(identity) == Some(&chosen) {
            return Ok(Outcome::default());
        }
        // One answer per identity: a second one replaces the first.
        entry.answers.insert(identity.to_string(), chosen);
        entry.recount();
        self.dirty.insert(poll_id);
        Ok(self.flush_counts(now, false).into())
    }

    /// A restored snapshot's links: ids match their keys, answers name real options.
    pub(super) fn check(&self) -> Result<(), String> {
        for (id, e) in &self.polls {
            let options = e.poll.options.len();
            let answers_fit = e
                .answers
                .values()
                .flatten()
                .all(|c| (*c as usize) < options);
            if e.poll.id != *id || *id > self.next_id || !answers_fit {
                return Err(format!("poll {id} is stored inconsistently"));
            }
        }
        match self.dirty.iter().find(|id| !self.polls.contains_key(id)) {
            Some(id) => Err(format!("poll {id} has pending counts but does not exist")),
            None => Ok(()),
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Millis> {
        if self.dirty.is_empty() {
            return None;
        }
        Some(self.counts_sent_at.map_or(0, |t| t + COUNTS_INTERVAL_MS))
    }

    /// Sends the counts of answered polls when due (or now, when `force`). Hidden results:
    /// only staff see the counts move.
    pub(super) fn flush_counts(&mut self, now: Millis, force: bool) -> Vec<Event> {
        let due = self.next_deadline().is_some_and(|d| now >= d);
        if self.dirty.is_empty() || !(force || due) {
            return Vec::new();
        }
        self.counts_sent_at = Some(now);
        let mut events = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let entry = &self.polls[&id];
            if entry.public() {
                events.extend(self.events(id));
            } else {
                events.push(Event::new(
                    Audience::staff(),
                    RoomEvent::PollUpdated {
                        poll: entry.view(true),
                    },
                ));
            }
        }
        events
    }

    pub fn close(&mut self, role: Role, poll_id: u64, now: Millis) -> Result<Outcome, Denied> {
        if !role.can_moderate() {
            return Err(Denied::forbidden("close polls"));
        }
        let entry = self
            .polls
            .get_mut(&poll_id)
            .ok_or_else(|| Denied::not_found("poll"))?;
        if entry.poll.state == PollState::Closed {
            return Ok(Outcome::default());
        }
        entry.poll.state = PollState::Closed;
        entry.poll.closed_at = Some(now);
        // This update carries the latest counts.
        self.dirty.remove(&poll_id);
        Ok(self.events(poll_id).into())
    }

    pub fn share(&mut self, role: Role, poll_id: u64) -> Result<Outcome, Denied> {
        if !role.can_moderate() {
            return Err(Denied::forbidden("share poll results"));
        }
        let entry = self
            .polls
            .get_mut(&poll_id)
            .ok_or_else(|| Denied::not_found("poll"))?;
        if entry.poll.shared {
            return Ok(Outcome::default());
        }
        entry.poll.shared = true;
        self.dirty.remove(&poll_id);
        Ok(self.events(poll_id).into())
    }

    /// The poll's update: one event for all when results are public, else a full one for
    /// staff and one without results for everyone else.
    fn events(&self, poll_id: u64) -> Vec<Event> {
        let entry = &self.polls[&poll_id];
        if entry.public() {
            return vec![Event::new(
                Audience::Everyone,
                RoomEvent::PollUpdated {
                    poll: entry.view(true),
                },
            )];
        }
        vec![
            Event::new(
                Audience::staff(),
                RoomEvent::PollUpdated {
                    poll: entry.view(true),
                },
            ),
            Event::new(
                Audience::Participants,
                RoomEvent::PollUpdated {
                    poll: entry.view(false),
                },
            ),
        ]
    }

    /// Every poll as this viewer may see it, oldest first.
    pub fn visible_to(&self, staff: bool) -> Vec<Poll> {
        self.polls.values().map(|e| e.view(staff)).collect()
    }

    /// This identity's answers, by poll.
    pub fn answers_of(&self, identity: &str) -> BTreeMap<u64, Vec<u32>> {
        self.polls
            .iter()
            .filter_map(|(id, e)| e.answers.get(identity).map(|a| (*id, a.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn launched(polls: &mut Polls, multiple: bool, live: bool) -> u64 {
        let opts = options(&["Yes", "No", "Not sure"]);
        let out = polls
            .launch(Role::Moderator, "Ready?", &opts, multiple, live, 100)
            .unwrap();
        out.created.unwrap()
    }

    fn poll_of(events: &[Event], audience: &Audience) -> Poll {
        events
            .iter()
            .find(|e| &e.audience == audience)
            .map(|e| match &e.body {
                RoomEvent::PollUpdated { poll } => poll.clone(),
                other => panic!("not a poll update: {other:?}"),
            })
            .expect("an event for that audience")
    }

    #[test]
    fn only_moderators_launch_close_and_share() {
        let mut polls = Polls::default();
        let opts = options(&["A", "B"]);
        for role in [Role::Participant, Role::Presenter] {
            let err = polls.launch(role, "Q", &opts, false, false, 1).unwrap_err();
            assert_eq!(err.code, convene_signaling::ErrorCode::Forbidden);
        }
        let id = launched(&mut polls, false, false);
        assert!(polls.close(Role::Participant, id, 2).is_err());
        assert!(polls.share(Role::Presenter, id).is_err());
        assert!(polls.close(Role::Host, id, 2).is_ok());
        assert!(polls.share(Role::Host, id).is_ok());
    }

    #[test]
    fn bad_polls_and_bad_answers_are_refused() {
        let mut polls = Polls::default();
        let one = options(&["Only"]);
        assert!(polls
            .launch(Role::Host, "Q", &one, false, false, 1)
            .is_err());
        let blank = options(&["A", " "]);
        assert!(polls
            .launch(Role::Host, "Q", &blank, false, false, 1)
            .is_err());
        let two = options(&["A", "B"]);
        assert!(polls
            .launch(Role::Host, "  ", &two, false, false, 1)
            .is_err());
        let id = launched(&mut polls, false, true);
        assert!(polls.vote("ana", id, &[], 2).is_err());
        assert!(polls.vote("ana", id, &[0, 1], 2).is_err(), "single choice");
        assert!(polls.vote("ana", id, &[3], 2).is_err(), "no option 3");
        assert!(polls.vote("ana", 99, &[0], 2).is_err());
        polls.close(Role::Host, id, 5).unwrap();
        let err = polls.vote("ana", id, &[0], 6).unwrap_err();
        assert_eq!(err.code, convene_signaling::ErrorCode::Conflict);
    }

    #[test]
    fn one_answer_per_identity_a_second_replaces_the_first() {
        let mut polls = Polls::default();
        let id = launched(&mut polls, true, true);
        polls.vote("ana", id, &[0, 2, 2], 1000).unwrap();
        polls.vote("ben", id, &[0], 2000).unwrap();
        let out = polls.vote("ana", id, &[1], 3000).unwrap();
        let poll = poll_of(&out.events, &Audience::Everyone);
        assert_eq!(poll.counts, Some(vec![1, 1, 0]));
        assert_eq!(poll.voters, Some(2));
        assert_eq!(polls.answers_of("ana"), BTreeMap::from([(id, vec![1])]));
        // The same answer again changes nothing and says nothing.
        assert!(polls.vote("ana", id, &[1], 4000).unwrap().events.is_empty());
    }

    #[test]
    fn counts_are_coalesced_while_a_crowd_answers() {
        let mut polls = Polls::default();
        let id = launched(&mut polls, false, true);
        assert_eq!(polls.vote("a", id, &[0], 1000).unwrap().events.len(), 1);
        // Within the interval: held back, then sent once with every answer counted.
        for (i, who) in ["b", "c", "d"].iter().enumerate() {
            let out = polls.vote(who, id, &[1], 1100 + i as u64).unwrap();
            assert!(out.events.is_empty());
        }
        assert_eq!(polls.next_deadline(), Some(1000 + COUNTS_INTERVAL_MS));
        assert!(polls.flush_counts(1200, false).is_empty());
        let flushed = polls.flush_counts(1000 + COUNTS_INTERVAL_MS, false);
        assert_eq!(flushed.len(), 1);
        let counts = poll_of(&flushed, &Audience::Everyone).counts;
        assert_eq!(counts, Some(vec![1, 3, 0]));
        assert_eq!(polls.next_deadline(), None);
        // Closing carries the latest counts at once.
        polls.vote("e", id, &[2], 1600).unwrap();
        let closed = polls.close(Role::Host, id, 1601).unwrap();
        let counts = poll_of(&closed.events, &Audience::Everyone).counts;
        assert_eq!(counts, Some(vec![1, 3, 1]));
        assert_eq!(polls.next_deadline(), None);
    }

    #[test]
    fn hidden_results_reach_staff_only_until_shared() {
        let mut polls = Polls::default();
        let id = launched(&mut polls, false, false);
        let out = polls.vote("ana", id, &[1], 1000).unwrap();
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].audience, Audience::staff());
        assert_eq!(polls.visible_to(false)[0].counts, None);
        assert_eq!(polls.visible_to(true)[0].counts, Some(vec![0, 1, 0]));

        let closed = polls.close(Role::Moderator, id, 9).unwrap();
        let for_audience = poll_of(&closed.events, &Audience::Participants);
        assert_eq!(for_audience.state, PollState::Closed);
        assert_eq!(for_audience.counts, None);

        let shared = polls.share(Role::Moderator, id).unwrap();
        let poll = poll_of(&shared.events, &Audience::Everyone);
        assert!(poll.shared);
        assert_eq!(poll.counts, Some(vec![0, 1, 0]));
        assert_eq!(polls.visible_to(false)[0].voters, Some(1));
    }
}
