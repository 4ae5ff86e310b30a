-- Meetings and their participant history. Times are unix milliseconds (portable across the
-- SQLite and PostgreSQL stores).
CREATE TABLE meetings (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    code          TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    password_hash TEXT,
    host_identity TEXT    NOT NULL,
    host_name     TEXT,
    created_by    TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('waiting', 'active', 'ended')),
    created_at    BIGINT  NOT NULL,
    started_at    BIGINT,
    ended_at      BIGINT
);
CREATE INDEX meetings_host ON meetings (host_identity, created_at);
CREATE INDEX meetings_creator ON meetings (created_by, created_at);

CREATE TABLE meeting_participants (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    meeting_id BIGINT  NOT NULL REFERENCES meetings (id),
    identity   TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('host', 'participant', 'agent')),
    joined_at  BIGINT  NOT NULL,
    left_at    BIGINT
);
CREATE INDEX meeting_participants_meeting ON meeting_participants (meeting_id, joined_at);
