-- The record of a convening, written as it runs: derived from the room's ordered events and
-- keyed by (convening, event seq), so a replay after a restart or takeover writes nothing twice
-- and every node writes the same rows. Times are unix milliseconds. Portable SQL only.

-- Attendance: one row per person an event moved (join, leave, timeout, away, back, move).
CREATE TABLE record_presence (
    convening_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    team TEXT NOT NULL,                -- the token's `team` attribute; '' when none
    role TEXT NOT NULL,
    kind TEXT NOT NULL,                -- 'join', 'leave', 'timeout', 'away', 'back', 'move'
    breakout BIGINT,                   -- where the person is after it (NULL: the main room)
    at BIGINT NOT NULL,
    PRIMARY KEY (convening_id, seq, identity)
);
-- A report reads one convening's rows by person, in order; erasing a person finds theirs.
CREATE INDEX record_presence_by_person ON record_presence (convening_id, identity, seq);
CREATE INDEX record_presence_by_identity ON record_presence (identity);

-- Times the room was not running (a node killed, then rebuilt): gaps, not leaving.
CREATE TABLE record_gaps (
    convening_id TEXT NOT NULL,
    from_at BIGINT NOT NULL,
    to_at BIGINT NOT NULL,
    PRIMARY KEY (convening_id, from_at)
);

-- When a node last saw the convening's room running (a heartbeat): a restart's gap starts here.
CREATE TABLE record_alive (
    convening_id TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);

-- The chat transcript; a deleted message's row is deleted.
CREATE TABLE record_chat (
    convening_id TEXT NOT NULL,
    message_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    identity TEXT NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    breakout BIGINT,
    at BIGINT NOT NULL,
    PRIMARY KEY (convening_id, message_id)
);
CREATE INDEX record_chat_by_identity ON record_chat (identity);

-- Questions in their latest state (the event with the highest seq wins).
CREATE TABLE record_questions (
    convening_id TEXT NOT NULL,
    question_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    author TEXT,                       -- NULL when asked anonymously
    author_name TEXT,
    text TEXT NOT NULL,
    state TEXT NOT NULL,
    votes BIGINT NOT NULL,
    answer TEXT,
    asked_at BIGINT NOT NULL,
    answered_at BIGINT,
    PRIMARY KEY (convening_id, question_id)
);
CREATE INDEX record_questions_by_author ON record_questions (author);

-- Polls with their results (counts: JSON array per option; NULL until someone may see them).
CREATE TABLE record_polls (
    convening_id TEXT NOT NULL,
    poll_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    question TEXT NOT NULL,
    options TEXT NOT NULL,             -- JSON array of strings
    counts TEXT,
    voters BIGINT,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    closed_at BIGINT,
    PRIMARY KEY (convening_id, poll_id)
);

-- Breakout names, for the report.
CREATE TABLE record_breakouts (
    convening_id TEXT NOT NULL,
    breakout BIGINT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (convening_id, breakout)
);
