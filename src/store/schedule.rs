//! Scheduled meetings, their occurrences, status history, auto-join attempts, host
//! preferences. Every status change is a conditional update (the row must still be where the
//! caller saw it) plus its history row, in one transaction: two schedulers sharing a database
//! can both try, and exactly one succeeds.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

/// Someone invited to a scheduled meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invitee {
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

/// A series to insert (or the new values of one).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Host identity.
    pub host_identity: String,
    /// IANA zone.
    pub time_zone: String,
    /// First start, local, `YYYY-MM-DDTHH:MM:SS`.
    pub start_local: String,
    /// Length of each occurrence.
    pub duration_ms: i64,
    /// RRULE value, canonical, if recurring.
    pub rrule: Option<String>,
    /// Local starts that do not happen.
    pub exdates: Vec<String>,
    /// Lead the agent talks to.
    pub lead_id: Option<i64>,
    /// Question set the agent asks (else the host's default, else the built-in one).
    pub question_set_id: Option<i64>,
    /// Dispatch the agent on its own.
    pub auto_join: bool,
    /// People invited.
    pub invitees: Vec<Invitee>,
}

/// A stored series.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// Row id.
    pub id: i64,
    /// Its values.
    pub spec: ScheduleSpec,
    /// The meeting code every occurrence uses (fixed when scheduled).
    pub meeting_code: String,
    /// `active` or `cancelled`.
    pub status: String,
    /// Bumped by each update (optimistic concurrency).
    pub version: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A stored occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OccurrenceRecord {
    /// Row id.
    pub id: i64,
    /// Its series.
    pub schedule_id: i64,
    /// Local start (its identity in the series).
    pub local_start: String,
    /// Start, unix ms.
    pub starts_at: i64,
    /// End, unix ms.
    pub ends_at: i64,
    /// Status machine state.
    pub status: String,
    /// When it got there, unix ms.
    pub status_at: i64,
    /// Anyone was ever in its room.
    pub anyone_came: bool,
    /// The host said: no agent for this one.
    pub skip_agent: bool,
    /// The agent: dispatched, joining, in_call, left, failed (or none yet).
    pub bot_status: Option<String>,
    /// When it got there.
    pub bot_status_at: Option<i64>,
    /// Reason code of a failure.
    pub bot_reason: Option<String>,
    /// Dispatch attempts so far.
    pub bot_attempts: i64,
    /// Earliest next attempt after a failure.
    pub bot_next_at: Option<i64>,
    /// When the agent was first in the call.
    pub bot_joined_at: Option<i64>,
}

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OccurrenceEvent {
    /// Unix ms.
    pub at: i64,
    /// From.
    pub from_status: String,
    /// To.
    pub to_status: String,
    /// Why.
    pub cause: String,
    /// Which server process applied it.
    pub node: String,
}

/// One auto-join attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoJoinLog {
    /// Occurrence.
    pub occurrence_id: i64,
    /// Unix ms.
    pub at: i64,
    /// Attempt number (1-based).
    pub attempt: i64,
    /// dispatched, joining, in_call, left, failed, skipped.
    pub outcome: String,
    /// Reason code and detail of a failure.
    pub error: Option<String>,
    /// Which server process.
    pub node: String,
}

/// A host's auto-join preferences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostPreferences {
    /// Dispatch the agent to this host's meetings that ask for it.
    pub auto_join: bool,
    /// Meetings whose title contains one of these (case-insensitive) get no agent.
    pub excluded_keywords: Vec<String>,
    /// The agent joins this many minutes before the start.
    pub join_buffer_minutes: i64,
    /// Question set when the meeting names none.
    pub question_set_id: Option<i64>,
}

impl Default for HostPreferences {
    fn default() -> Self {
        Self {
            auto_join: true,
            excluded_keywords: Vec::new(),
            join_buffer_minutes: 1,
            question_set_id: None,
        }
    }
}

const SCHEDULE_COLUMNS: &str = "id, title, description, host_identity, time_zone, start_local, duration_ms, rrule, exdates, lead_id, question_set_id, auto_join, meeting_code, invitees, status, version, created_at, updated_at";
const OCCURRENCE_COLUMNS: &str = "id, schedule_id, local_start, starts_at, ends_at, status, status_at, anyone_came, skip_agent, bot_status, bot_status_at, bot_reason, bot_attempts, bot_next_at, bot_joined_at";

