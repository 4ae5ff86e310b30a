//! `/api/meetings`: create, list, inspect, join, start, end, leave, participants.
//!
//! Authentication: server-to-server clients send `Authorization: Basic <api_key:api_secret>`;
//! browsers send `Authorization: Bearer <token>` (the host token from creation, or a join
//! token). Creating a meeting needs no credentials when guest access is on.

use super::error::{ApiJson, AppError, ErrorBody};
use crate::auth::TokenError;
use crate::clock::rfc3339;
use crate::meetings::model::Meeting;
use crate::meetings::service::JoinGrant;
use crate::meetings::{Caller, MeetingError};
use crate::state::AppState;
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
use utoipa::{IntoParams, ToSchema};

impl From<MeetingError> for AppError {
    fn from(e: MeetingError) -> Self {
        let msg = e.to_string();
        match e {
            MeetingError::NotFound(_) => {
                AppError::new(StatusCode::NOT_FOUND, "meeting_not_found", msg)
            }
            MeetingError::PasswordRequired => {
                AppError::new(StatusCode::UNAUTHORIZED, "password_required", msg)
            }
            MeetingError::WrongPassword => {
                AppError::new(StatusCode::UNAUTHORIZED, "wrong_password", msg)
            }
            MeetingError::Ended => AppError::new(StatusCode::GONE, "meeting_ended", msg),
            MeetingError::NotOpenYet { opens_at } => {
                let wait = (opens_at - crate::clock::now_ms()).max(1_000) as u64;
                AppError::new(StatusCode::CONFLICT, "not_open_yet", msg)
                    .retry_after(std::time::Duration::from_millis(wait.min(3_600_000)))
            }
            MeetingError::NotHost => AppError::new(StatusCode::FORBIDDEN, "not_host", msg),
            MeetingError::Unauthorized(_) => AppError::unauthorized(msg),
            MeetingError::InvalidTransition { .. } => {
                AppError::new(StatusCode::CONFLICT, "invalid_transition", msg)
            }
            MeetingError::Invalid(_) => AppError::bad_request(msg),
            MeetingError::Busy => AppError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", msg)
                .retry_after(std::time::Duration::from_secs(1)),
            MeetingError::Store(e) => AppError::internal(e),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let value = value
            .to_str()
            .map_err(|_| AppError::unauthorized("unreadable Authorization header"))?;
        if let Some(basic) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| AppError::unauthorized("malformed Basic credentials"))?;
            let (key, secret) = decoded
                .split_once(':')
                .ok_or_else(|| AppError::unauthorized("malformed Basic credentials"))?;
            if !state.tokens.check_api_key(key, secret) {
                return Err(AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_api_key",
                    "unknown API key or wrong secret",
                ));
            }
            return Ok(Caller::Service {
                key: key.to_owned(),
            });
        }
        if let Some(token) = value.strip_prefix("Bearer ") {
            return match state.tokens.verify(token.trim(), None, SystemTime::now()) {
                Ok(c) => Ok(Caller::Token(c)),
                Err(TokenError::Expired) => Err(AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "token_expired",
                    "the access token has expired",
                )),
                Err(e) => Err(AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    e.to_string(),
                )),
            };
        }
        Err(AppError::unauthorized(
            "Authorization must be Basic (API key) or Bearer (token)",
        ))
    }
}

/// Public view of a meeting: never the password hash.
#[derive(Debug, Serialize, ToSchema)]
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
    /// People connected right now (only in `GET /api/meetings/{code}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_count: Option<usize>,
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
            participant_count: None,
        }
    }
}

/// Body of `POST /api/meetings`.
#[derive(Debug, Deserialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    /// The meeting.
    #[serde(flatten)]
    pub meeting: MeetingView,
    /// Token that makes its holder the host (join as host, start, end).
    pub host_token: String,
}

/// `POST /api/meetings`.
#[utoipa::path(post, path = "/api/meetings", tag = "meetings", request_body = CreateMeeting,
    responses((status = 201, body = Created), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)),
    security((), ("api_key" = []), ("token" = [])))]
pub async fn create(
    State(s): State<Arc<AppState>>,
    super::ClientIp(ip): super::ClientIp,
    caller: Caller,
    ApiJson(body): ApiJson<CreateMeeting>,
) -> Result<impl IntoResponse, AppError> {
    // The API key (operators' scripts) is not rate limited; browsers and tokens are.
    if !matches!(caller, Caller::Service { .. }) {
        s.abuse.request(ip)?;
    }
    // With guest access off, only the API key, or a token with the explicit create grant,
    // creates meetings: a participant's or guest's token is not enough.
    let may_create = match &caller {
        Caller::Service { .. } => true,
        Caller::Token(c) => s.config.guest_access || c.grants.create_meetings,
        Caller::Anonymous => s.config.guest_access,
    };
    if !may_create {
        let msg = "creating meetings needs the API key (or a token with the create_meetings grant) on this server";
        return Err(match caller {
            Caller::Anonymous => AppError::unauthorized(msg),
            _ => AppError::new(StatusCode::FORBIDDEN, "forbidden", msg),
        });
    }
    let (m, host_token) = s
        .meetings
        .create(
            &caller,
            &body.name,
            body.password.as_deref(),
            body.host_name.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            meeting: MeetingView::from(&m),
            host_token,
        }),
    ))
}

/// Pagination of `GET /api/meetings`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct Page {
    /// 1-100, default 20.
    #[serde(default)]
    pub limit: Option<i64>,
    /// Default 0.
    #[serde(default)]
    pub offset: Option<i64>,
}

/// A page of meetings.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeetingList {
    /// Newest first.
    pub meetings: Vec<MeetingView>,
    /// Offset of the next page, if there is one.
    pub next_offset: Option<i64>,
}

