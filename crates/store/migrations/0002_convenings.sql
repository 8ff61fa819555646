-- Convenings: an event with an id, scheduled ahead or opened ad hoc when a room starts, and
-- the key of everything recorded about it. Times are unix milliseconds; JSON is TEXT.
-- Portable SQL only: the same file runs on SQLite and PostgreSQL.
CREATE TABLE convenings (
    id TEXT PRIMARY KEY,               -- UUID
    room TEXT NOT NULL,                -- the room it runs in
    title TEXT NOT NULL,
    kind TEXT NOT NULL,                -- 'webcast' or 'exchange'
    state TEXT NOT NULL,               -- 'scheduled', 'live' or 'ended'
    starts_at BIGINT,                  -- planned start (NULL: ad hoc)
    ends_at BIGINT,                    -- planned end
    started_at BIGINT,                 -- when the host started it (or the room opened)
    ended_at BIGINT,
    plan TEXT NOT NULL,                -- JSON: presenters, moderators, breakout plan by team, settings
    retention_days BIGINT NOT NULL,    -- its record is deleted this long after it ends
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A room has at most one live convening; lookups go by room and state.
CREATE INDEX convenings_by_room ON convenings (room, state);
