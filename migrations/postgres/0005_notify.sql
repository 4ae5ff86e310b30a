-- Notifications per user, their per-type preferences, webhooks per host and every delivery
-- with its attempts. Times are unix ms; booleans 0/1.
CREATE TABLE notifications (
    id            BIGSERIAL PRIMARY KEY,
    user_identity TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    title         TEXT    NOT NULL,
    data          TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    read_at       BIGINT
);
CREATE INDEX notifications_user ON notifications (user_identity, id);

CREATE TABLE notification_preferences (
    user_identity TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    enabled       BIGINT NOT NULL,
    PRIMARY KEY (user_identity, kind)
);

CREATE TABLE webhooks (
    id            BIGSERIAL PRIMARY KEY,
    host_identity TEXT    NOT NULL,
    url           TEXT    NOT NULL,
    secret        TEXT    NOT NULL,
    kinds         TEXT    NOT NULL DEFAULT '[]',
    active        BIGINT  NOT NULL DEFAULT 1,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX webhooks_host ON webhooks (host_identity, active);

CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    webhook_id       BIGINT  NOT NULL REFERENCES webhooks (id),
    event_id         TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'gave_up')),
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_at          BIGINT  NOT NULL,
    last_status_code BIGINT,
    last_error       TEXT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at);

CREATE TABLE webhook_attempts (
    id          BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT  NOT NULL REFERENCES webhook_deliveries (id),
    at          BIGINT  NOT NULL,
    status_code BIGINT,
    error       TEXT,
    duration_ms BIGINT  NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, at);
