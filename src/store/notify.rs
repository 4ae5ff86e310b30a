//! Notifications, their preferences, webhooks and webhook deliveries.

use super::{Store, StoreError};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationRecord {
    /// Row id.
    pub id: i64,
    /// Who it is for.
    pub user_identity: String,
    /// meeting_starting, agent_dispatched, agent_in_call, agent_failed, meeting_ended, lead_scored.
    pub kind: String,
    /// One line for a toast.
    pub title: String,
    /// Details (JSON).
    pub data: serde_json::Value,
    /// Unix ms.
    pub created_at: i64,
    /// When it was marked read.
    pub read_at: Option<i64>,
}

/// A host's webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookRecord {
    /// Row id.
    pub id: i64,
    /// Whose events it gets.
    pub host_identity: String,
    /// Where they are POSTed.
    pub url: String,
    /// The HMAC key (never shown again after creation).
    #[serde(skip)]
    pub secret: String,
    /// Kinds it wants (empty: all).
    pub kinds: Vec<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    /// Row id.
    pub id: i64,
    /// Webhook.
    pub webhook_id: i64,
    /// The event's id (also the `X-Conclave-Event-Id` header: receivers dedupe by it).
    pub event_id: String,
    /// Its kind.
    pub kind: String,
    /// The body sent.
    pub payload: String,
    /// pending, delivered, gave_up.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// Next attempt, unix ms.
    pub next_at: i64,
    /// HTTP status of the last attempt.
    pub last_status_code: Option<i64>,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

fn notification_from(r: &AnyRow) -> Result<NotificationRecord, StoreError> {
    let data: String = r.try_get("data")?;
    Ok(NotificationRecord {
        id: r.try_get("id")?,
        user_identity: r.try_get("user_identity")?,
        kind: r.try_get("kind")?,
        title: r.try_get("title")?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        created_at: r.try_get("created_at")?,
        read_at: r.try_get("read_at")?,
    })
}

fn webhook_from(r: &AnyRow) -> Result<WebhookRecord, StoreError> {
    let kinds: String = r.try_get("kinds")?;
    Ok(WebhookRecord {
        id: r.try_get("id")?,
        host_identity: r.try_get("host_identity")?,
        url: r.try_get("url")?,
        secret: r.try_get("secret")?,
        kinds: serde_json::from_str(&kinds)
            .map_err(|e| StoreError::Corrupt(format!("kinds: {e}")))?,
        created_at: r.try_get("created_at")?,
    })
}

fn delivery_from(r: &AnyRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_id: r.try_get("event_id")?,
        kind: r.try_get("kind")?,
        payload: r.try_get("payload")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_at: r.try_get("next_at")?,
        last_status_code: r.try_get("last_status_code")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
    })
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, kind, payload, status, attempts, next_at, last_status_code, last_error, created_at";

impl Store {
    /// Stores a notification.
    pub async fn insert_notification(
        &self,
        user: &str,
        kind: &str,
        title: &str,
        data: &serde_json::Value,
        now: i64,
    ) -> Result<NotificationRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO notifications (user_identity, kind, title, data, created_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING id, user_identity, kind, title, data, created_at, read_at",
        )
        .bind(user)
        .bind(kind)
        .bind(title)
        .bind(data.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        notification_from(&row)
    }

