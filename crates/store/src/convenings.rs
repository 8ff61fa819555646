//! The `convenings` table as scheduling uses it: convenings put (created or changed before they start), listed by start, and deleted when cancelled; `record.rs` reads one, and ends it.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Store, StoreError};

/// One row of `convenings` (times in unix milliseconds; `plan` is JSON): the record's type.
pub type ConveningRow = crate::record::Convening;

const COLUMNS: &str = "id, room, title, kind, state, starts_at, ends_at, started_at, ended_at, \
                       plan, retention_days, created_at, updated_at";

fn row(r: &AnyRow) -> Result<ConveningRow, sqlx::Error> {
    Ok(ConveningRow {
        id: r.try_get(0)?,
        room: r.try_get(1)?,
        title: r.try_get(2)?,
        kind: r.try_get(3)?,
        state: r.try_get(4)?,
        starts_at: r.try_get(5)?,
        ends_at: r.try_get(6)?,
        started_at: r.try_get(7)?,
        ended_at: r.try_get(8)?,
        plan: r.try_get(9)?,
        retention_days: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
    })
}

impl Store {
    /// Inserts a convening, or replaces the one with its id (a change before it starts).
    pub async fn put_convening(&self, c: &ConveningRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO convenings ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (id) DO UPDATE SET room = excluded.room, title = excluded.title, \
             kind = excluded.kind, state = excluded.state, starts_at = excluded.starts_at, \
             ends_at = excluded.ends_at, started_at = excluded.started_at, \
             ended_at = excluded.ended_at, plan = excluded.plan, \
             retention_days = excluded.retention_days, updated_at = excluded.updated_at"
        ))
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every convening, by planned start (ad hoc ones, without one, last).
    pub async fn convenings(&self) -> Result<Vec<ConveningRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM convenings \
             ORDER BY CASE WHEN starts_at IS NULL THEN 1 ELSE 0 END, starts_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Deletes a convening; false when there was none.
    pub async fn delete_convening(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM convenings WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
