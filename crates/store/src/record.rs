//! The record of a convening: its rows written idempotently by (convening, event seq) through the group commit, the convenings' lifecycle (ad hoc, ended, retention), reads for reports, and deletions (a record, a person).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Store, StoreError};

/// One row of a record, derived from one room event.
#[derive(Clone, Debug)]
pub enum RecordWrite {
    Presence(Presence),
    /// The room did not run from `from` to `to` (its node was down).
    Gap {
        convening: String,
        from: i64,
        to: i64,
    },
    /// The room was running at `at` (a heartbeat).
    Alive {
        convening: String,
        at: i64,
    },
    Chat(Chat),
    ChatDeleted {
        convening: String,
        message_id: i64,
    },
    Question(Question),
    QuestionVotes {
        convening: String,
        question_id: i64,
        seq: i64,
        votes: i64,
    },
    Poll(Poll),
    Breakout {
        convening: String,
        breakout: i64,
        name: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub convening: String,
    pub seq: i64,
    pub identity: String,
    pub name: String,
    pub team: String,
    pub role: String,
    /// `join`, `leave`, `timeout`, `away`, `back` or `move`.
    pub kind: String,
    pub breakout: Option<i64>,
    pub at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chat {
    pub convening: String,
    pub message_id: i64,
    pub seq: i64,
    pub identity: String,
    pub name: String,
    pub text: String,
    pub breakout: Option<i64>,
    pub at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub convening: String,
    pub question_id: i64,
    pub seq: i64,
    pub author: Option<String>,
    pub author_name: Option<String>,
    pub text: String,
    pub state: String,
    pub votes: i64,
    pub answer: Option<String>,
    pub asked_at: i64,
    pub answered_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poll {
    pub convening: String,
    pub poll_id: i64,
    pub seq: i64,
    pub question: String,
    /// JSON arrays, as the server wrote them.
    pub options: String,
    pub counts: Option<String>,
    pub voters: Option<i64>,
    pub state: String,
    pub created_at: i64,
    pub closed_at: Option<i64>,
}

/// A convening as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Convening {
    pub id: String,
    pub room: String,
    pub title: String,
    pub kind: String,
    pub state: String,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub plan: String,
    pub retention_days: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Everything recorded about one convening, in a fixed order (so every node reads the same).
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// By identity, then seq.
    pub presence: Vec<Presence>,
    /// By start.
    pub gaps: Vec<(i64, i64)>,
    /// By message id.
    pub chat: Vec<Chat>,
    /// By question id.
    pub questions: Vec<Question>,
    /// By poll id.
    pub polls: Vec<Poll>,
    /// By breakout id.
    pub breakouts: Vec<(i64, String)>,
}

/// What erasing one person removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Erased {
    pub presence: u64,
    pub chat: u64,
    pub questions: u64,
}

pub(crate) const CONVENING_COLUMNS: &str =
    "id, room, title, kind, state, starts_at, ends_at, started_at, \
     ended_at, plan, retention_days, created_at, updated_at";

/// Tables holding a convening's record (not the convening itself).
const RECORD_TABLES: [&str; 7] = [
    "record_presence",
    "record_alive",
    "record_gaps",
    "record_chat",
    "record_questions",
    "record_polls",
    "record_breakouts",
];

/// Applies one record write inside the group commit's transaction. Every write is idempotent:
/// inserts keyed by (convening, seq or id) do nothing twice, and updates only take a later seq.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    write: &RecordWrite,
) -> Result<(), sqlx::Error> {
    match write {
        RecordWrite::Presence(p) => {
            sqlx::query(
                "INSERT INTO record_presence (convening_id, seq, identity, name, team, role, kind, \
                 breakout, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (convening_id, seq, identity) DO NOTHING",
            )
            .bind(p.convening.as_str())
            .bind(p.seq)
            .bind(p.identity.as_str())
            .bind(p.name.as_str())
            .bind(p.team.as_str())
            .bind(p.role.as_str())
            .bind(p.kind.as_str())
            .bind(p.breakout)
            .bind(p.at)
            .execute(conn)
            .await?;
        }
        RecordWrite::Gap {
            convening,
            from,
            to,
        } => {
            sqlx::query(
                "INSERT INTO record_gaps (convening_id, from_at, to_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (convening_id, from_at) DO NOTHING",
            )
            .bind(convening.as_str())
            .bind(*from)
            .bind(*to)
            .execute(conn)
            .await?;
        }
        RecordWrite::Alive { convening, at } => {
            sqlx::query(
                "INSERT INTO record_alive (convening_id, at) VALUES ($1, $2) \
                 ON CONFLICT (convening_id) DO UPDATE SET at = excluded.at \
                 WHERE record_alive.at < excluded.at",
            )
            .bind(convening.as_str())
            .bind(*at)
            .execute(conn)
            .await?;
        }
        RecordWrite::Chat(c) => {
            sqlx::query(
                "INSERT INTO record_chat (convening_id, message_id, seq, identity, name, text, \
                 breakout, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (convening_id, message_id) DO NOTHING",
            )
            .bind(c.convening.as_str())
            .bind(c.message_id)
            .bind(c.seq)
            .bind(c.identity.as_str())
            .bind(c.name.as_str())
            .bind(c.text.as_str())
            .bind(c.breakout)
            .bind(c.at)
            .execute(conn)
            .await?;
        }
        RecordWrite::ChatDeleted {
            convening,
            message_id,
        } => {
            sqlx::query("DELETE FROM record_chat WHERE convening_id = $1 AND message_id = $2")
                .bind(convening.as_str())
                .bind(*message_id)
                .execute(conn)
                .await?;
        }
        RecordWrite::Question(q) => upsert_question(conn, q).await?,
        RecordWrite::QuestionVotes {
            convening,
            question_id,
            seq,
            votes,
        } => {
            sqlx::query(
                "UPDATE record_questions SET votes = $1, seq = $2 \
                 WHERE convening_id = $3 AND question_id = $4 AND seq < $2",
            )
            .bind(*votes)
            .bind(*seq)
            .bind(convening.as_str())
            .bind(*question_id)
            .execute(conn)
            .await?;
        }
        RecordWrite::Poll(p) => upsert_poll(conn, p).await?,
        RecordWrite::Breakout {
            convening,
            breakout,
            name,
        } => {
            sqlx::query(
                "INSERT INTO record_breakouts (convening_id, breakout, name) VALUES ($1, $2, $3) \
                 ON CONFLICT (convening_id, breakout) DO UPDATE SET name = excluded.name",
            )
            .bind(convening.as_str())
            .bind(*breakout)
            .bind(name.as_str())
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

/// A question's latest state: the row takes only a later seq.
async fn upsert_question(conn: &mut AnyConnection, q: &Question) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO record_questions (convening_id, question_id, seq, author, \
         author_name, text, state, votes, answer, asked_at, answered_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (convening_id, question_id) DO UPDATE SET seq = excluded.seq, \
         author = excluded.author, author_name = excluded.author_name, \
         text = excluded.text, state = excluded.state, votes = excluded.votes, \
         answer = excluded.answer, answered_at = excluded.answered_at \
         WHERE record_questions.seq < excluded.seq",
    )
    .bind(q.convening.as_str())
    .bind(q.question_id)
    .bind(q.seq)
    .bind(q.author.as_deref())
    .bind(q.author_name.as_deref())
    .bind(q.text.as_str())
    .bind(q.state.as_str())
    .bind(q.votes)
    .bind(q.answer.as_deref())
    .bind(q.asked_at)
    .bind(q.answered_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A poll's latest state: the row takes only a later seq.
async fn upsert_poll(conn: &mut AnyConnection, p: &Poll) -> Result<(), sqlx::Error> {
    // A viewer's copy without results never hides the results staff saw.
    sqlx::query(
        "INSERT INTO record_polls (convening_id, poll_id, seq, question, options, counts, \
         voters, state, created_at, closed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (convening_id, poll_id) DO UPDATE SET seq = excluded.seq, \
         question = excluded.question, options = excluded.options, \
         counts = COALESCE(excluded.counts, record_polls.counts), \
         voters = COALESCE(excluded.voters, record_polls.voters), \
         state = excluded.state, closed_at = excluded.closed_at \
         WHERE record_polls.seq < excluded.seq",
    )
    .bind(p.convening.as_str())
    .bind(p.poll_id)
    .bind(p.seq)
    .bind(p.question.as_str())
    .bind(p.options.as_str())
    .bind(p.counts.as_deref())
    .bind(p.voters)
    .bind(p.state.as_str())
    .bind(p.created_at)
    .bind(p.closed_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Binds a convening's columns, in `CONVENING_COLUMNS` order, as `$1`..`$13`.
pub(crate) fn bind_convening<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    c: &'q Convening,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(c.id.as_str())
        .bind(c.room.as_str())
        .bind(c.title.as_str())
        .bind(c.kind.as_str())
        .bind(c.state.as_str())
        .bind(c.starts_at)
        .bind(c.ends_at)
        .bind(c.started_at)
        .bind(c.ended_at)
        .bind(c.plan.as_str())
        .bind(c.retention_days)
        .bind(c.created_at)
        .bind(c.updated_at)
}

pub(crate) fn convening(row: &AnyRow) -> Result<Convening, sqlx::Error> {
    Ok(Convening {
        id: row.try_get(0)?,
        room: row.try_get(1)?,
        title: row.try_get(2)?,
        kind: row.try_get(3)?,
        state: row.try_get(4)?,
        starts_at: row.try_get(5)?,
        ends_at: row.try_get(6)?,
        started_at: row.try_get(7)?,
        ended_at: row.try_get(8)?,
        plan: row.try_get(9)?,
        retention_days: row.try_get(10)?,
        created_at: row.try_get(11)?,
        updated_at: row.try_get(12)?,
    })
}

impl Store {
    pub async fn convening(&self, id: &str) -> Result<Option<Convening>, StoreError> {
        let sql = format!("SELECT {CONVENING_COLUMNS} FROM convenings WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(convening).transpose()?)
    }

    /// The room's live convening (the earliest started, should there be two), or else the
    /// one scheduled in it: its room holds the lobby and the backstage until it starts, and
    /// what happens there is that convening's.
    pub async fn live_convening(&self, room: &str) -> Result<Option<Convening>, StoreError> {
        let sql = format!(
            "SELECT {CONVENING_COLUMNS} FROM convenings WHERE room = $1 \
             AND state IN ('live', 'scheduled') \
             ORDER BY CASE WHEN state = 'live' THEN 0 ELSE 1 END, created_at, id LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(room)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(convening).transpose()?)
    }

    /// Inserts a convening (the caller chose its id and fields).
    pub async fn insert_convening(&self, c: &Convening) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO convenings ({CONVENING_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        bind_convening(sqlx::query(&sql), c)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// When the convening's room was last seen running (its heartbeat).
    pub async fn alive_at(&self, id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT at FROM record_alive WHERE convening_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Ends a live convening at `at`; true only for the one call that ended it (on any node),
    /// so what follows an end (its webhook) happens once.
    pub async fn end_convening(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE convenings SET state = 'ended', ended_at = $1, updated_at = $1 \
             WHERE id = $2 AND state = 'live'",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The room's convenings in `state`, newest first.
    pub async fn convenings_of(
        &self,
        room: &str,
        state: &str,
    ) -> Result<Vec<Convening>, StoreError> {
        let sql = format!(
            "SELECT {CONVENING_COLUMNS} FROM convenings WHERE room = $1 AND state = $2 \
             ORDER BY COALESCE(ended_at, created_at) DESC, id"
        );
        let rows = sqlx::query(&sql)
            .bind(room)
            .bind(state)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(convening).collect::<Result<_, _>>()?)
    }

    pub async fn set_retention(&self, id: &str, days: i64, at: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE convenings SET retention_days = $1, updated_at = $2 WHERE id = $3")
                .bind(days)
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Everything recorded about a convening, in a fixed order.
    pub async fn record(&self, id: &str) -> Result<Record, StoreError> {
        let presence = sqlx::query(
            "SELECT seq, identity, name, team, role, kind, breakout, at FROM record_presence \
             WHERE convening_id = $1 ORDER BY identity, seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Presence {
                convening: id.to_string(),
                seq: r.try_get(0)?,
                identity: r.try_get(1)?,
                name: r.try_get(2)?,
                team: r.try_get(3)?,
                role: r.try_get(4)?,
                kind: r.try_get(5)?,
                breakout: r.try_get(6)?,
                at: r.try_get(7)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let gaps = sqlx::query(
            "SELECT from_at, to_at FROM record_gaps WHERE convening_id = $1 ORDER BY from_at",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let chat = sqlx::query(
            "SELECT message_id, seq, identity, name, text, breakout, at FROM record_chat \
             WHERE convening_id = $1 ORDER BY message_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Chat {
                convening: id.to_string(),
                message_id: r.try_get(0)?,
                seq: r.try_get(1)?,
                identity: r.try_get(2)?,
                name: r.try_get(3)?,
                text: r.try_get(4)?,
                breakout: r.try_get(5)?,
                at: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Record {
            presence,
            gaps,
            chat,
            questions: self.record_questions(id).await?,
            polls: self.record_polls(id).await?,
            breakouts: sqlx::query(
                "SELECT breakout, name FROM record_breakouts WHERE convening_id = $1 \
                 ORDER BY breakout",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?,
        })
    }

    async fn record_questions(&self, id: &str) -> Result<Vec<Question>, StoreError> {
        let rows = sqlx::query(
            "SELECT question_id, seq, author, author_name, text, state, votes, answer, asked_at, \
             answered_at FROM record_questions WHERE convening_id = $1 ORDER BY question_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let questions = rows
            .iter()
            .map(|r| {
                Ok(Question {
                    convening: id.to_string(),
                    question_id: r.try_get(0)?,
                    seq: r.try_get(1)?,
                    author: r.try_get(2)?,
                    author_name: r.try_get(3)?,
                    text: r.try_get(4)?,
                    state: r.try_get(5)?,
                    votes: r.try_get(6)?,
                    answer: r.try_get(7)?,
                    asked_at: r.try_get(8)?,
                    answered_at: r.try_get(9)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(questions)
    }

    async fn record_polls(&self, id: &str) -> Result<Vec<Poll>, StoreError> {
        let rows = sqlx::query(
            "SELECT poll_id, seq, question, options, counts, voters, state, created_at, closed_at \
             FROM record_polls WHERE convening_id = $1 ORDER BY poll_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let polls = rows
            .iter()
            .map(|r| {
                Ok(Poll {
                    convening: id.to_string(),
                    poll_id: r.try_get(0)?,
                    seq: r.try_get(1)?,
                    question: r.try_get(2)?,
                    options: r.try_get(3)?,
                    counts: r.try_get(4)?,
                    voters: r.try_get(5)?,
                    state: r.try_get(6)?,
                    created_at: r.try_get(7)?,
                    closed_at: r.try_get(8)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(polls)
    }

    /// Deletes a convening's record (the convening stays, so its id still answers).
    pub async fn delete_record(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for table in RECORD_TABLES {
            sqlx::query(&format!("DELETE FROM {table} WHERE convening_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes one person from every record: their attendance, their chat messages and the
    /// questions they asked (named or not) are deleted.
    pub async fn erase_person(&self, identity: &str) -> Result<Erased, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut erased = Erased::default();
        for (table, column, count) in [
            ("record_presence", "identity", &mut erased.presence),
            ("record_chat", "identity", &mut erased.chat),
            ("record_questions", "author", &mut erased.questions),
        ] {
            *count = sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                .bind(identity)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(erased)
    }

    /// Deletes the records of convenings that ended more than their retention before `now`
    /// (unix ms); the ids swept. The convening rows go too.
    pub async fn sweep_expired(&self, now: i64) -> Result<Vec<String>, StoreError> {
        const DAY_MS: i64 = 86_400_000;
        let rows = sqlx::query(
            "SELECT id FROM convenings WHERE state = 'ended' AND ended_at IS NOT NULL \
             AND ended_at + retention_days * $1 <= $2 ORDER BY id",
        )
        .bind(DAY_MS)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        for id in &ids {
            self.delete_record(id).await?;
            sqlx::query("DELETE FROM convenings WHERE id = $1")
                .bind(id.as_str())
                .execute(&self.pool)
                .await?;
        }
        Ok(ids)
    }
}
