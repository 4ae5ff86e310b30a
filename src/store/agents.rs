//! Question sets, leads, agent runs (one per dispatched conversation, with its latest score and
//! summary) and the conversation's events.

use super::{Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;

/// One question as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct QuestionSpec {
    /// What the agent asks.
    pub text: String,
    /// `budget`, `authority`, `need`, `timeline` or `other`.
    pub category: String,
    /// Asked once when the answer lacks what the category needs.
    #[serde(default)]
    pub follow_up: Option<String>,
}

/// A stored question set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionSetRecord {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Opening line (`{name}`: the lead's name).
    pub greeting: String,
    /// Last line.
    pub closing: String,
    /// In order.
    pub questions: Vec<QuestionSpec>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A stored lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadRecord {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Company.
    pub company: String,
    /// Email.
    pub email: String,
    /// Unix ms.
    pub created_at: i64,
}

/// One agent conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRunRecord {
    /// Id.
    pub id: i64,
    /// Room.
    pub room: String,
    /// Meeting, when the room is a meeting's.
    pub meeting_code: Option<String>,
    /// Lead talked to.
    pub lead_id: Option<i64>,
    /// Questions asked.
    pub question_set_id: Option<i64>,
    /// The agent's display name.
    pub agent_name: String,
    /// `running`, `finished`, `stopped`, `failed`.
    pub status: String,
    /// Latest score (the API's JSON).
    pub score: Option<serde_json::Value>,
    /// Post-meeting summary (JSON).
    pub summary: Option<serde_json::Value>,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    pub ended_at: Option<i64>,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ConversationEvent {
    /// Ms since the room opened (the transcript clock).
    pub at_ms: i64,
    /// `agent` or `lead`.
    pub who: String,
    /// `greeting`, `question`, `follow_up`, `reprompt`, `summary`, `answer`, `backchannel`,
    /// `interruption`, `resumed`.
    pub kind: String,
    /// The words.
    pub text: String,
}

