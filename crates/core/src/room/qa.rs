//! Live Q&A: questions, votes, the moderation queue, the single live question, duplicates.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use convene_signaling::{
    Command, ErrorCode, Millis, QaMode, Question, QuestionState, Role, RoomEvent, MAX_CHAT_CHARS,
    MAX_QUESTION_CHARS,
};
use serde::{Deserialize, Serialize};

use super::{check_text, Audience, Denied, Event, Outcome, Viewer};

/// Vote counts go out at most this often (per room, so per question too).
pub const VOTE_INTERVAL_MS: Millis = 250;

/// The room's questions as an export row (anonymous authors stay hidden).
pub type ExportedQuestion = Question;

pub(super) struct Asker<'a> {
    pub identity: &'a str,
    pub name: &'a str,
    pub role: Role,
}

#[derive(Serialize, Deserialize)]
struct Record {
    /// The wire record; `author` fields are `None` when anonymous.
    question: Question,
    /// Kept server-side even for anonymous questions, for moderation and visibility.
    author: String,
    voters: BTreeSet<String>,
    /// Where `restore` returns a dismissed question.
    before_dismissal: QuestionState,
}

impl Record {
    fn is_public(&self) -> bool {
        matches!(
            self.question.state,
            QuestionState::Approved | QuestionState::Answered
        )
    }

    fn audience(&self) -> Audience {
        if self.is_public() {
            Audience::Everyone
        } else {
            Audience::staff_and(&self.author)
        }
    }

    fn visible_to(&self, viewer: &Viewer) -> bool {
        self.is_public() || viewer.role.is_staff() || viewer.identity == self.author
    }

    /// Display order: live, approved by votes then age, pending, dismissed.
    fn order_key(&self) -> (u8, std::cmp::Reverse<u32>, Millis, u64) {
        let q = &self.question;
        let rank = match (q.live, q.state) {
            (true, _) => 0,
            (_, QuestionState::Approved) => 1,
            (_, QuestionState::Pending) => 2,
            _ => 3,
        };
        (rank, std::cmp::Reverse(q.votes), q.asked_at, q.id)
    }
}

#[derive(Default, Serialize, Deserialize)]
pub struct Qa {
    questions: BTreeMap<u64, Record>,
    live: Option<u64>,
    next_id: u64,
    asked_recently: BTreeMap<String, VecDeque<Millis>>,
    dirty_votes: BTreeSet<u64>,
    votes_sent_at: Option<Millis>,
}

impl Qa {
    /// Every question, for export after the event.
    pub fn export(&self) -> Vec<ExportedQuestion> {
        self.questions
            .values()
            .map(|r| r.question.clone())
            .collect()
    }

    /// A restored snapshot's links: ids match their keys and the live question exists.
    pub(super) fn check(&self) -> Result<(), String> {
        for (id, r) in &self.questions {
            if r.question.id != *id || *id > self.next_id {
                return Err(format!("question {id} is stored inconsistently"));
            }
        }
        match self.live.map(|id| self.questions.get(&id)) {
            Some(None) => Err("the live question does not exist".to_string()),
            _ => Ok(()),
        }
    }

    pub fn get(&self, id: u64) -> Option<&Question> {
        self.questions.get(&id).map(|r| &r.question)
    }

    pub fn live(&self) -> Option<u64> {
        self.live
    }

    /// Open questions in display order, and answered ones (newest first).
    pub(super) fn visible_to(&self, viewer: &Viewer) -> (Vec<Question>, Vec<Question>) {
        let mut open: Vec<&Record> = Vec::new();
        let mut answered: Vec<&Question> = Vec::new();
        for r in self.questions.values().filter(|r| r.visible_to(viewer)) {
            if r.question.state == QuestionState::Answered {
                answered.push(&r.question);
            } else {
                open.push(r);
            }
        }
        open.sort_by_key(|r| r.order_key());
        answered.sort_by_key(|q| std::cmp::Reverse((q.answered_at, q.id)));
        (
            open.into_iter().map(|r| r.question.clone()).collect(),
            answered.into_iter().cloned().collect(),
        )
    }