    /// A user's notifications, newest first, only unread ones if asked, at most `limit`.
    pub async fn notifications(
        &self,
        user: &str,
        unread_only: bool,
        limit: i64,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, user_identity, kind, title, data, created_at, read_at FROM notifications \
             WHERE user_identity = $1 AND ($2 = 0 OR read_at IS NULL) ORDER BY id DESC LIMIT $3",
        )
        .bind(user)
        .bind(i64::from(unread_only))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notification_from).collect()
    }

    /// Marks one read; false if it is not `user`'s or does not exist.
    pub async fn mark_notification_read(
        &self,
        user: &str,
        id: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE notifications SET read_at = COALESCE(read_at, $1) WHERE id = $2 AND user_identity = $3",
        )
        .bind(now)
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Kinds `user` turned off.
    pub async fn muted_kinds(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind FROM notification_preferences WHERE user_identity = $1 AND enabled = 0 ORDER BY kind",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("kind")?)).collect()
    }

    /// Turns a kind on or off for `user`.
    pub async fn set_notification_kind(
        &self,
        user: &str,
        kind: &str,
        enabled: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notification_preferences (user_identity, kind, enabled) VALUES ($1, $2, $3) \
             ON CONFLICT (user_identity, kind) DO UPDATE SET enabled = $3",
        )
        .bind(user)
        .bind(kind)
        .bind(i64::from(enabled))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds a webhook.
    pub async fn insert_webhook(
        &self,
        host: &str,
        url: &str,
        secret: &str,
        kinds: &[String],
        now: i64,
    ) -> Result<WebhookRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO webhooks (host_identity, url, secret, kinds, active, created_at) VALUES ($1, $2, $3, $4, 1, $5) \
             RETURNING id, host_identity, url, secret, kinds, created_at",
        )
        .bind(host)
        .bind(url)
        .bind(secret)
        .bind(serde_json::to_string(kinds).expect("strings serialize"))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        webhook_from(&row)
    }

    /// A host's active webhooks.
    pub async fn webhooks(&self, host: &str) -> Result<Vec<WebhookRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, host_identity, url, secret, kinds, created_at FROM webhooks WHERE host_identity = $1 AND active = 1 ORDER BY id",
        )
        .bind(host)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from).collect()
    }

    /// A webhook by id (active or not).
    pub async fn webhook(&self, id: i64) -> Result<Option<WebhookRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, host_identity, url, secret, kinds, created_at FROM webhooks WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(webhook_from).transpose()
    }

    /// Stops a webhook (its pending deliveries give up).
    pub async fn deactivate_webhook(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE webhooks SET active = 0 WHERE id = $1 AND active = 1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'gave_up', last_error = 'webhook removed', updated_at = $1 WHERE webhook_id = $2 AND status = 'pending'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Queues an event for a webhook (once per event id).
    pub async fn queue_delivery(
        &self,
        webhook_id: i64,
        event_id: &str,
        kind: &str,
        payload: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, kind, payload, status, attempts, next_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5) ON CONFLICT (webhook_id, event_id) DO NOTHING",
        )
        .bind(webhook_id)
        .bind(event_id)
        .bind(kind)
        .bind(payload)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes up to `limit` due deliveries, leasing each until `lease_until` so another process
    /// does not send it at the same time.
    pub async fn lease_due_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE status = 'pending' AND next_at <= $1 ORDER BY next_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let d = delivery_from(&r)?;
            let claimed = sqlx::query(
                "UPDATE webhook_deliveries SET next_at = $1 WHERE id = $2 AND status = 'pending' AND next_at = $3",
            )
            .bind(lease_until)
            .bind(d.id)
            .bind(d.next_at)
            .execute(&self.pool)
            .await?;
            if claimed.rows_affected() == 1 {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Records an attempt and its outcome: `next_at` = `None` means delivered (2xx) or, with
    /// `gave_up`, no more tries.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_attempt(
        &self,
        d: &DeliveryRecord,
        status_code: Option<u16>,
        error: Option<&str>,
        duration_ms: i64,
        next_at: Option<i64>,
        gave_up: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, at, status_code, error, duration_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(d.id)
        .bind(now)
        .bind(status_code.map(i64::from))
        .bind(error)
        .bind(duration_ms)
        .execute(&mut *tx)
        .await?;
        let status = match (next_at, gave_up) {
            (_, true) => "gave_up",
            (Some(_), false) => "pending",
            (None, false) => "delivered",
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, next_at = $2, last_status_code = $3, last_error = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(next_at.unwrap_or(now))
        .bind(status_code.map(i64::from))
        .bind(error)
        .bind(now)
        .bind(d.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A webhook's deliveries, newest first.
    pub async fn deliveries(
        &self,
        webhook_id: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(webhook_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from).collect()
    }

    /// Status codes of a delivery's attempts, oldest first (`None`: no response).
    pub async fn attempt_codes(&self, delivery_id: i64) -> Result<Vec<Option<i64>>, StoreError> {
        let rows = sqlx::query(
            "SELECT status_code FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("status_code")?)).collect()
    }
}

/// A stored email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmailRecord {
    /// Row id.
    pub id: i64,
    /// Its meeting series.
    pub schedule_id: i64,
    /// Its occurrence (0 for a series' invitation).
    pub occurrence_id: i64,
    /// invitation, reminder, summary.
    pub kind: String,
    /// Recipient address.
    pub to_addr: String,
    /// Recipient name.
    pub to_name: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    #[serde(skip)]
    pub body: String,
    /// iCalendar attachment.
    #[serde(skip)]
    pub ics: Option<String>,
    /// queued, sent, failed.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// Next attempt, unix ms.
    pub next_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub sent_at: Option<i64>,
}

const EMAIL_COLUMNS: &str = "id, schedule_id, occurrence_id, kind, to_addr, to_name, subject, body, ics, status, attempts, next_at, last_error, created_at, sent_at";

fn email_from(r: &AnyRow) -> Result<EmailRecord, StoreError> {
    Ok(EmailRecord {
        id: r.try_get("id")?,
        schedule_id: r.try_get("schedule_id")?,
        occurrence_id: r.try_get::<Option<i64>, _>("occurrence_id")?.unwrap_or(0),
        kind: r.try_get("kind")?,
        to_addr: r.try_get("to_addr")?,
        to_name: r.try_get("to_name")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        ics: r.try_get("ics")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_at: r.try_get("next_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

impl Store {
    /// Queues an email (once per series, occurrence, kind and recipient).
    #[allow(clippy::too_many_arguments)]
    pub async fn queue_email(
        &self,
        schedule_id: i64,
        occurrence_id: i64,
        kind: &str,
        to_addr: &str,
        to_name: &str,
        subject: &str,
        body: &str,
        ics: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO emails (schedule_id, occurrence_id, kind, to_addr, to_name, subject, body, ics, status, attempts, next_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $9) ON CONFLICT (schedule_id, occurrence_id, kind, to_addr) DO NOTHING",
        )
        .bind(schedule_id)
        .bind(occurrence_id)
        .bind(kind)
        .bind(to_addr)
        .bind(to_name)
        .bind(subject)
        .bind(body)
        .bind(ics)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Leases up to `limit` queued emails due at `now` until `lease_until`.
    pub async fn lease_due_emails(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<EmailRecord>, StoreError> {
        let sql = format!(
            "SELECT {EMAIL_COLUMNS} FROM emails WHERE status = 'queued' AND next_at <= $1 ORDER BY next_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let e = email_from(&r)?;
            let claimed = sqlx::query("UPDATE emails SET next_at = $1 WHERE id = $2 AND status = 'queued' AND next_at = $3")
                .bind(lease_until)
                .bind(e.id)
                .bind(e.next_at)
                .execute(&self.pool)
                .await?;
            if claimed.rows_affected() == 1 {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Records an attempt: sent, queued again for `next_at`, or failed for good.
    pub async fn record_email(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
        next_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE emails SET status = $1, attempts = attempts + 1, last_error = $2, next_at = $3, \
             sent_at = CASE WHEN $1 = 'sent' THEN $4 ELSE sent_at END WHERE id = $5",
        )
        .bind(status)
        .bind(error)
        .bind(next_at)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A series' emails, oldest first.
    pub async fn emails_of(&self, schedule_id: i64) -> Result<Vec<EmailRecord>, StoreError> {
        let sql = format!("SELECT {EMAIL_COLUMNS} FROM emails WHERE schedule_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(schedule_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(email_from).collect()
    }
}
