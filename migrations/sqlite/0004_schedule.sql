-- Scheduled meetings (series), their occurrences with one status machine each, every status
-- change, the agent's auto-join attempts, and per-host preferences. Times are unix ms;
-- local times ('YYYY-MM-DDTHH:MM:SS') are wall-clock times in the series' IANA zone.
-- Booleans are 0/1 integers (the same on SQLite and PostgreSQL through sqlx's Any driver).
CREATE TABLE schedules (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    title           TEXT    NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    host_identity   TEXT    NOT NULL,
    time_zone       TEXT    NOT NULL,
    start_local     TEXT    NOT NULL,
    duration_ms     BIGINT  NOT NULL,
    rrule           TEXT,
    exdates         TEXT    NOT NULL DEFAULT '[]',
    lead_id         BIGINT,
    question_set_id BIGINT,
    auto_join       BIGINT  NOT NULL DEFAULT 0,
    meeting_code    TEXT    NOT NULL UNIQUE,
    invitees        TEXT    NOT NULL DEFAULT '[]',
    status          TEXT    NOT NULL CHECK (status IN ('active', 'cancelled')),
    version         BIGINT  NOT NULL DEFAULT 1,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX schedules_host ON schedules (host_identity, status);

CREATE TABLE occurrences (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id     BIGINT  NOT NULL REFERENCES schedules (id),
    local_start     TEXT    NOT NULL,
    starts_at       BIGINT  NOT NULL,
    ends_at         BIGINT  NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('scheduled', 'ready', 'ongoing', 'completed', 'cancelled', 'missed')),
    status_at       BIGINT  NOT NULL,
    anyone_came     BIGINT  NOT NULL DEFAULT 0,
    skip_agent      BIGINT  NOT NULL DEFAULT 0,
    bot_status      TEXT,
    bot_status_at   BIGINT,
    bot_reason      TEXT,
    bot_attempts    BIGINT  NOT NULL DEFAULT 0,
    bot_next_at     BIGINT,
    bot_joined_at   BIGINT,
    UNIQUE (schedule_id, local_start)
);
CREATE INDEX occurrences_due ON occurrences (status, starts_at);

CREATE TABLE occurrence_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    occurrence_id BIGINT  NOT NULL REFERENCES occurrences (id),
    at            BIGINT  NOT NULL,
    from_status   TEXT    NOT NULL,
    to_status     TEXT    NOT NULL,
    cause         TEXT    NOT NULL,
    node          TEXT    NOT NULL
);
CREATE INDEX occurrence_events_occurrence ON occurrence_events (occurrence_id, at);

CREATE TABLE auto_join_logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    occurrence_id BIGINT  NOT NULL REFERENCES occurrences (id),
    at            BIGINT  NOT NULL,
    attempt       BIGINT  NOT NULL,
    outcome       TEXT    NOT NULL,
    error         TEXT,
    node          TEXT    NOT NULL
);
CREATE INDEX auto_join_logs_occurrence ON auto_join_logs (occurrence_id, at);

CREATE TABLE host_preferences (
    host_identity       TEXT   PRIMARY KEY,
    auto_join           BIGINT NOT NULL DEFAULT 1,
    excluded_keywords   TEXT   NOT NULL DEFAULT '[]',
    join_buffer_minutes BIGINT NOT NULL DEFAULT 1,
    question_set_id     BIGINT,
    updated_at          BIGINT NOT NULL
);