    pub(super) fn votes_of(&self, identity: &str) -> Vec<u64> {
        self.questions
            .values()
            .filter(|r| r.voters.contains(identity))
            .map(|r| r.question.id)
            .collect()
    }

    pub(super) fn asked_by(&self, identity: &str) -> Vec<u64> {
        self.questions
            .values()
            .filter(|r| r.author == identity)
            .map(|r| r.question.id)
            .collect()
    }

    pub(super) fn next_deadline(&self) -> Option<Millis> {
        if self.dirty_votes.is_empty() {
            return None;
        }
        Some(self.votes_sent_at.map_or(0, |t| t + VOTE_INTERVAL_MS))
    }

    /// Sends coalesced vote counts when due (or now, when `force`).
    pub(super) fn flush_votes(&mut self, now: Millis, force: bool) -> Vec<Event> {
        let due = self.next_deadline().is_some_and(|d| now >= d);
        if self.dirty_votes.is_empty() || !(force || due) {
            return Vec::new();
        }
        self.votes_sent_at = Some(now);
        std::mem::take(&mut self.dirty_votes)
            .into_iter()
            .filter_map(|id| self.questions.get(&id))
            .map(|r| {
                Event::new(
                    r.audience(),
                    RoomEvent::QuestionVotes {
                        question_id: r.question.id,
                        votes: r.question.votes,
                    },
                )
            })
            .collect()
    }

    fn votes_changed(&mut self, id: u64, now: Millis) -> Vec<Event> {
        self.dirty_votes.insert(id);
        self.flush_votes(now, false)
    }

    /// Events for a change to question `id`, given whether others could see it before.
    fn changed(&self, id: u64, was_public: bool) -> Vec<Event> {
        let r = &self.questions[&id];
        let update = RoomEvent::QuestionUpdated {
            question: r.question.clone(),
        };
        if r.is_public() {
            return vec![Event::new(Audience::Everyone, update)];
        }
        let mut events = vec![Event::new(Audience::staff_and(&r.author), update)];
        if was_public {
            events.push(Event::new(
                Audience::Rest(r.author.clone()),
                RoomEvent::QuestionRemoved { question_id: id },
            ));
        }
        events
    }

    fn find(&self, id: u64, viewer: &Asker) -> Result<&Record, Denied> {
        let as_viewer = Viewer {
            identity: viewer.identity.to_string(),
            role: viewer.role,
            place: super::Place::Main,
        };
        self.questions
            .get(&id)
            .filter(|r| r.visible_to(&as_viewer))
            .ok_or_else(|| Denied::not_found(&format!("question {id}")))
    }

    fn record(&mut self, id: u64) -> &mut Record {
        self.questions.get_mut(&id).expect("looked up before")
    }

    /// Clears the live flag if `id` holds it.
    fn clear_live_if(&mut self, id: u64) {
        if self.live == Some(id) {
            self.live = None;
            self.record(id).question.live = false;
        }
    }

    pub(super) fn apply(
        &mut self,
        cmd: &Command,
        by: &Asker,
        mode: QaMode,
        per_minute: u32,
        now: Millis,
    ) -> Result<Outcome, Denied> {
        match cmd {
            Command::AskQuestion { text, anonymous } => {
                self.ask(by, text, *anonymous, mode, per_minute, now)
            }
            Command::WithdrawQuestion { question_id } => self.withdraw(*question_id, by),
            Command::Upvote { question_id } => self.vote(*question_id, true, by, now),
            Command::RemoveUpvote { question_id } => self.vote(*question_id, false, by, now),
            Command::ApproveQuestion { question_id } => self.approve(*question_id, by, now),
            Command::DismissQuestion { question_id } => self.dismiss(*question_id, by, now),
            Command::RestoreQuestion { question_id } => self.restore(*question_id, by, now),
            Command::EditQuestion { question_id, text } => self.edit(*question_id, text, by, now),
            Command::SetLiveQuestion { question_id } => self.set_live(*question_id, by, now),
            Command::AnswerQuestion {
                question_id,
                answer,
            } => self.answer(*question_id, answer.as_deref(), by, now),
            Command::ReopenQuestion { question_id } => self.reopen(*question_id, by, now),
            Command::MarkDuplicate {
                question_id,
                duplicate_of,
            } => self.mark_duplicate(*question_id, *duplicate_of, by, now),
            _ => Err(Denied::new(ErrorCode::InvalidMessage, "not a Q&A command")),
        }
    }

