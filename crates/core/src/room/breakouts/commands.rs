//! Breakout commands: one handler per command, each checking the sender's role and the phase.

use convene_signaling::{
    Assignment, BreakoutId, BreakoutPhase, BreakoutPlan, Command, ErrorCode, Millis, Role,
    RoomEvent, MAX_CHAT_CHARS,
};

use super::{assignable, BreakoutSession, MAX_DURATION_S};
use crate::room::{check_text, Audience, Denied, Event, Outcome, RoomState};

impl RoomState {
    pub(in crate::room) fn apply_breakout(
        &mut self,
        cmd: &Command,
        by: &str,
        role: Role,
        now: Millis,
    ) -> Result<Outcome, Denied> {
        let events = match cmd {
            Command::SetBreakoutPlan { plan } => self.set_breakout_plan(plan, role, now),
            Command::CancelBreakoutPlan => self.cancel_breakout_plan(role),
            Command::AssignBreakout { identity, breakout } => {
                self.assign_breakout(identity, *breakout, role)
            }
            Command::OpenBreakouts => self.open_breakouts(role, now),
            Command::ChooseBreakout { breakout } => self.choose_breakout(*breakout, by, role),
            Command::ExtendBreakouts { seconds } => self.extend_breakouts(*seconds, role, now),
            Command::BroadcastToBreakouts { text } => self.broadcast_to_breakouts(text, by, role),
            Command::AskForHelp => self.ask_for_help(by),
            Command::HandleHelp { identity } => self.handle_help(identity, by, role),
            Command::JoinBreakout { breakout } => self.visit_breakout(*breakout, by, role),
            Command::LeaveBreakout => self.leave_breakout(by),
            Command::CloseBreakouts { countdown_s } => {
                self.close_breakouts(*countdown_s, role, now)
            }
            _ => Err(Denied::new(
                ErrorCode::InvalidMessage,
                "not a breakout command",
            )),
        }?;
        Ok(events.into())
    }

    /// Replaces the draft; the seed changes with every plan so a re-plan reshuffles.
    fn set_breakout_plan(
        &mut self,
        plan: &BreakoutPlan,
        role: Role,
        now: Millis,
    ) -> Result<Vec<Event>, Denied> {
        moderate(role, "plan breakouts")?;
        if matches!(
            self.breakout_phase(),
            Some(BreakoutPhase::Open | BreakoutPhase::Closing)
        ) {
            return Err(Denied::conflict(
                "breakouts are open; close them before changing the plan",
            ));
        }
        self.plans_made += 1;
        let session = self.resolve_plan(plan, now ^ self.plans_made)?;
        self.breakouts = Some(session);
        Ok(self.breakouts_updated())
    }

    fn cancel_breakout_plan(&mut self, role: Role) -> Result<Vec<Event>, Denied> {
        moderate(role, "cancel breakouts")?;
        match self.breakout_phase() {
            None => return Err(Denied::conflict("there is no breakout plan")),
            Some(BreakoutPhase::Draft) => {}
            Some(_) => return Err(Denied::conflict("breakouts are open; close them instead")),
        }
        self.breakouts = None;
        Ok(self.breakouts_updated())
    }

    /// Assigns one participant; once breakouts are open, that moves them at once.
    fn assign_breakout(
        &mut self,
        identity: &str,
        breakout: BreakoutId,
        role: Role,
    ) -> Result<Vec<Event>, Denied> {
        moderate(role, "assign people to breakouts")?;
        let b = self
            .breakouts
            .as_mut()
            .ok_or_else(|| Denied::conflict("there is no breakout plan"))?;
        b.room(breakout)?;
        if b.phase == BreakoutPhase::Closing {
            return Err(Denied::conflict("breakouts are closing"));
        }
        let Some(target) = self.members.get(identity) else {
            return Err(Denied::invalid(format!("unknown identity {identity:?}")));
        };
        if !assignable(target.member.role) {
            return Err(Denied::invalid(
                "hosts and moderators visit breakouts with join_breakout",
            ));
        }
        let b = self.breakouts.as_mut().expect("checked above");
        b.assignments.insert(identity.to_string(), breakout);
        let mut events = if b.phase == BreakoutPhase::Open {
            self.move_member(identity, Some(breakout), false)
        } else {
            Vec::new()
        };
        events.extend(self.breakouts_updated());
        Ok(events)
    }

