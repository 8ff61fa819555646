-- Room logs a node could not rebuild from (a bug, a hand edit): kept for whoever investigates,
-- out of the live tables, so a new room of the same name starts with a log of its own.
CREATE TABLE set_aside_inputs (
    room TEXT NOT NULL,
    set_aside_at BIGINT NOT NULL,
    number BIGINT NOT NULL,
    body TEXT NOT NULL
);

CREATE TABLE set_aside_snapshots (
    room TEXT NOT NULL,
    set_aside_at BIGINT NOT NULL,
    through_input BIGINT NOT NULL,
    body TEXT NOT NULL
);