    /// The author takes back their question, unless it has been answered.
    fn withdraw(&mut self, id: u64, by: &Asker) -> Result<Outcome, Denied> {
        let r = self.find(id, by)?;
        if r.author != by.identity {
            return Err(Denied::forbidden("withdraw someone else's question"));
        }
        if r.question.state == QuestionState::Answered {
            return Err(Denied::conflict("answered questions cannot be withdrawn"));
        }
        let audience = r.audience();
        self.clear_live_if(id);
        self.questions.remove(&id);
        self.dirty_votes.remove(&id);
        Ok(vec![Event::new(
            audience,
            RoomEvent::QuestionRemoved { question_id: id },
        )]
        .into())
    }

    /// Adds (`up`) or takes back a vote; counts go out coalesced, see `flush_votes`.
    fn vote(&mut self, id: u64, up: bool, by: &Asker, now: Millis) -> Result<Outcome, Denied> {
        let r = self.find(id, by)?;
        if r.question.state != QuestionState::Approved {
            return Err(Denied::conflict(
                format!(
                    "only approved, unanswered questions take votes; this one is {:?}",
                    r.question.state
                )
                .to_lowercase(),
            ));
        }
        if r.author == by.identity {
            return Err(Denied::conflict("you cannot vote on your own question"));
        }
        let r = self.record(id);
        let changed = if up {
            r.voters.insert(by.identity.to_string())
        } else {
            r.voters.remove(by.identity)
        };
        if !changed {
            return Err(Denied::conflict(if up {
                "you already upvoted this question"
            } else {
                "you have not upvoted this question"
            }));
        }
        r.question.votes = r.voters.len() as u32;
        Ok(self.votes_changed(id, now).into())
    }

    fn approve(&mut self, id: u64, by: &Asker, now: Millis) -> Result<Outcome, Denied> {
        moderate(by, "approve questions")?;
        self.transition(id, by, now, |r| match r.question.state {
            QuestionState::Pending => {
                r.question.state = QuestionState::Approved;
                Ok(())
            }
            other => Err(Denied::conflict(format!(
                "only pending questions can be approved; this one is {}",
                state_name(other)
            ))),
        })
    }

    fn dismiss(&mut self, id: u64, by: &Asker, now: Millis) -> Result<Outcome, Denied> {
        moderate(by, "dismiss questions")?;
        self.transition(id, by, now, |r| match r.question.state {
            QuestionState::Pending | QuestionState::Approved => {
                r.before_dismissal = r.question.state;
                r.question.state = QuestionState::Dismissed;
                Ok(())
            }
            other => Err(Denied::conflict(format!(
                "only pending or approved questions can be dismissed; this one is {}",
                state_name(other)
            ))),
        })
    }

    /// Undoes a dismissal (or a merge): back to where it was, no longer a duplicate.
    fn restore(&mut self, id: u64, by: &Asker, now: Millis) -> Result<Outcome, Denied> {
        moderate(by, "restore questions")?;
        self.transition(id, by, now, |r| match r.question.state {
            QuestionState::Dismissed => {
                r.question.state = r.before_dismissal;
                r.question.duplicate_of = None;
                Ok(())
            }
            other => Err(Denied::conflict(format!(
                "only dismissed questions can be restored; this one is {}",
                state_name(other)
            ))),
        })
    }

    fn edit(&mut self, id: u64, text: &str, by: &Asker, now: Millis) -> Result<Outcome, Denied> {
        moderate(by, "edit questions")?;
        let text = check_text(text, MAX_QUESTION_CHARS, "question")?;
        self.transition(id, by, now, |r| {
            if r.question.text != text {
                r.question.text = text;
                r.question.edited = true;
            }
            Ok(())
        })
    }