    /// Opens the draft: places late arrivals, starts the timer and moves everyone placed.
    fn open_breakouts(&mut self, role: Role, now: Millis) -> Result<Vec<Event>, Denied> {
        moderate(role, "open breakouts")?;
        match self.breakout_phase() {
            None => return Err(Denied::conflict("make a breakout plan first")),
            Some(BreakoutPhase::Draft) => {}
            Some(_) => return Err(Denied::conflict("breakouts are already open")),
        }
        let mut session = self.breakouts.take().expect("draft exists");
        // People who arrived after the plan was made.
        self.fill_assignments(&mut session);
        session.phase = BreakoutPhase::Open;
        session.ends_at = session.plan.duration_s.map(|d| now + u64::from(d) * 1000);
        session.warning_at = self.warning_for(session.ends_at, now);
        let placed: Vec<(String, BreakoutId)> = session
            .assignments
            .iter()
            .filter(|(identity, _)| self.members.contains_key(*identity))
            .map(|(i, b)| (i.clone(), *b))
            .collect();
        self.breakouts = Some(session);
        let mut events = self.move_many(placed.into_iter().map(|(i, b)| (i, Some(b))).collect());
        events.extend(self.breakouts_updated());
        Ok(events)
    }

    /// A participant picks a room (self-select plans) or goes back to the one they left.
    fn choose_breakout(
        &mut self,
        breakout: BreakoutId,
        by: &str,
        role: Role,
    ) -> Result<Vec<Event>, Denied> {
        let b = self.open_session()?;
        // Going back to the breakout one left is allowed under any plan that lets people leave.
        let returning = b.plan.allow_leave && b.left.get(by) == Some(&breakout);
        let cap = match b.plan.assignment {
            Assignment::SelfSelect { cap } => cap,
            _ if returning => None,
            _ => {
                return Err(Denied::new(
                    ErrorCode::Forbidden,
                    "this plan does not let participants choose a breakout",
                ))
            }
        };
        let room = b.room(breakout)?.clone();
        if !assignable(role) {
            return Err(Denied::invalid(
                "hosts and moderators visit breakouts with join_breakout",
            ));
        }
        let others = b
            .assignments
            .iter()
            .filter(|(i, id)| **id == room.id && i.as_str() != by)
            .count();
        if cap.is_some_and(|cap| others >= cap as usize) {
            return Err(Denied::conflict(format!(
                "breakout {:?} is full",
                room.name
            )));
        }
        let b = self.breakouts.as_mut().expect("open");
        b.assignments.insert(by.to_string(), room.id);
        b.left.remove(by);
        let mut events = self.move_member(by, Some(room.id), false);
        events.extend(self.breakouts_updated());
        Ok(events)
    }

    /// Pushes the end back by `seconds` (from now, if the plan had no end) and re-arms the warning.
    fn extend_breakouts(
        &mut self,
        seconds: u32,
        role: Role,
        now: Millis,
    ) -> Result<Vec<Event>, Denied> {
        moderate(role, "extend breakouts")?;
        if seconds == 0 || seconds > MAX_DURATION_S {
            return Err(Denied::invalid("extend by 1 second to 24 hours"));
        }
        self.open_session()?;
        let ends_at = self
            .breakouts
            .as_ref()
            .and_then(|b| b.ends_at)
            .unwrap_or(now)
            + u64::from(seconds) * 1000;
        let warning_at = self.warning_for(Some(ends_at), now);
        let b = self.breakouts.as_mut().expect("open");
        b.ends_at = Some(ends_at);
        b.warning_at = warning_at;
        Ok(self.breakouts_updated())
    }

    /// A host or moderator speaks to everyone, in the main room and every breakout.
    fn broadcast_to_breakouts(
        &mut self,
        text: &str,
        by: &str,
        role: Role,
    ) -> Result<Vec<Event>, Denied> {
        moderate(role, "broadcast to breakouts")?;
        if self
            .breakout_phase()
            .is_none_or(|p| p == BreakoutPhase::Draft)
        {
            return Err(Denied::conflict("breakouts are not open"));
        }
        let text = check_text(text, MAX_CHAT_CHARS, "broadcast")?;
        let from = self.members[by].member.name.clone();
        Ok(vec![Event::new(
            Audience::Everyone,
            RoomEvent::BreakoutBroadcast { from, text },
        )])
    }

