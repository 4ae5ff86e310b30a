-- Final transcript lines, searchable with PostgreSQL full-text search. Times are unix ms.
CREATE TABLE transcripts (
    id               BIGSERIAL PRIMARY KEY,
    room             TEXT    NOT NULL,
    meeting_code     TEXT,
    speaker_identity TEXT    NOT NULL,
    speaker_name     TEXT    NOT NULL,
    start_ms         BIGINT  NOT NULL,
    end_ms           BIGINT  NOT NULL,
    text             TEXT    NOT NULL,
    search           TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);
CREATE INDEX transcripts_room ON transcripts (room, start_ms);
CREATE INDEX transcripts_meeting ON transcripts (meeting_code, start_ms);
CREATE INDEX transcripts_search ON transcripts USING GIN (search);
