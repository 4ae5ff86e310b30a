-- AI agents: question sets, leads, one row per agent conversation (run) with its latest
-- score and summary as JSON, and every turn of the conversation. Times are unix ms, except
-- conversation_events.at_ms (ms since the room opened, the transcript clock).
CREATE TABLE question_sets (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT   NOT NULL,
    greeting   TEXT   NOT NULL,
    closing    TEXT   NOT NULL,
    questions  TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE leads (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT   NOT NULL,
    company    TEXT   NOT NULL,
    email      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE agent_runs (
    id              BIGSERIAL PRIMARY KEY,
    room            TEXT   NOT NULL,
    meeting_code    TEXT,
    lead_id         BIGINT REFERENCES leads (id) ON DELETE SET NULL,
    question_set_id BIGINT REFERENCES question_sets (id) ON DELETE SET NULL,
    agent_name      TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    score           TEXT,
    summary         TEXT,
    started_at      BIGINT NOT NULL,
    ended_at        BIGINT
);
CREATE INDEX agent_runs_room ON agent_runs (room, started_at);
CREATE INDEX agent_runs_meeting ON agent_runs (meeting_code, started_at);
CREATE INDEX agent_runs_lead ON agent_runs (lead_id, started_at);

CREATE TABLE conversation_events (
    id     BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES agent_runs (id) ON DELETE CASCADE,
    at_ms  BIGINT NOT NULL,
    who    TEXT   NOT NULL,
    kind   TEXT   NOT NULL,
    text   TEXT   NOT NULL
);
CREATE INDEX conversation_events_run ON conversation_events (run_id, id);