fn json_list<T: for<'de> Deserialize<'de>>(row: &AnyRow, col: &str) -> Result<Vec<T>, StoreError> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn schedule_from(row: &AnyRow) -> Result<ScheduleRecord, StoreError> {
    let auto_join: i64 = row.try_get("auto_join")?;
    Ok(ScheduleRecord {
        id: row.try_get("id")?,
        spec: ScheduleSpec {
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            host_identity: row.try_get("host_identity")?,
            time_zone: row.try_get("time_zone")?,
            start_local: row.try_get("start_local")?,
            duration_ms: row.try_get("duration_ms")?,
            rrule: row.try_get("rrule")?,
            exdates: json_list(row, "exdates")?,
            lead_id: row.try_get("lead_id")?,
            question_set_id: row.try_get("question_set_id")?,
            auto_join: auto_join != 0,
            invitees: json_list(row, "invitees")?,
        },
        meeting_code: row.try_get("meeting_code")?,
        status: row.try_get("status")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn occurrence_from(row: &AnyRow) -> Result<OccurrenceRecord, StoreError> {
    let anyone: i64 = row.try_get("anyone_came")?;
    let skip: i64 = row.try_get("skip_agent")?;
    Ok(OccurrenceRecord {
        id: row.try_get("id")?,
        schedule_id: row.try_get("schedule_id")?,
        local_start: row.try_get("local_start")?,
        starts_at: row.try_get("starts_at")?,
        ends_at: row.try_get("ends_at")?,
        status: row.try_get("status")?,
        status_at: row.try_get("status_at")?,
        anyone_came: anyone != 0,
        skip_agent: skip != 0,
        bot_status: row.try_get("bot_status")?,
        bot_status_at: row.try_get("bot_status_at")?,
        bot_reason: row.try_get("bot_reason")?,
        bot_attempts: row.try_get("bot_attempts")?,
        bot_next_at: row.try_get("bot_next_at")?,
        bot_joined_at: row.try_get("bot_joined_at")?,
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

impl Store {
    /// Inserts a series with its meeting code; [`StoreError::Conflict`] if the code is taken.
    pub async fn insert_schedule(
        &self,
        s: &ScheduleSpec,
        meeting_code: &str,
        now: i64,
    ) -> Result<ScheduleRecord, StoreError> {
        let sql = format!(
            "INSERT INTO schedules (title, description, host_identity, time_zone, start_local, duration_ms, rrule, exdates, lead_id, question_set_id, auto_join, meeting_code, invitees, status, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'active', 1, $14, $14) RETURNING {SCHEDULE_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&s.title)
            .bind(&s.description)
            .bind(&s.host_identity)
            .bind(&s.time_zone)
            .bind(&s.start_local)
            .bind(s.duration_ms)
            .bind(s.rrule.as_deref())
            .bind(to_json(&s.exdates))
            .bind(s.lead_id)
            .bind(s.question_set_id)
            .bind(i64::from(s.auto_join))
            .bind(meeting_code)
            .bind(to_json(&s.invitees))
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_write)?;
        schedule_from(&row)
    }

    /// The series imported from iCalendar event `uid` / `recurrence_id` for `host`.
    pub async fn schedule_by_ical(
        &self,
        host: &str,
        uid: &str,
        recurrence_id: &str,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE host_identity = $1 AND ical_uid = $2 AND ical_recurrence_id = $3"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(host)
            .bind(uid)
            .bind(recurrence_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(schedule_from).transpose()
    }

    /// Marks a series as imported from iCalendar event `uid` / `recurrence_id`;
    /// [`StoreError::Conflict`] if another series already is.
    pub async fn set_ical_key(
        &self,
        id: i64,
        uid: &str,
        recurrence_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE schedules SET ical_uid = $1, ical_recurrence_id = $2 WHERE id = $3")
            .bind(uid)
            .bind(recurrence_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_write)?;
        Ok(())
    }

    /// A series by id.
    pub async fn schedule(&self, id: i64) -> Result<Option<ScheduleRecord>, StoreError> {
        let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(schedule_from).transpose()
    }

    /// The series using meeting code `code`.
    pub async fn schedule_by_code(&self, code: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE meeting_code = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(schedule_from).transpose()
    }

    /// Series of `host` (all hosts if `None`), in `status` if given, oldest first, from id
    /// `after`, at most `limit`.
    pub async fn schedules(
        &self,
        host: Option<&str>,
        status: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE ($1 = '' OR host_identity = $1) \
             AND ($2 = '' OR status = $2) AND id > $3 ORDER BY id LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(host.unwrap_or(""))
            .bind(status.unwrap_or(""))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(schedule_from).collect()
    }

    /// Replaces a series' values if it is still at `version`; `None` if someone changed it
    /// first (or it is gone).
    pub async fn update_schedule(
        &self,
        id: i64,
        version: i64,
        s: &ScheduleSpec,
        now: i64,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let sql = format!(
            "UPDATE schedules SET title = $1, description = $2, time_zone = $3, start_local = $4, duration_ms = $5, rrule = $6, exdates = $7, lead_id = $8, question_set_id = $9, auto_join = $10, invitees = $11, version = version + 1, updated_at = $12 \
             WHERE id = $13 AND version = $14 AND status = 'active' RETURNING {SCHEDULE_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&s.title)
            .bind(&s.description)
            .bind(&s.time_zone)
            .bind(&s.start_local)
            .bind(s.duration_ms)
            .bind(s.rrule.as_deref())
            .bind(to_json(&s.exdates))
            .bind(s.lead_id)
            .bind(s.question_set_id)
            .bind(i64::from(s.auto_join))
            .bind(to_json(&s.invitees))
            .bind(now)
            .bind(id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(schedule_from).transpose()
    }

    /// Cancels a series; false if it was not active.
    pub async fn cancel_schedule(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE schedules SET status = 'cancelled', version = version + 1, updated_at = $1 WHERE id = $2 AND status = 'active'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Adds an occurrence unless the series already has one at `local_start` (two
    /// schedulers expanding at once make one row). Returns whether this call added it.
    pub async fn add_occurrence(
        &self,
        schedule_id: i64,
        local_start: &str,
        starts_at: i64,
        ends_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO occurrences (schedule_id, local_start, starts_at, ends_at, status, status_at) \
             VALUES ($1, $2, $3, $4, 'scheduled', $5) ON CONFLICT (schedule_id, local_start) DO NOTHING",
        )
        .bind(schedule_id)
        .bind(local_start)
        .bind(starts_at)
        .bind(ends_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Removes a series' occurrences still `scheduled` (nothing happened to them yet), so a
    /// rescheduled series is expanded afresh.
    pub async fn drop_scheduled_occurrences(&self, schedule_id: i64) -> Result<u64, StoreError> {
        let r =
            sqlx::query("DELETE FROM occurrences WHERE schedule_id = $1 AND status = 'scheduled'")
                .bind(schedule_id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected())
    }

    /// An occurrence by id.
    pub async fn occurrence(&self, id: i64) -> Result<Option<OccurrenceRecord>, StoreError> {
        let sql = format!("SELECT {OCCURRENCE_COLUMNS} FROM occurrences WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(occurrence_from).transpose()
    }

    /// A series' occurrences ending after `from`, by start, at most `limit`.
    pub async fn occurrences_of(
        &self,
        schedule_id: i64,
        from: i64,
        limit: i64,
    ) -> Result<Vec<OccurrenceRecord>, StoreError> {
        let sql = format!(
            "SELECT {OCCURRENCE_COLUMNS} FROM occurrences WHERE schedule_id = $1 AND ends_at > $2 ORDER BY starts_at LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(schedule_id)
            .bind(from)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(occurrence_from).collect()
    }

    /// Occurrences not in a final status that start before `before` (the scheduler's work),
    /// by start, at most `limit`.
    pub async fn open_occurrences(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<OccurrenceRecord>, StoreError> {
        let sql = format!(
            "SELECT {OCCURRENCE_COLUMNS} FROM occurrences WHERE status IN ('scheduled', 'ready', 'ongoing') \
             AND starts_at < $1 ORDER BY starts_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(occurrence_from).collect()
    }

    /// Moves an occurrence `from` → `to` and records why, if it is still in `from`. Returns
    /// whether this call made the change.
    pub async fn transition_occurrence(
        &self,
        id: i64,
        from: &str,
        to: &str,
        cause: &str,
        at: i64,
        node: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE occurrences SET status = $1, status_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(to)
        .bind(at)
        .bind(id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO occurrence_events (occurrence_id, at, from_status, to_status, cause, node) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(at)
        .bind(from)
        .bind(to)
        .bind(cause)
        .bind(node)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Notes that someone was in the occurrence's room.
    pub async fn occurrence_visited(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE occurrences SET anyone_came = 1 WHERE id = $1 AND anyone_came = 0")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets whether the agent skips this occurrence.
    pub async fn set_skip_agent(&self, id: i64, skip: bool) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE occurrences SET skip_agent = $1 WHERE id = $2")
            .bind(i64::from(skip))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Claims the next dispatch attempt of an occurrence: it must have no agent yet (or a
    /// failed one whose retry is due), not be skipped, and have attempts left. Exactly one
    /// of several schedulers gets `true`.
    pub async fn claim_dispatch(
        &self,
        id: i64,
        now: i64,
        max_attempts: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE occurrences SET bot_status = 'dispatched', bot_status_at = $1, bot_reason = NULL, bot_attempts = bot_attempts + 1, bot_next_at = NULL \
             WHERE id = $2 AND skip_agent = 0 AND bot_attempts < $3 \
             AND (bot_status IS NULL OR (bot_status = 'failed' AND bot_next_at IS NOT NULL AND bot_next_at <= $1))",
        )
        .bind(now)
        .bind(id)
        .bind(max_attempts)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Moves the agent of an occurrence `from` → `to` (with a failure's reason and the next
    /// attempt's time); false if it was not in `from`.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_bot_status(
        &self,
        id: i64,
        from: &str,
        to: &str,
        reason: Option<&str>,
        next_at: Option<i64>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE occurrences SET bot_status = $1, bot_status_at = $2, bot_reason = $3, bot_next_at = $4, \
             bot_joined_at = CASE WHEN $1 = 'in_call' AND bot_joined_at IS NULL THEN $2 ELSE bot_joined_at END \
             WHERE id = $5 AND bot_status = $6",
        )
        .bind(to)
        .bind(at)
        .bind(reason)
        .bind(next_at)
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Forgets an occurrence's agent attempts (an operator's "dispatch now").
    pub async fn reset_bot(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE occurrences SET bot_status = NULL, bot_status_at = NULL, bot_reason = NULL, bot_attempts = 0, bot_next_at = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Appends to the auto-join log.
    pub async fn log_auto_join(&self, l: &AutoJoinLog) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auto_join_logs (occurrence_id, at, attempt, outcome, error, node) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(l.occurrence_id)
        .bind(l.at)
        .bind(l.attempt)
        .bind(&l.outcome)
        .bind(l.error.as_deref())
        .bind(&l.node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The auto-join log of an occurrence, oldest first.
    pub async fn auto_join_logs(&self, occurrence_id: i64) -> Result<Vec<AutoJoinLog>, StoreError> {
        let rows = sqlx::query(
            "SELECT occurrence_id, at, attempt, outcome, error, node FROM auto_join_logs WHERE occurrence_id = $1 ORDER BY id",
        )
        .bind(occurrence_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AutoJoinLog {
                    occurrence_id: r.try_get("occurrence_id")?,
                    at: r.try_get("at")?,
                    attempt: r.try_get("attempt")?,
                    outcome: r.try_get("outcome")?,
                    error: r.try_get("error")?,
                    node: r.try_get("node")?,
                })
            })
            .collect()
    }

    /// The status history of an occurrence, oldest first.
    pub async fn occurrence_events(
        &self,
        occurrence_id: i64,
    ) -> Result<Vec<OccurrenceEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, from_status, to_status, cause, node FROM occurrence_events WHERE occurrence_id = $1 ORDER BY id",
        )
        .bind(occurrence_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OccurrenceEvent {
                    at: r.try_get("at")?,
                    from_status: r.try_get("from_status")?,
                    to_status: r.try_get("to_status")?,
                    cause: r.try_get("cause")?,
                    node: r.try_get("node")?,
                })
            })
            .collect()
    }

    /// A host's preferences (defaults if never set).
    pub async fn host_preferences(&self, host: &str) -> Result<HostPreferences, StoreError> {
        let row = sqlx::query(
            "SELECT auto_join, excluded_keywords, join_buffer_minutes, question_set_id FROM host_preferences WHERE host_identity = $1",
        )
        .bind(host)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(HostPreferences::default());
        };
        let auto: i64 = r.try_get("auto_join")?;
        Ok(HostPreferences {
            auto_join: auto != 0,
            excluded_keywords: json_list(&r, "excluded_keywords")?,
            join_buffer_minutes: r.try_get("join_buffer_minutes")?,
            question_set_id: r.try_get("question_set_id")?,
        })
    }

    /// Stores a host's preferences.
    pub async fn set_host_preferences(
        &self,
        host: &str,
        p: &HostPreferences,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO host_preferences (host_identity, auto_join, excluded_keywords, join_buffer_minutes, question_set_id, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (host_identity) DO UPDATE SET auto_join = $2, excluded_keywords = $3, \
             join_buffer_minutes = $4, question_set_id = $5, updated_at = $6",
        )
        .bind(host)
        .bind(i64::from(p.auto_join))
        .bind(to_json(&p.excluded_keywords))
        .bind(p.join_buffer_minutes)
        .bind(p.question_set_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