/// `GET /api/meetings`: the caller's meetings, newest first.
#[utoipa::path(get, path = "/api/meetings", tag = "meetings", params(Page),
    responses((status = 200, body = MeetingList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<MeetingList>, AppError> {
    let limit = page.limit.unwrap_or(20);
    let offset = page.offset.unwrap_or(0);
    if !(1..=100).contains(&limit) || offset < 0 {
        return Err(AppError::bad_request(
            "limit must be 1-100 and offset non-negative",
        ));
    }
    // One extra row tells whether there is a next page.
    let mut rows = s.meetings.list(&caller, limit + 1, offset).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let meetings: Vec<MeetingView> = rows.iter().map(MeetingView::from).collect();
    Ok(Json(MeetingList {
        meetings,
        next_offset: more.then_some(offset + limit),
    }))
}

/// `GET /api/meetings/{code}`: public info.
#[utoipa::path(get, path = "/api/meetings/{code}", tag = "meetings", params(("code" = String, Path, description = "Meeting code, any case, dashes optional")),
    responses((status = 200, body = MeetingView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Json<MeetingView>, AppError> {
    let m = s.meetings.get(&code).await?;
    let mut v = MeetingView::from(&m);
    let present = match conclave_signaling::RoomName::validate(m.code.as_str()) {
        Some(room) => s.router.member_count(&room).await,
        None => 0,
    };
    v.participant_count = Some(present);
    Ok(Json(v))
}

/// Body of `POST /api/meetings/{code}/join`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinMeeting {
    /// Display name.
    pub name: String,
    /// Password, when the meeting has one.
    #[serde(default)]
    pub password: Option<String>,
}

/// Reply of a successful join.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinReply {
    /// Access token for the signaling WebSocket.
    pub token: String,
    /// Identity in the token.
    pub identity: String,
    /// `host`, `participant` or `agent`.
    #[schema(value_type = String)]
    pub role: crate::meetings::model::Role,
    /// Room name to send in `join` (the code).
    pub room: String,
    /// The meeting room page.
    pub room_url: String,
    /// The meeting.
    pub meeting: MeetingView,
}

/// `POST /api/meetings/{code}/join`.
#[utoipa::path(post, path = "/api/meetings/{code}/join", tag = "meetings", request_body = JoinMeeting, params(("code" = String, Path)),
    responses((status = 200, body = JoinReply), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody, description = "password_required / wrong_password"),
        (status = 404, body = ErrorBody), (status = 410, body = ErrorBody, description = "meeting_ended")),
    security((), ("token" = [])))]
pub async fn join(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    super::ClientIp(ip): super::ClientIp,
    caller: Caller,
    ApiJson(body): ApiJson<JoinMeeting>,
) -> Result<Json<JoinReply>, AppError> {
    s.abuse.request(ip)?;
    s.abuse.before_password(ip, &code)?;
    let joined = s
        .meetings
        .join(&code, &caller, &body.name, body.password.as_deref())
        .await;
    match &joined {
        Err(MeetingError::WrongPassword) => s.abuse.after_password(ip, &code, false),
        Ok(_) => s.abuse.after_password(ip, &code, true),
        Err(_) => {}
    }
    let JoinGrant {
        token,
        identity,
        role,
        meeting,
    } = joined?;
    Ok(Json(JoinReply {
        token,
        identity,
        role,
        room: meeting.code.to_string(),
        room_url: format!("/m/{}", meeting.code),
        meeting: MeetingView::from(&meeting),
    }))
}

/// `POST /api/meetings/{code}/start`.
#[utoipa::path(post, path = "/api/meetings/{code}/start", tag = "meetings", params(("code" = String, Path)),
    responses((status = 200, body = MeetingView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "not_host"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "invalid_transition")),
    security(("api_key" = []), ("token" = [])))]
pub async fn start(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
) -> Result<Json<MeetingView>, AppError> {
    Ok(Json(MeetingView::from(
        &s.meetings.start(&code, &caller).await?,
    )))
}

/// `POST /api/meetings/{code}/end`.
#[utoipa::path(post, path = "/api/meetings/{code}/end", tag = "meetings", params(("code" = String, Path)),
    responses((status = 200, body = MeetingView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
pub async fn end(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
) -> Result<Json<MeetingView>, AppError> {
    Ok(Json(MeetingView::from(
        &s.meetings.end(&code, &caller).await?,
    )))
}

/// `POST /api/meetings/{code}/leave`.
#[utoipa::path(post, path = "/api/meetings/{code}/leave", tag = "meetings", params(("code" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = [])))]
pub async fn leave(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
) -> Result<StatusCode, AppError> {
    s.meetings.leave(&code, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One stay in a meeting.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantView {
    /// Identity.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Role.
    #[schema(value_type = String)]
    pub role: crate::meetings::model::Role,
    /// RFC 3339.
    pub joined_at: String,
    /// RFC 3339, while still present `null`.
    pub left_at: Option<String>,
}

/// Participant history of a meeting.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantList {
    /// In order of arrival.
    pub participants: Vec<ParticipantView>,
}

/// `GET /api/meetings/{code}/participants`.
#[utoipa::path(get, path = "/api/meetings/{code}/participants", tag = "meetings", params(("code" = String, Path)),
    responses((status = 200, body = ParticipantList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
pub async fn participants(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
) -> Result<Json<ParticipantList>, AppError> {
    let rows: Vec<ParticipantRecord> = s.meetings.participants(&code, &caller).await?;
    let participants = rows
        .into_iter()
        .map(|p| ParticipantView {
            identity: p.identity,
            name: p.name,
            role: p.role,
            joined_at: rfc3339(p.joined_at),
            left_at: p.left_at.map(rfc3339),
        })
        .collect();
    Ok(Json(ParticipantList { participants }))
}
