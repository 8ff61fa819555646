//! The `convenings` table as scheduling uses it: convenings put (created or changed before they start), listed by start, and deleted when cancelled; `record.rs` reads one, and ends it.

use crate::record::{bind_convening, convening, CONVENING_COLUMNS};
use crate::{Store, StoreError};

/// One row of `convenings` (times in unix milliseconds; `plan` is JSON): the record's type.
pub type ConveningRow = crate::record::Convening;

impl Store {
    /// Inserts a convening, or replaces the one with its id (a change before it starts).
    pub async fn put_convening(&self, c: &ConveningRow) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO convenings ({CONVENING_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (id) DO UPDATE SET room = excluded.room, title = excluded.title, \
             kind = excluded.kind, state = excluded.state, starts_at = excluded.starts_at, \
             ends_at = excluded.ends_at, started_at = excluded.started_at, \
             ended_at = excluded.ended_at, plan = excluded.plan, \
             retention_days = excluded.retention_days, updated_at = excluded.updated_at"
        );
        bind_convening(sqlx::query(&sql), c)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every convening, by planned start (ad hoc ones, without one, last).
    pub async fn convenings(&self) -> Result<Vec<ConveningRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONVENING_COLUMNS} FROM convenings \
             ORDER BY CASE WHEN starts_at IS NULL THEN 1 ELSE 0 END, starts_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(convening).collect::<Result<_, _>>()?)
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
