//! Final transcript lines and full-text search over them (FTS5 on SQLite, `tsvector` on
//! PostgreSQL).

use super::{Backend, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;

/// One final transcript line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TranscriptLine {
    /// Row id.
    pub id: i64,
    /// Room name.
    pub room: String,
    /// Meeting code, when the room is a meeting's.
    pub meeting_code: Option<String>,
    /// Speaker identity.
    pub speaker_identity: String,
    /// Speaker display name.
    pub speaker_name: String,
    /// Start of the speech, unix ms.
    pub start_ms: i64,
    /// End of the speech, unix ms.
    pub end_ms: i64,
    /// The words.
    pub text: String,
}

const COLUMNS: &str =
    "id, room, meeting_code, speaker_identity, speaker_name, start_ms, end_ms, text";

fn line_from(row: &AnyRow) -> Result<TranscriptLine, StoreError> {
    Ok(TranscriptLine {
        id: row.try_get("id")?,
        room: row.try_get("room")?,
        meeting_code: row.try_get("meeting_code")?,
        speaker_identity: row.try_get("speaker_identity")?,
        speaker_name: row.try_get("speaker_name")?,
        start_ms: row.try_get("start_ms")?,
        end_ms: row.try_get("end_ms")?,
        text: row.try_get("text")?,
    })
}

/// Turns free text into an FTS5 query that matches all its words (each quoted, so user input
/// can never be FTS5 syntax).
fn fts5_query(q: &str) -> String {
    q.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{}\"", w.replace('"', "")))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Store {
    /// Stores a final line; returns its id.
    pub async fn insert_transcript(&self, line: &TranscriptLine) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO transcripts (room, meeting_code, speaker_identity, speaker_name, start_ms, end_ms, text) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&line.room)
        .bind(line.meeting_code.as_deref())
        .bind(&line.speaker_identity)
        .bind(&line.speaker_name)
        .bind(line.start_ms)
        .bind(line.end_ms)
        .bind(&line.text)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// A room's transcript in time order.
    pub async fn room_transcript(
        &self,
        room: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<TranscriptLine>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM transcripts WHERE room = $1 ORDER BY start_ms, id LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(line_from).collect()
    }

    /// A meeting's transcript in time order.
    pub async fn meeting_transcript(
        &self,
        code: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<TranscriptLine>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM transcripts WHERE meeting_code = $1 ORDER BY start_ms, id LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(line_from).collect()
    }

    /// Lines matching every word of `q`, best first, optionally within one room.
    pub async fn search_transcripts(
        &self,
        q: &str,
        room: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TranscriptLine>, StoreError> {
        let rows = match self.backend {
            Backend::Sqlite => {
                let query = fts5_query(q);
                if query.is_empty() {
                    return Ok(vec![]);
                }
                let sql = format!(
                    "SELECT {} FROM transcripts_fts JOIN transcripts t ON t.id = transcripts_fts.rowid \
                     WHERE transcripts_fts MATCH $1 AND ($2 = '' OR t.room = $2) ORDER BY bm25(transcripts_fts), t.id LIMIT $3",
                    COLUMNS
                        .split(", ")
                        .map(|c| format!("t.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(query)
                    .bind(room.unwrap_or(""))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM transcripts WHERE search @@ plainto_tsquery('english', $1) \
                     AND ($2 = '' OR room = $2) ORDER BY ts_rank(search, plainto_tsquery('english', $1)) DESC, id LIMIT $3"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(q)
                    .bind(room.unwrap_or(""))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(line_from).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_text_becomes_quoted_fts5_terms() {
        assert_eq!(
            super::fts5_query("budget OR march"),
            "\"budget\" \"OR\" \"march\""
        );
        assert_eq!(
            super::fts5_query("\"); DROP TABLE x; --"),
            "\"DROP\" \"TABLE\" \"x\""
        );
        assert_eq!(super::fts5_query("  "), "");
    }
}
