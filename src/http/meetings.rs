//! `/api/meetings`: create, list, inspect, join, start, end, leave, participants.
//!
//! Authentication: server-to-server clients send `Authorization: Basic <api_key:api_secret>`;
//! browsers send `Authorization: Bearer <token>` (the host token from creation, or a join
//! token). Creating a meeting needs no credentials when guest access is on.

use super::error::{ApiJson, AppError};
use crate::auth::TokenError;
use crate::meetings::model::Meeting;
use crate::meetings::service::{JoinGrant, rfc3339};
use crate::meetings::{Caller, MeetingError};
use crate::server::AppState;
use crate::store::ParticipantRecord;
use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::SystemTime;

impl From<MeetingError> for AppError {
    fn from(e: MeetingError) -> Self {
        let msg = e.to_string();
        match e {
            MeetingError::NotFound(_) => AppError::new(StatusCode::NOT_FOUND, "meeting_not_found", msg),
            MeetingError::PasswordRequired => AppError::new(StatusCode::UNAUTHORIZED, "password_required", msg),
            MeetingError::WrongPassword => AppError::new(StatusCode::UNAUTHORIZED, "wrong_password", msg),
            MeetingError::Ended => AppError::new(StatusCode::GONE, "meeting_ended", msg),
            MeetingError::NotHost => AppError::new(StatusCode::FORBIDDEN, "not_host", msg),
            MeetingError::Unauthorized(_) => AppError::unauthorized(msg),
            MeetingError::InvalidTransition { .. } => AppError::new(StatusCode::CONFLICT, "invalid_transition", msg),
            MeetingError::Invalid(_) => AppError::bad_request(msg),
            MeetingError::Store(e) => AppError::internal(e),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return Ok(Caller::Anonymous) };
        let value = value.to_str().map_err(|_| AppError::unauthorized("unreadable Authorization header"))?;
        if let Some(basic) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| AppError::unauthorized("malformed Basic credentials"))?;
            let (key, secret) = decoded.split_once(':').ok_or_else(|| AppError::unauthorized("malformed Basic credentials"))?;
            if !state.tokens.check_api_key(key, secret) {
                return Err(AppError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "unknown API key or wrong secret"));
            }
            return Ok(Caller::Service { key: key.to_owned() });
        }
        if let Some(token) = value.strip_prefix("Bearer ") {
            return match state.tokens.verify(token.trim(), None, SystemTime::now()) {
                Ok(c) => Ok(Caller::Token(c)),
                Err(TokenError::Expired) => Err(AppError::new(StatusCode::UNAUTHORIZED, "token_expired", "the access token has expired")),
                Err(e) => Err(AppError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string())),
            };
        }
        Err(AppError::unauthorized("Authorization must be Basic (API key) or Bearer (token)"))
    }
}

/// Public view of a meeting: never the password hash.
#[derive(Debug, Serialize)]
pub struct MeetingView {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: &'static str,
    /// Whether joining needs a password.
    pub has_password: bool,
    /// Current host identity.
    pub host_identity: String,
    /// Host's display name.
    pub host_name: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub ended_at: Option<String>,
    /// Link to the join page.
    pub join_url: String,
    /// Link to the meeting room.
    pub room_url: String,
}

impl From<&Meeting> for MeetingView {
    fn from(m: &Meeting) -> Self {
        MeetingView {
            code: m.code.to_string(),
            name: m.name.clone(),
            status: m.status.as_str(),
            has_password: m.password_hash.is_some(),
            host_identity: m.host_identity.clone(),
            host_name: m.host_name.clone(),
            created_at: rfc3339(m.created_at),
            started_at: m.started_at.map(rfc3339),
            ended_at: m.ended_at.map(rfc3339),
            join_url: format!("/join/{}", m.code),
            room_url: format!("/m/{}", m.code),
        }
    }
}

/// Body of `POST /api/meetings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMeeting {
    /// Name.
    pub name: String,
    /// Optional password.
    #[serde(default)]
    pub password: Option<String>,
    /// Host's display name.
    #[serde(default)]
    pub host_name: Option<String>,
}

