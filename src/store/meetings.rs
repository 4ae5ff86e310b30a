//! Meetings and participant history.

use super::{Store, StoreError};
use crate::meetings::model::{Meeting, MeetingCode, MeetingStatus, Role};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A meeting to insert.
#[derive(Debug, Clone)]
pub struct NewMeeting {
    /// Its code.
    pub code: MeetingCode,
    /// Display name.
    pub name: String,
    /// argon2 PHC string, if a password is set.
    pub password_hash: Option<String>,
    /// Host identity.
    pub host_identity: String,
    /// Host display name.
    pub host_name: Option<String>,
    /// Who created it (API key name or `browser`).
    pub created_by: String,
    /// Creation time, unix ms.
    pub created_at: i64,
}

/// One participant's stay in a meeting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParticipantRecord {
    /// Row id.
    #[serde(skip)]
    pub id: i64,
    /// Identity.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Joined, unix ms.
    pub joined_at: i64,
    /// Left, unix ms.
    pub left_at: Option<i64>,
}

const MEETING_COLUMNS: &str = "id, code, name, password_hash, host_identity, host_name, created_by, status, created_at, started_at, ended_at";

fn meeting_from(row: &AnyRow) -> Result<Meeting, StoreError> {
    let status: String = row.try_get("status")?;
    let code: String = row.try_get("code")?;
    Ok(Meeting {
        id: row.try_get("id")?,
        code: MeetingCode::parse(&code)
            .ok_or_else(|| StoreError::Corrupt(format!("meeting code {code:?}")))?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        host_identity: row.try_get("host_identity")?,
        host_name: row.try_get("host_name")?,
        created_by: row.try_get("created_by")?,
        status: MeetingStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

fn participant_from(row: &AnyRow) -> Result<ParticipantRecord, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(ParticipantRecord {
        id: row.try_get("id")?,
        identity: row.try_get("identity")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        joined_at: row.try_get("joined_at")?,
        left_at: row.try_get("left_at")?,
    })
}

impl Store {
    /// Inserts a meeting; [`StoreError::Conflict`] if the code is taken.
    pub async fn insert_meeting(&self, m: &NewMeeting) -> Result<Meeting, StoreError> {
        let sql = format!(
            "INSERT INTO meetings (code, name, password_hash, host_identity, host_name, created_by, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'waiting', $7) RETURNING {MEETING_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(m.code.as_str())
            .bind(&m.name)
            .bind(m.password_hash.as_deref())
            .bind(&m.host_identity)
            .bind(m.host_name.as_deref())
            .bind(&m.created_by)
            .bind(m.created_at)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_write)?;
        meeting_from(&row)
    }

    /// A meeting by code.
    pub async fn meeting(&self, code: &MeetingCode) -> Result<Option<Meeting>, StoreError> {
        let sql = format!("SELECT {MEETING_COLUMNS} FROM meetings WHERE code = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(meeting_from).transpose()
    }

    /// Meetings in `status` with an id above `after` (for recovery at start), by id, at most
    /// `limit`.
    pub async fn meetings_in(
        &self,
        status: MeetingStatus,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Meeting>, StoreError> {
        let sql = format!(
            "SELECT {MEETING_COLUMNS} FROM meetings WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status.as_str())
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(meeting_from).collect()
    }

    /// Meetings hosted by `host` or created by `creator`, newest first.
    pub async fn meetings_for(
        &self,
        host: Option<&str>,
        creator: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Meeting>, StoreError> {
        let sql = format!(
            "SELECT {MEETING_COLUMNS} FROM meetings WHERE host_identity = $1 OR created_by = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            // Identities and creators are never empty, so "" matches nothing.
            .bind(host.unwrap_or(""))
            .bind(creator.unwrap_or(""))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(meeting_from).collect()
    }

    /// Moves a meeting to `to` if it is currently in `from`; returns the updated meeting, or
    /// `None` if it was not in `from` (someone else moved it first). The condition in the
    /// `WHERE` makes the status machine hold even with concurrent requests.
    pub async fn transition(
        &self,
        code: &MeetingCode,
        from: MeetingStatus,
        to: MeetingStatus,
        at: i64,
    ) -> Result<Option<Meeting>, StoreError> {
        let column = match to {
            MeetingStatus::Active => "started_at",
            MeetingStatus::Ended => "ended_at",
            MeetingStatus::Waiting => "created_at",
        };
        let sql = format!(
            "UPDATE meetings SET status = $1, {column} = $2 WHERE code = $3 AND status = $4 RETURNING {MEETING_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(at)
            .bind(code.as_str())
            .bind(from.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(meeting_from).transpose()
    }

    /// Makes an ended meeting waiting again (a series' next occurrence); false if it was not
    /// ended.
    pub async fn reopen_meeting(&self, code: &MeetingCode, at: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE meetings SET status = 'waiting', created_at = $1, started_at = NULL, ended_at = NULL WHERE code = $2 AND status = 'ended'",
        )
        .bind(at)
        .bind(code.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Hands the meeting to a new host.
    pub async fn set_host(
        &self,
        code: &MeetingCode,
        identity: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE meetings SET host_identity = $1, host_name = $2 WHERE code = $3")
            .bind(identity)
            .bind(name)
            .bind(code.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a participant's arrival and returns its row id.
    pub async fn add_participant(
        &self,
        meeting_id: i64,
        identity: &str,
        name: &str,
        role: Role,
        joined_at: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO meeting_participants (meeting_id, identity, name, role, joined_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(meeting_id)
        .bind(identity)
        .bind(name)
        .bind(role.as_str())
        .bind(joined_at)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_write)?;
        Ok(row.try_get("id")?)
    }

    /// Marks every open stay of `identity` in the meeting as left at `at`; returns how many.
    pub async fn participant_left(
        &self,
        meeting_id: i64,
        identity: &str,
        at: i64,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE meeting_participants SET left_at = $1 WHERE meeting_id = $2 AND identity = $3 AND left_at IS NULL",
        )
        .bind(at)
        .bind(meeting_id)
        .bind(identity)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Closes every open stay (the meeting ended).
    pub async fn close_stays(&self, meeting_id: i64, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE meeting_participants SET left_at = $1 WHERE meeting_id = $2 AND left_at IS NULL")
            .bind(at)
            .bind(meeting_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The meeting's participant history, in order of arrival.
    pub async fn participants(
        &self,
        meeting_id: i64,
    ) -> Result<Vec<ParticipantRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, identity, name, role, joined_at, left_at FROM meeting_participants \
             WHERE meeting_id = $1 ORDER BY joined_at, id",
        )
        .bind(meeting_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(participant_from).collect()
    }

    /// Distinct identities with an open stay.
    pub async fn present_count(&self, meeting_id: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT identity) AS n FROM meeting_participants WHERE meeting_id = $1 AND left_at IS NULL",
        )
        .bind(meeting_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}