    /// Staff answer; moderators may also answer a question still pending approval.
    fn answer(
        &mut self,
        id: u64,
        answer: Option<&str>,
        by: &Asker,
        now: Millis,
    ) -> Result<Outcome, Denied> {
        if !by.role.is_staff() {
            return Err(Denied::forbidden("answer questions"));
        }
        let answer = match answer.map(str::trim) {
            Some(a) if !a.is_empty() => Some(check_text(a, MAX_CHAT_CHARS, "answer")?),
            _ => None,
        };
        let may_answer_pending = by.role.can_moderate();
        let was_live = self.live == Some(id);
        let outcome = self.transition(id, by, now, |r| {
            match r.question.state {
                QuestionState::Approved => {}
                QuestionState::Pending if may_answer_pending => {}
                QuestionState::Pending => {
                    return Err(Denied::conflict("approve the question before answering it"))
                }
                QuestionState::Dismissed => {
                    return Err(Denied::conflict("dismissed questions cannot be answered"))
                }
                QuestionState::Answered => {
                    return Err(Denied::conflict("this question is already answered"))
                }
            }
            r.question.state = QuestionState::Answered;
            r.question.answer = answer;
            r.question.answered_at = Some(now);
            r.question.live = false;
            Ok(())
        })?;
        if was_live {
            self.live = None;
        }
        Ok(outcome)
    }

    /// Back to the open queue, its answer cleared.
    fn reopen(&mut self, id: u64, by: &Asker, now: Millis) -> Result<Outcome, Denied> {
        moderate(by, "reopen questions")?;
        self.transition(id, by, now, |r| match r.question.state {
            QuestionState::Answered => {
                r.question.state = QuestionState::Approved;
                r.question.answered_at = None;
                r.question.answer = None;
                Ok(())
            }
            other => Err(Denied::conflict(format!(
                "only answered questions can be reopened; this one is {}",
                state_name(other)
            ))),
        })
    }

    /// Applies `change` to a question the sender can see and returns the visibility-aware events.
    fn transition(
        &mut self,
        id: u64,
        by: &Asker,
        now: Millis,
        change: impl FnOnce(&mut Record) -> Result<(), Denied>,
    ) -> Result<Outcome, Denied> {
        self.find(id, by)?;
        let r = self.record(id);
        let was_public = r.is_public();
        let before = r.question.clone();
        change(r)?;
        if r.question == before {
            return Ok(Outcome::default());
        }
        r.question.updated_at = now;
        // A question that left the open queue cannot stay live.
        if r.question.state != QuestionState::Approved && r.question.live {
            r.question.live = false;
        }
        if self.live == Some(id) && !self.questions[&id].question.live {
            self.live = None;
        }
        Ok(self.changed(id, was_public).into())
    }

    fn ask(
        &mut self,
        by: &Asker,
        text: &str,
        anonymous: bool,
        mode: QaMode,
        per_minute: u32,
        now: Millis,
    ) -> Result<Outcome, Denied> {
        let text = check_text(text, MAX_QUESTION_CHARS, "question")?;
        let recent = self
            .asked_recently
            .entry(by.identity.to_string())
            .or_default();
        while recent.front().is_some_and(|t| now >= t + 60_000) {
            recent.pop_front();
        }
        if recent.len() >= per_minute as usize {
            let retry = recent.front().map_or(60_000, |t| t + 60_000 - now);
            return Err(Denied {
                code: ErrorCode::RateLimited,
                message: format!("at most {per_minute} questions per minute"),
                retry_after_ms: Some(retry),
            });
        }
        recent.push_back(now);
        self.next_id += 1;
        let id = self.next_id;
        let state = match mode {
            QaMode::Open => QuestionState::Approved,
            QaMode::Moderated => QuestionState::Pending,
        };
        self.questions.insert(
            id,
            Record {
                question: Question {
                    id,
                    text,
                    author: (!anonymous).then(|| by.identity.to_string()),
                    author_name: (!anonymous).then(|| by.name.to_string()),
                    anonymous,
                    votes: 0,
                    state,
                    live: false,
                    edited: false,
                    answer: None,
                    duplicate_of: None,
                    asked_at: now,
                    updated_at: now,
                    answered_at: None,
                },
                author: by.identity.to_string(),
                voters: BTreeSet::new(),
                before_dismissal: state,
            },
        );
        Ok(Outcome {
            events: self.changed(id, false),
            created: Some(id),
        })
    }