    /// Someone in a breakout calls for staff; facilitators are staff already.
    fn ask_for_help(&mut self, by: &str) -> Result<Vec<Event>, Denied> {
        let m = &self.members[by].member;
        let Some(id) = m.breakout.filter(|_| !m.facilitator) else {
            return Err(Denied::new(
                ErrorCode::NotInRoom,
                "you are not in a breakout",
            ));
        };
        let breakout_name = self
            .breakouts
            .as_ref()
            .and_then(|b| b.room(id).ok())
            .map(|r| r.name.clone())
            .unwrap_or_default();
        Ok(vec![Event::new(
            Audience::staff(),
            RoomEvent::HelpRequested {
                identity: m.identity.clone(),
                name: m.name.clone(),
                breakout: id,
                breakout_name,
            },
        )])
    }

    /// Staff take a help request: the other staff and the asker hear who.
    fn handle_help(&mut self, identity: &str, by: &str, role: Role) -> Result<Vec<Event>, Denied> {
        if !role.is_staff() {
            return Err(Denied::forbidden("handle help requests"));
        }
        if !self.members.contains_key(identity) {
            return Err(Denied::not_found("participant"));
        }
        Ok(vec![Event::new(
            Audience::staff_and(identity),
            RoomEvent::HelpHandled {
                identity: identity.to_string(),
                by_name: self.members[by].member.name.clone(),
            },
        )])
    }

    /// Staff drop into a breakout as its facilitator, without being assigned to it.
    fn visit_breakout(
        &mut self,
        breakout: BreakoutId,
        by: &str,
        role: Role,
    ) -> Result<Vec<Event>, Denied> {
        if !role.is_staff() {
            return Err(Denied::forbidden("visit breakouts"));
        }
        if self
            .breakout_phase()
            .is_none_or(|p| p == BreakoutPhase::Draft)
        {
            return Err(Denied::conflict("breakouts are not open"));
        }
        self.breakouts.as_ref().expect("open").room(breakout)?;
        Ok(self.move_member(by, Some(breakout), true))
    }

    /// Back to the main room. A participant (where the plan allows it) gives up their
    /// assignment but is remembered, so they may choose to go back.
    fn leave_breakout(&mut self, by: &str) -> Result<Vec<Event>, Denied> {
        let m = &self.members[by].member;
        if m.breakout.is_none() {
            return Err(Denied::new(
                ErrorCode::NotInRoom,
                "you are not in a breakout",
            ));
        }
        if !m.facilitator {
            let allowed = self.breakouts.as_ref().is_none_or(|b| b.plan.allow_leave);
            if !allowed {
                return Err(Denied::new(
                    ErrorCode::Forbidden,
                    "this plan keeps participants in their breakouts until they close",
                ));
            }
            if let Some(b) = self.breakouts.as_mut() {
                if let Some(id) = b.assignments.remove(by) {
                    b.left.insert(by.to_string(), id);
                }
            }
        }
        let mut events = self.move_member(by, None, false);
        events.extend(self.breakouts_updated());
        Ok(events)
    }

    /// Starts the countdown to close (the room's default unless given); 0 closes at once.
    fn close_breakouts(
        &mut self,
        countdown_s: Option<u32>,
        role: Role,
        now: Millis,
    ) -> Result<Vec<Event>, Denied> {
        moderate(role, "close breakouts")?;
        let phase = self.breakout_phase();
        if phase != Some(BreakoutPhase::Open) {
            return Err(Denied::conflict(if phase == Some(BreakoutPhase::Closing) {
                "breakouts are already closing"
            } else {
                "breakouts are not open"
            }));
        }
        let countdown = countdown_s.unwrap_or(self.limits.breakout_close_countdown_s);
        if countdown > 3600 {
            return Err(Denied::invalid("countdown is over an hour"));
        }
        Ok(self.start_closing(countdown, now))
    }

    fn breakout_phase(&self) -> Option<BreakoutPhase> {
        self.breakouts.as_ref().map(|b| b.phase)
    }

    fn open_session(&self) -> Result<&BreakoutSession, Denied> {
        self.breakouts
            .as_ref()
            .filter(|b| b.phase == BreakoutPhase::Open)
            .ok_or_else(|| Denied::conflict("breakouts are not open"))
    }

    fn warning_for(&self, ends_at: Option<Millis>, now: Millis) -> Option<Millis> {
        let warn = u64::from(self.limits.breakout_warning_s) * 1000;
        ends_at
            .and_then(|end| end.checked_sub(warn))
            .filter(|w| *w > now)
    }
}

fn moderate(role: Role, what: &str) -> Result<(), Denied> {
    if role.can_moderate() {
        Ok(())
    } else {
        Err(Denied::forbidden(what))
    }
}
