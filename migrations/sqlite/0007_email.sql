-- Email invitations, reminders and summaries, each with its delivery status. Times unix ms.
CREATE TABLE emails (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id   BIGINT  NOT NULL REFERENCES schedules (id),
    occurrence_id BIGINT,
    kind          TEXT    NOT NULL CHECK (kind IN ('invitation', 'reminder', 'summary')),
    to_addr       TEXT    NOT NULL,
    to_name       TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    ics           TEXT,
    status        TEXT    NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
    attempts      BIGINT  NOT NULL DEFAULT 0,
    next_at       BIGINT  NOT NULL,
    last_error    TEXT,
    created_at    BIGINT  NOT NULL,
    sent_at       BIGINT,
    UNIQUE (schedule_id, occurrence_id, kind, to_addr)
);
CREATE INDEX emails_due ON emails (status, next_at);
