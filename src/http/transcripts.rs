//! Transcripts: per room, per meeting, and full-text search.
//!
//! Transcripts are what people said, so reading them needs credentials: the API key, or an
//! access token for that room (search is then limited to the token's room).

use super::error::{AppError, ErrorBody};
use crate::meetings::Caller;
use crate::state::AppState;
use crate::store::TranscriptLine;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Paging of transcript lists.
#[derive(Debug, Deserialize, IntoParams)]
pub struct TranscriptPage {
    /// 1-1000, default 500.
    #[serde(default)]
    pub limit: Option<i64>,
    /// Default 0.
    #[serde(default)]
    pub offset: Option<i64>,
}

/// Transcript lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct Lines {
    /// In time order (search: best match first).
    pub lines: Vec<TranscriptLine>,
}

fn page(p: &TranscriptPage) -> Result<(i64, i64), AppError> {
    let limit = p.limit.unwrap_or(500);
    let offset = p.offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) || offset < 0 {
        return Err(AppError::bad_request(
            "limit must be 1-1000 and offset non-negative",
        ));
    }
    Ok((limit, offset))
}

/// The room a caller may read, or `None` for every room (API key).
fn allowed_room(caller: &Caller) -> Result<Option<String>, AppError> {
    match caller {
        Caller::Service { .. } => Ok(None),
        // A meeting's room needs a token of that meeting (from its join), not just any token
        // that names the room.
        Caller::Token(c)
            if crate::meetings::model::MeetingCode::reserved_by(&c.room).is_some()
                && c.meeting.as_deref() != Some(c.room.as_str()) =>
        {
            Err(AppError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                "a meeting's transcript needs a token from that meeting's join",
            ))
        }
        Caller::Token(c) => Ok(Some(c.room.clone())),
        Caller::Anonymous => Err(AppError::unauthorized(
            "transcripts need the API key or a token for the room",
        )),
    }
}

/// `GET /api/rooms/{room}/transcript`.
#[utoipa::path(get, path = "/api/rooms/{room}/transcript", tag = "transcripts", params(("room" = String, Path), TranscriptPage),
    responses((status = 200, body = Lines), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
pub async fn room(
    State(s): State<Arc<AppState>>,
    Path(room): Path<String>,
    caller: Caller,
    Query(p): Query<TranscriptPage>,
) -> Result<Json<Lines>, AppError> {
    if let Some(allowed) = allowed_room(&caller)?
        && allowed != room
    {
        return Err(AppError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "the token is for another room",
        ));
    }
    let (limit, offset) = page(&p)?;
    let lines = s
        .meetings
        .store()
        .room_transcript(&room, limit, offset)
        .await
        .map_err(AppError::internal)?;
    Ok(Json(Lines { lines }))
}

/// `GET /api/meetings/{code}/transcript`.
#[utoipa::path(get, path = "/api/meetings/{code}/transcript", tag = "transcripts", params(("code" = String, Path), TranscriptPage),
    responses((status = 200, body = Lines), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
pub async fn meeting(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
    Query(p): Query<TranscriptPage>,
) -> Result<Json<Lines>, AppError> {
    let m = s.meetings.get(&code).await?;
    if let Some(allowed) = allowed_room(&caller)?
        && allowed != m.code.as_str()
    {
        return Err(AppError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "the token is for another meeting",
        ));
    }
    let (limit, offset) = page(&p)?;
    let lines = s
        .meetings
        .store()
        .meeting_transcript(m.code.as_str(), limit, offset)
        .await
        .map_err(AppError::internal)?;
    Ok(Json(Lines { lines }))
}

/// Search parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// Words to find (all must match).
    pub q: String,
    /// Only this room.
    #[serde(default)]
    pub room: Option<String>,
    /// 1-100, default 20.
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `GET /api/transcripts/search?q=`.
#[utoipa::path(get, path = "/api/transcripts/search", tag = "transcripts", params(SearchQuery),
    responses((status = 200, body = Lines), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
pub async fn search(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Lines>, AppError> {
    let text = q.q.trim();
    if text.is_empty() || text.len() > 200 {
        return Err(AppError::bad_request("q must be 1-200 characters"));
    }
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::bad_request("limit must be 1-100"));
    }
    let room = match allowed_room(&caller)? {
        Some(allowed) => Some(allowed),
        None => q.room.clone(),
    };
    let lines = s
        .meetings
        .store()
        .search_transcripts(text, room.as_deref(), limit)
        .await
        .map_err(AppError::internal)?;
    Ok(Json(Lines { lines }))
}
