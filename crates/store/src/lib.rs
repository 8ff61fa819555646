//! The durable store: one schema with versioned migrations over SQLite or PostgreSQL, chosen by URL; holds rooms' logs and snapshots, and convenings' records.

pub mod convenings;
pub mod group;
pub mod record;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

pub use convenings::ConveningRow;
pub use group::GroupCommit;

/// The migrations, embedded in the binary: a node migrates its store when it starts.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?}: expected sqlite://... or postgres://...")]
    Url(String),
    #[error("store: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store commit: {0}")]
    Commit(String),
    #[error("the store's writer has stopped")]
    Stopped,
}

/// Which engine a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn of(url: &str) -> Result<Engine, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            Err(StoreError::Url(url.to_string()))
        }
    }
}

/// SQLite's `synchronous` in WAL mode: `Full` fsyncs the log at every commit (nothing
/// committed is lost to a power cut); `Normal` survives a crashed process but not a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sync {
    #[default]
    Full,
    Normal,
}

#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub url: String,
    pub max_connections: u32,
    pub sqlite_sync: Sync,
}

/// One write of a group commit.
#[derive(Clone, Debug)]
pub enum Write {
    /// A room's log starts (at unix ms `at`); repeating it changes nothing.
    Open { room: String, at: i64 },
    /// One recorded input.
    Input {
        room: String,
        number: u64,
        body: String,
    },
    /// The room's state through input `through`: the inputs it covers are dropped.
    Snapshot {
        room: String,
        through: u64,
        body: String,
    },
    /// The room closed: its log goes.
    Close { room: String },
    /// A row of a convening's record (idempotent: a replay writes nothing twice).
    Record(record::RecordWrite),
}

/// A room's log as stored: the last snapshot and the inputs after it, in order.
#[derive(Debug, Default)]
pub struct RoomLog {
    pub snapshot: Option<(u64, String)>,
    pub inputs: Vec<(u64, String)>,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
}

impl Store {
    /// Connects (creating a SQLite file when the URL says `mode=rwc`) and runs the migrations.
    pub async fn open(settings: &StoreSettings) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = Engine::of(&settings.url)?;
        let options = AnyConnectOptions::from_str(&settings.url)?;
        let sync = match settings.sqlite_sync {
            Sync::Full => "PRAGMA synchronous = FULL",
            Sync::Normal => "PRAGMA synchronous = NORMAL",
        };
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL: a commit appends to the log and readers never block the writer.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query(sync).execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool, engine })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Applies `writes` in order, in one transaction: all of them are durable, or none.
    pub async fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for write in writes {
            match write {
                Write::Open { room, at } => {
                    sqlx::query(
                        "INSERT INTO rooms (name, opened_at) VALUES ($1, $2) \
                         ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(room.as_str())
                    .bind(*at)
                    .execute(&mut *tx)
                    .await?;
                }
                Write::Input { room, number, body } => {
                    sqlx::query("INSERT INTO room_inputs (room, number, body) VALUES ($1, $2, $3)")
                        .bind(room.as_str())
                        .bind(*number as i64)
                        .bind(body.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                Write::Snapshot {
                    room,
                    through,
                    body,
                } => {
                    sqlx::query(
                        "INSERT INTO room_snapshots (room, through_input, body) VALUES ($1, $2, $3) \
                         ON CONFLICT (room) DO UPDATE SET through_input = excluded.through_input, \
                         body = excluded.body",
                    )
                    .bind(room.as_str())
                    .bind(*through as i64)
                    .bind(body.as_str())
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM room_inputs WHERE room = $1 AND number <= $2")
                        .bind(room.as_str())
                        .bind(*through as i64)
                        .execute(&mut *tx)
                        .await?;
                }
                Write::Record(write) => record::apply(&mut tx, write).await?,
                Write::Close { room } => {
                    for table in [
                        "room_inputs WHERE room",
                        "room_snapshots WHERE room",
                        "rooms WHERE name",
                    ] {
                        sqlx::query(&format!("DELETE FROM {table} = $1"))
                            .bind(room.as_str())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The rooms with a live log, by name.
    pub async fn rooms(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM rooms ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// Moves a room's log out of the live tables (into `set_aside_*`, stamped `at`): a log
    /// the node cannot rebuild from must not stop a new room of that name from starting.
    pub async fn set_aside(&self, room: &str, at: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO set_aside_inputs (room, set_aside_at, number, body) \
             SELECT room, $2, number, body FROM room_inputs WHERE room = $1",
        )
        .bind(room)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO set_aside_snapshots (room, set_aside_at, through_input, body) \
             SELECT room, $2, through_input, body FROM room_snapshots WHERE room = $1",
        )
        .bind(room)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        for table in [
            "room_inputs WHERE room",
            "room_snapshots WHERE room",
            "rooms WHERE name",
        ] {
            sqlx::query(&format!("DELETE FROM {table} = $1"))
                .bind(room)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many inputs of `room` were set aside (for tests and operators).
    pub async fn set_aside_inputs(&self, room: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM set_aside_inputs WHERE room = $1")
            .bind(room)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? as u64)
    }

    /// A room's snapshot and the inputs after it.
    pub async fn room_log(&self, room: &str) -> Result<RoomLog, StoreError> {
        let snapshot =
            sqlx::query("SELECT through_input, body FROM room_snapshots WHERE room = $1")
                .bind(room)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| {
                    Ok::<_, sqlx::Error>((
                        r.try_get::<i64, _>(0)? as u64,
                        r.try_get::<String, _>(1)?,
                    ))
                })
                .transpose()?;
        let after = snapshot.as_ref().map_or(0, |(n, _)| *n) as i64;
        let inputs = sqlx::query(
            "SELECT number, body FROM room_inputs WHERE room = $1 AND number > $2 ORDER BY number",
        )
        .bind(room)
        .bind(after)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>(0)? as u64, r.try_get::<String, _>(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(RoomLog { snapshot, inputs })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
