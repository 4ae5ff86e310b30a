-- Final transcript lines, searchable with FTS5. Times are unix milliseconds.
CREATE TABLE transcripts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    room             TEXT    NOT NULL,
    meeting_code     TEXT,
    speaker_identity TEXT    NOT NULL,
    speaker_name     TEXT    NOT NULL,
    start_ms         BIGINT  NOT NULL,
    end_ms           BIGINT  NOT NULL,
    text             TEXT    NOT NULL
);
CREATE INDEX transcripts_room ON transcripts (room, start_ms);
CREATE INDEX transcripts_meeting ON transcripts (meeting_code, start_ms);

-- External-content FTS index kept in step by triggers, so text is stored once.
CREATE VIRTUAL TABLE transcripts_fts USING fts5 (text, content = 'transcripts', content_rowid = 'id', tokenize = 'porter unicode61');
CREATE TRIGGER transcripts_ai AFTER INSERT ON transcripts BEGIN
    INSERT INTO transcripts_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER transcripts_ad AFTER DELETE ON transcripts BEGIN
    INSERT INTO transcripts_fts (transcripts_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
