-- A node's durable room logs: what it needs to rebuild its live rooms after a restart.
-- Portable SQL only (TEXT, BIGINT): the same file runs on SQLite and PostgreSQL.

-- Rooms whose log is live in this store, until they close.
CREATE TABLE rooms (
    name TEXT PRIMARY KEY,
    opened_at BIGINT NOT NULL
);

-- A room's recorded inputs (JSON, with their time) after its last snapshot, numbered from 1.
CREATE TABLE room_inputs (
    room TEXT NOT NULL,
    number BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (room, number)
);

-- A room's last snapshot (JSON) and the last input it covers.
CREATE TABLE room_snapshots (
    room TEXT PRIMARY KEY,
    through_input BIGINT NOT NULL,
    body TEXT NOT NULL
);