/// Reply of `POST /api/meetings`.
#[derive(Debug, Serialize)]
pub struct Created {
    #[serde(flatten)]
    meeting: MeetingView,
    /// Token that makes its holder the host (join as host, start, end).
    host_token: String,
}

/// `POST /api/meetings`.
pub async fn create(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateMeeting>,
) -> Result<impl IntoResponse, AppError> {
    if matches!(caller, Caller::Anonymous) && !s.config.guest_access {
        return Err(AppError::unauthorized("creating meetings needs the API key on this server"));
    }
    let (m, host_token) = s.meetings.create(&caller, &body.name, body.password.as_deref(), body.host_name.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(Created { meeting: MeetingView::from(&m), host_token })))
}

/// Pagination of `GET /api/meetings`.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// 1-100, default 20.
    #[serde(default)]
    pub limit: Option<i64>,
    /// Default 0.
    #[serde(default)]
    pub offset: Option<i64>,
}

/// `GET /api/meetings`: the caller's meetings, newest first.
pub async fn list(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<serde_json::Value>, AppError> {
    let limit = page.limit.unwrap_or(20);
    let offset = page.offset.unwrap_or(0);
    if !(1..=100).contains(&limit) || offset < 0 {
        return Err(AppError::bad_request("limit must be 1-100 and offset non-negative"));
    }
    // One extra row tells whether there is a next page.
    let mut rows = s.meetings.list(&caller, limit + 1, offset).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let meetings: Vec<MeetingView> = rows.iter().map(MeetingView::from).collect();
    Ok(Json(serde_json::json!({
        "meetings": meetings,
        "next_offset": if more { Some(offset + limit) } else { None },
    })))
}

/// `GET /api/meetings/{code}`: public info.
pub async fn get(State(s): State<Arc<AppState>>, Path(code): Path<String>) -> Result<Json<serde_json::Value>, AppError> {
    let m = s.meetings.get(&code).await?;
    let mut v = serde_json::to_value(MeetingView::from(&m)).map_err(AppError::internal)?;
    let present = s.rooms.get(&conclave_signaling::RoomName(m.code.to_string())).map(|r| r.participant_count()).unwrap_or(0);
    v["participant_count"] = present.into();
    Ok(Json(v))
}

/// Body of `POST /api/meetings/{code}/join`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinMeeting {
    /// Display name.
    pub name: String,
    /// Password, when the meeting has one.
    #[serde(default)]
    pub password: Option<String>,
}

/// `POST /api/meetings/{code}/join`.
pub async fn join(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<JoinMeeting>,
) -> Result<Json<serde_json::Value>, AppError> {
    let JoinGrant { token, identity, role, meeting } = s.meetings.join(&code, &caller, &body.name, body.password.as_deref()).await?;
    Ok(Json(serde_json::json!({
        "token": token,
        "identity": identity,
        "role": role,
        "room": meeting.code,
        "room_url": format!("/m/{}", meeting.code),
        "meeting": MeetingView::from(&meeting),
    })))
}

/// `POST /api/meetings/{code}/start`.
pub async fn start(State(s): State<Arc<AppState>>, Path(code): Path<String>, caller: Caller) -> Result<Json<MeetingView>, AppError> {
    Ok(Json(MeetingView::from(&s.meetings.start(&code, &caller).await?)))
}

/// `POST /api/meetings/{code}/end`.
pub async fn end(State(s): State<Arc<AppState>>, Path(code): Path<String>, caller: Caller) -> Result<Json<MeetingView>, AppError> {
    Ok(Json(MeetingView::from(&s.meetings.end(&code, &caller).await?)))
}

/// `POST /api/meetings/{code}/leave`.
pub async fn leave(State(s): State<Arc<AppState>>, Path(code): Path<String>, caller: Caller) -> Result<StatusCode, AppError> {
    s.meetings.leave(&code, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/meetings/{code}/participants`.
pub async fn participants(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, AppError> {
    let rows: Vec<ParticipantRecord> = s.meetings.participants(&code, &caller).await?;
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|p| {
            serde_json::json!({
                "identity": p.identity,
                "name": p.name,
                "role": p.role,
                "joined_at": rfc3339(p.joined_at),
                "left_at": p.left_at.map(rfc3339),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "participants": list })))
}
