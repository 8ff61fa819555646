//! A convening as stored and as the API shows it: its room, times, state and plan (presenters, moderators, breakout teams, settings).

use std::collections::BTreeMap;

use convene_core::room::operator::Operation;
use convene_signaling::{Millis, QaMode, RoomKind};
use convene_store::ConveningRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `webcast`: presenters on stage and an audience; `exchange`: everyone may publish.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Webcast,
    Exchange,
}

/// `scheduled` (attendees wait in the lobby), `live`, `ended`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Scheduled,
    Live,
    Ended,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Live => "live",
            State::Ended => "ended",
        }
    }
}

/// How attendees go to breakouts: named teams of identities, or by a token attribute.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Breakouts {
    /// Team name -> identities.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<String, Vec<String>>,
    /// Or: a team per value of this token attribute (e.g. `team`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_attribute: Option<String>,
}

/// The room's settings while the convening runs.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PlanSettings {
    /// Questions wait for a moderator's approval.
    pub qa_moderated: bool,
    pub chat_enabled: bool,
    /// The lobby opens by itself at `starts_at`; otherwise when the host starts it.
    pub auto_start: bool,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            qa_moderated: false,
            chat_enabled: true,
            auto_start: false,
        }
    }
}

/// Who does what, as planned.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Plan {
    /// Identities (token `sub`) who present: invites for them are presenters'.
    pub presenters: Vec<String>,
    /// Identities who moderate: invites for them are moderators'.
    pub moderators: Vec<String>,
    pub breakouts: Breakouts,
    pub settings: PlanSettings,
}

/// A convening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Convening {
    pub id: String,
    pub room: String,
    pub title: String,
    pub kind: Kind,
    pub state: State,
    /// Unix milliseconds.
    pub starts_at: Millis,
    pub ends_at: Millis,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub plan: Plan,
    pub retention_days: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Convening {
    pub fn from_row(row: &ConveningRow) -> Result<Convening, String> {
        let kind = match row.kind.as_str() {
            "webcast" => Kind::Webcast,
            "exchange" => Kind::Exchange,
            other => return Err(format!("unknown kind {other:?}")),
        };
        let state = match row.state.as_str() {
            "scheduled" => State::Scheduled,
            "live" => State::Live,
            "ended" => State::Ended,
            other => return Err(format!("unknown state {other:?}")),
        };
        let plan: Plan = serde_json::from_str(&row.plan).map_err(|e| e.to_string())?;
        let ms = |v: Option<i64>| v.map(|v| v.max(0) as Millis);
        Ok(Convening {
            id: row.id.clone(),
            room: row.room.clone(),
            title: row.title.clone(),
            kind,
            state,
            // Ad hoc convenings (the record's) have no planned times: they started on opening.
            starts_at: ms(row.starts_at.or(row.started_at)).unwrap_or(0),
            ends_at: ms(row.ends_at).unwrap_or(0),
            started_at: ms(row.started_at),
            ended_at: ms(row.ended_at),
            plan,
            retention_days: row.retention_days.clamp(0, u32::MAX as i64) as u32,
            created_at: row.created_at.max(0) as Millis,
            updated_at: row.updated_at.max(0) as Millis,
        })
    }

    pub fn to_row(&self) -> ConveningRow {
        ConveningRow {
            id: self.id.clone(),
            room: self.room.clone(),
            title: self.title.clone(),
            kind: match self.kind {
                Kind::Webcast => "webcast",
                Kind::Exchange => "exchange",
            }
            .into(),
            state: self.state.as_str().into(),
            starts_at: Some(self.starts_at as i64),
            ends_at: Some(self.ends_at as i64),
            started_at: self.started_at.map(|v| v as i64),
            ended_at: self.ended_at.map(|v| v as i64),
            plan: serde_json::to_string(&self.plan).expect("a plan serialises"),
            retention_days: i64::from(self.retention_days),
            created_at: self.created_at as i64,
            updated_at: self.updated_at as i64,
        }
    }

    /// The room's settings from the plan.
    pub fn settings_operation(&self) -> Operation {
        Operation::Configure {
            kind: Some(match self.kind {
                Kind::Webcast => RoomKind::Webcast,
                Kind::Exchange => RoomKind::Meeting,
            }),
            chat_enabled: Some(self.plan.settings.chat_enabled),
            qa_mode: Some(if self.plan.settings.qa_moderated {
                QaMode::Moderated
            } else {
                QaMode::Open
            }),
        }
    }

    /// The role an invite for `identity` carries, from the plan.
    pub fn planned_role(&self, identity: &str) -> convene_signaling::Role {
        use convene_signaling::Role;
        if self.plan.moderators.iter().any(|m| m == identity) {
            Role::Moderator
        } else if self.plan.presenters.iter().any(|p| p == identity) {
            Role::Presenter
        } else {
            Role::Participant
        }
    }

    /// The attributes an invite for `identity` carries: their team, when the plan names it.
    pub fn planned_attrs(&self, identity: &str) -> BTreeMap<String, String> {
        let team = self
            .plan
            .breakouts
            .teams
            .iter()
            .find_map(|(team, members)| {
                members.iter().any(|m| m == identity).then(|| team.clone())
            });
        let key = self
            .plan
            .breakouts
            .by_attribute
            .clone()
            .unwrap_or_else(|| "team".into());
        team.map(|t| BTreeMap::from([(key, t)])).unwrap_or_default()
    }
}