    /// Makes `id` the one live question (or none), clearing the previous one.
    fn set_live(&mut self, id: Option<u64>, by: &Asker, now: Millis) -> Result<Outcome, Denied> {
        if !by.role.is_staff() {
            return Err(Denied::forbidden("choose the live question"));
        }
        if let Some(id) = id {
            let r = self.find(id, by)?;
            if r.question.state != QuestionState::Approved {
                return Err(Denied::conflict(format!(
                    "only approved questions can be live; this one is {}",
                    state_name(r.question.state)
                )));
            }
        }
        if self.live == id {
            return Ok(Outcome::default());
        }
        let mut events = Vec::new();
        for (question, live) in [(self.live, false), (id, true)] {
            if let Some(q) = question {
                let r = self.record(q);
                r.question.live = live;
                r.question.updated_at = now;
                events.extend(self.changed(q, true));
            }
        }
        self.live = id;
        Ok(events.into())
    }

    /// Merges `id` into `of`: `id` is dismissed as its duplicate and its voters move to `of`.
    fn mark_duplicate(
        &mut self,
        id: u64,
        of: u64,
        by: &Asker,
        now: Millis,
    ) -> Result<Outcome, Denied> {
        moderate(by, "merge questions")?;
        if id == of {
            return Err(Denied::invalid(
                "a question cannot be a duplicate of itself",
            ));
        }
        let source = self.find(id, by)?;
        if source.question.state == QuestionState::Answered {
            return Err(Denied::conflict("answered questions cannot be merged"));
        }
        let target = self.find(of, by)?;
        if target.question.state == QuestionState::Dismissed {
            return Err(Denied::conflict(format!(
                "question {of} is dismissed and cannot take duplicates"
            )));
        }
        // Follow the target's chain: reaching the source would make a cycle.
        let mut cursor = target.question.duplicate_of;
        let mut hops = 0;
        while let Some(next) = cursor {
            if next == id || hops > self.questions.len() {
                return Err(Denied::invalid(
                    "that merge would form a cycle of duplicates",
                ));
            }
            cursor = self
                .questions
                .get(&next)
                .and_then(|r| r.question.duplicate_of);
            hops += 1;
        }
        let target_author = target.author.clone();
        let was_public = source.is_public();
        let moved = std::mem::take(&mut self.record(id).voters);
        {
            let r = self.record(id);
            r.before_dismissal = match r.question.state {
                QuestionState::Dismissed => r.before_dismissal,
                other => other,
            };
            r.question.state = QuestionState::Dismissed;
            r.question.duplicate_of = Some(of);
            r.question.votes = 0;
            r.question.live = false;
            r.question.updated_at = now;
        }
        if self.live == Some(id) {
            self.live = None;
        }
        self.dirty_votes.remove(&id);
        let t = self.record(of);
        // A set: someone who voted for both counts once; the target's author never votes for themself.
        t.voters
            .extend(moved.into_iter().filter(|v| *v != target_author));
        t.question.votes = t.voters.len() as u32;
        t.question.updated_at = now;
        let mut events = self.changed(id, was_public);
        events.extend(self.changed(of, true));
        Ok(events.into())
    }
}

fn moderate(by: &Asker, what: &str) -> Result<(), Denied> {
    if by.role.can_moderate() {
        Ok(())
    } else {
        Err(Denied::forbidden(what))
    }
}

fn state_name(state: QuestionState) -> &'static str {
    match state {
        QuestionState::Pending => "pending",
        QuestionState::Approved => "approved",
        QuestionState::Dismissed => "dismissed",
        QuestionState::Answered => "answered",
    }
}

#[cfg(test)]
mod tests;