fn json_col(row: &AnyRow, col: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

fn set_from(row: &AnyRow) -> Result<QuestionSetRecord, StoreError> {
    let q: String = row.try_get("questions")?;
    Ok(QuestionSetRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        greeting: row.try_get("greeting")?,
        closing: row.try_get("closing")?,
        questions: serde_json::from_str(&q)
            .map_err(|e| StoreError::Corrupt(format!("questions: {e}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn lead_from(row: &AnyRow) -> Result<LeadRecord, StoreError> {
    Ok(LeadRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        company: row.try_get("company")?,
        email: row.try_get("email")?,
        created_at: row.try_get("created_at")?,
    })
}

fn run_from(row: &AnyRow) -> Result<AgentRunRecord, StoreError> {
    Ok(AgentRunRecord {
        id: row.try_get("id")?,
        room: row.try_get("room")?,
        meeting_code: row.try_get("meeting_code")?,
        lead_id: row.try_get("lead_id")?,
        question_set_id: row.try_get("question_set_id")?,
        agent_name: row.try_get("agent_name")?,
        status: row.try_get("status")?,
        score: json_col(row, "score")?,
        summary: json_col(row, "summary")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

macro_rules! run_columns {
    () => {
        "id, room, meeting_code, lead_id, question_set_id, agent_name, status, score, summary, \
         started_at, ended_at"
    };
}

impl Store {
    /// Stores a new question set; returns it.
    pub async fn insert_question_set(
        &self,
        name: &str,
        greeting: &str,
        closing: &str,
        questions: &[QuestionSpec],
        now: i64,
    ) -> Result<QuestionSetRecord, StoreError> {
        let q = serde_json::to_string(questions).expect("questions serialize");
        let row = sqlx::query(
            "INSERT INTO question_sets (name, greeting, closing, questions, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id, name, greeting, closing, questions, created_at, updated_at",
        )
        .bind(name)
        .bind(greeting)
        .bind(closing)
        .bind(q)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_write)?;
        set_from(&row)
    }

    /// Replaces a question set's contents; `None` when there is no such set.
    pub async fn update_question_set(
        &self,
        id: i64,
        name: &str,
        greeting: &str,
        closing: &str,
        questions: &[QuestionSpec],
        now: i64,
    ) -> Result<Option<QuestionSetRecord>, StoreError> {
        let q = serde_json::to_string(questions).expect("questions serialize");
        let row = sqlx::query(
            "UPDATE question_sets SET name = $1, greeting = $2, closing = $3, questions = $4, updated_at = $5 \
             WHERE id = $6 RETURNING id, name, greeting, closing, questions, created_at, updated_at",
        )
        .bind(name)
        .bind(greeting)
        .bind(closing)
        .bind(q)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(set_from).transpose()
    }

    /// One question set.
    pub async fn question_set(&self, id: i64) -> Result<Option<QuestionSetRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, greeting, closing, questions, created_at, updated_at FROM question_sets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(set_from).transpose()
    }

    /// Question sets, newest first.
    pub async fn question_sets(&self, limit: i64) -> Result<Vec<QuestionSetRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, greeting, closing, questions, created_at, updated_at FROM question_sets \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(set_from).collect()
    }

    /// Deletes a question set; whether it existed.
    pub async fn delete_question_set(&self, id: i64) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM question_sets WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Stores a new lead.
    pub async fn insert_lead(
        &self,
        name: &str,
        company: &str,
        email: &str,
        now: i64,
    ) -> Result<LeadRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO leads (name, company, email, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id, name, company, email, created_at",
        )
        .bind(name)
        .bind(company)
        .bind(email)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_write)?;
        lead_from(&row)
    }

    /// Replaces a lead's fields; `None` when there is no such lead.
    pub async fn update_lead(
        &self,
        id: i64,
        name: &str,
        company: &str,
        email: &str,
    ) -> Result<Option<LeadRecord>, StoreError> {
        let row = sqlx::query(
            "UPDATE leads SET name = $1, company = $2, email = $3 WHERE id = $4 \
             RETURNING id, name, company, email, created_at",
        )
        .bind(name)
        .bind(company)
        .bind(email)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(lead_from).transpose()
    }

    /// One lead.
    pub async fn lead(&self, id: i64) -> Result<Option<LeadRecord>, StoreError> {
        let row =
            sqlx::query("SELECT id, name, company, email, created_at FROM leads WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(lead_from).transpose()
    }

    /// Leads, newest first.
    pub async fn leads(&self, limit: i64) -> Result<Vec<LeadRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, company, email, created_at FROM leads ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lead_from).collect()
    }

    /// Deletes a lead (its runs stay, unlinked); whether it existed.
    pub async fn delete_lead(&self, id: i64) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM leads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records a new agent run; returns its id.
    pub async fn insert_agent_run(&self, run: &AgentRunRecord) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO agent_runs (room, meeting_code, lead_id, question_set_id, agent_name, status, score, summary, started_at, ended_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(&run.room)
        .bind(run.meeting_code.as_deref())
        .bind(run.lead_id)
        .bind(run.question_set_id)
        .bind(&run.agent_name)
        .bind(&run.status)
        .bind(run.score.as_ref().map(|v| v.to_string()))
        .bind(run.summary.as_ref().map(|v| v.to_string()))
        .bind(run.started_at)
        .bind(run.ended_at)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_write)?;
        Ok(row.try_get("id")?)
    }

    /// Updates a run's status, score, summary and end.
    pub async fn update_agent_run(&self, run: &AgentRunRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE agent_runs SET status = $1, score = $2, summary = $3, ended_at = $4 WHERE id = $5",
        )
        .bind(&run.status)
        .bind(run.score.as_ref().map(|v| v.to_string()))
        .bind(run.summary.as_ref().map(|v| v.to_string()))
        .bind(run.ended_at)
        .bind(run.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest run in a room.
    pub async fn latest_agent_run(&self, room: &str) -> Result<Option<AgentRunRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM agent_runs WHERE room = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(room)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_from).transpose()
    }

    /// A lead's runs, oldest first.
    pub async fn lead_runs(&self, lead_id: i64) -> Result<Vec<AgentRunRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM agent_runs WHERE lead_id = $1 ORDER BY id LIMIT 500"
        ))
        .bind(lead_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from).collect()
    }

    /// Marks runs left `running` by a server that stopped without ending them.
    pub async fn fail_stale_agent_runs(&self, now: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE agent_runs SET status = 'interrupted', ended_at = $1 WHERE status = 'running'",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Appends a conversation event.
    pub async fn insert_conversation_event(
        &self,
        run_id: i64,
        e: &ConversationEvent,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO conversation_events (run_id, at_ms, who, kind, text) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(run_id)
        .bind(e.at_ms)
        .bind(&e.who)
        .bind(&e.kind)
        .bind(&e.text)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A run's events in order.
    pub async fn conversation_events(
        &self,
        run_id: i64,
    ) -> Result<Vec<ConversationEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, who, kind, text FROM conversation_events WHERE run_id = $1 ORDER BY id LIMIT 5000",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ConversationEvent {
                    at_ms: r.try_get("at_ms")?,
                    who: r.try_get("who")?,
                    kind: r.try_get("kind")?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }
}
