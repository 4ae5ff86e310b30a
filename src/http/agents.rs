//! `/api/rooms/{room}/agent`, `/api/meetings/{code}/agent`, `/api/question-sets`, `/api/leads`.
//!
//! Agents are dispatched, stopped and read with the API key, or with a token that administers
//! the room (a meeting's host token). Question sets and leads need the API key.

use super::error::{ApiJson, AppError, ErrorBody, service_only, store_err};
use crate::agents::{AgentError, AgentStatus, parse_category};
use crate::clock::rfc3339;
use crate::meetings::Caller;
use crate::meetings::model::{MeetingCode, MeetingStatus};
use crate::room::Open;
use crate::state::AppState;
use crate::store::{LeadRecord, QuestionSetRecord, QuestionSpec};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use conclave_media::lead::Date;
use conclave_signaling::RoomName;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use utoipa::ToSchema;

/// Longest question text, greeting, closing or follow-up.
const MAX_TEXT: usize = 500;
/// Most questions in a set.
const MAX_QUESTIONS: usize = 30;
/// Longest name, company or email.
const MAX_FIELD: usize = 200;

impl From<AgentError> for AppError {
    fn from(e: AgentError) -> Self {
        let msg = e.to_string();
        match e {
            AgentError::AlreadyRunning(_) => {
                AppError::new(StatusCode::CONFLICT, "agent_running", msg)
            }
            AgentError::NotRunning(_) => AppError::new(StatusCode::NOT_FOUND, "no_agent", msg),
            AgentError::TooMany(_) => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_agents", msg)
                    .retry_after(std::time::Duration::from_secs(30))
            }
            AgentError::VoiceLoading => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "voice_loading", msg)
                    .retry_after(std::time::Duration::from_secs(3))
            }
            AgentError::Unavailable(_) => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "agent_unavailable", msg)
            }
            AgentError::Join(j) => {
                AppError::new(StatusCode::NOT_FOUND, "room_not_found", j.to_string())
            }
            AgentError::Store(e) => AppError::internal(e),
        }
    }
}

/// The API key, or a token that administers `room`.
fn may_run_agent(caller: &Caller, room: &str) -> Result<(), AppError> {
    match caller {
        Caller::Service { .. } => Ok(()),
        Caller::Token(c) if c.room == room && c.grants.room_admin => Ok(()),
        Caller::Token(_) => Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token does not administer this room",
        )),
        Caller::Anonymous => Err(AppError::unauthorized(
            "agents need the API key or the room's host token",
        )),
    }
}

/// Body of a dispatch. Every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatchBody {
    /// The agent's display name (default "Assistant").
    #[serde(default)]
    pub name: Option<String>,
    /// Stored question set to ask (default: a built-in BANT set).
    #[serde(default)]
    pub question_set_id: Option<i64>,
    /// Stored lead; its name is used in the greeting.
    #[serde(default)]
    pub lead_id: Option<i64>,
    /// The lead's name, when there is no stored lead.
    #[serde(default)]
    pub lead_name: Option<String>,
    /// Only this identity's words count as the lead's (default: every member who is neither
    /// a host nor an agent).
    #[serde(default)]
    pub lead_identity: Option<String>,
    /// The meeting's date (`YYYY-MM-DD`) for relative dates; default today (UTC).
    #[serde(default)]
    pub meeting_day: Option<String>,
}

/// An empty body is a dispatch with every default.
fn dispatch_body(bytes: &[u8]) -> Result<DispatchBody, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DispatchBody::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON body: {e}"),
        )
    })
}

fn today() -> Date {
    let days = crate::clock::now_ms().div_euclid(86_400_000);
    Date::from_days(days)
}

async fn dispatch_into(
    s: &AppState,
    room: &RoomName,
    how: Open,
    body: DispatchBody,
) -> Result<AgentStatus, AppError> {
    // An agent runs beside its room's media: in a cluster, on the room's node.
    match s.router.hosts(room).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(AppError::new(
                StatusCode::CONFLICT,
                "room_elsewhere",
                format!(
                    "room {room} runs on another node of the cluster; send this request to that node (GET /api/nodes lists them)"
                ),
            ));
        }
        Err(e) => {
            return Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("the room's node cannot be found: {e}"),
            ));
        }
    }
    let lead_name = body
        .lead_name
        .map(|n| n.chars().take(MAX_FIELD).collect::<String>());
    let meeting_day = match body.meeting_day.as_deref() {
        Some(d) => Date::parse_iso(d)
            .ok_or_else(|| AppError::bad_request("meeting_day must be YYYY-MM-DD"))?,
        None => today(),
    };
    let name = body
        .name
        .map(|n| n.trim().chars().take(64).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "Assistant".to_owned());
    let d = crate::agents::prepare(
        s.meetings.store(),
        name,
        body.question_set_id,
        body.lead_id,
        lead_name,
        body.lead_identity,
        meeting_day,
        crate::agents::LeaveRules::default(),
    )
    .await
    .map_err(|e| match e {
        crate::agents::PrepareError::NotFound(m) => AppError::not_found(m),
        crate::agents::PrepareError::Store(e) => store_err(e),
    })?;
    Ok(s.agents.dispatch(room, &how, d).await?)
}

fn room_name(room: &str) -> Result<RoomName, AppError> {
    RoomName::validate(room)
        .ok_or_else(|| AppError::bad_request("room name must be 1-64 characters of [A-Za-z0-9_.-]"))
}

#[utoipa::path(post, path = "/api/rooms/{room}/agent", tag = "agents", params(("room" = String, Path)),
    request_body = DispatchBody,
    responses((status = 202, description = "the agent is joining; body as GET"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
/// `POST /api/rooms/{room}/agent`: sends an AI agent into the room.
pub async fn dispatch_room(
    State(s): State<Arc<AppState>>,
    Path(room): Path<String>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let name = room_name(&room)?;
    may_run_agent(&caller, name.as_str())?;
    if MeetingCode::reserved_by(name.as_str()).is_some() {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "meeting_room",
            format!("room {name} is a meeting's: use POST /api/meetings/{name}/agent"),
        ));
    }
    let body = dispatch_body(&body)?;
    let status = dispatch_into(&s, &name, Open::Join, body).await?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

#[utoipa::path(get, path = "/api/rooms/{room}/agent", tag = "agents", params(("room" = String, Path)),
    responses((status = 200, description = "status, score, summary, events"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
/// `GET /api/rooms/{room}/agent`: the agent's status and latest score (also after the room
/// closed: the last stored run).
pub async fn get_room(
    State(s): State<Arc<AppState>>,
    Path(room): Path<String>,
    caller: Caller,
) -> Result<Json<AgentStatus>, AppError> {
    let name = room_name(&room)?;
    may_run_agent(&caller, name.as_str())?;
    s.agents.status(&name).await?.map(Json).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "no_agent",
            format!("no agent has been in room {name}"),
        )
    })
}

#[utoipa::path(delete, path = "/api/rooms/{room}/agent", tag = "agents", params(("room" = String, Path)),
    responses((status = 202, description = "the agent is leaving"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
/// `DELETE /api/rooms/{room}/agent`: the agent leaves (its score and summary are kept).
pub async fn stop_room(
    State(s): State<Arc<AppState>>,
    Path(room): Path<String>,
    caller: Caller,
) -> Result<impl IntoResponse, AppError> {
    let name = room_name(&room)?;
    may_run_agent(&caller, name.as_str())?;
    s.agents.stop(&name)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"room": name, "status": "stopping"})),
    ))
}

async fn meeting_room(s: &AppState, code: &str) -> Result<RoomName, AppError> {
    let m = s.meetings.get(code).await?;
    if m.status == MeetingStatus::Ended {
        return Err(AppError::new(
            StatusCode::GONE,
            "meeting_ended",
            "the meeting has ended",
        ));
    }
    room_name(m.code.as_str())
}

#[utoipa::path(post, path = "/api/meetings/{code}/agent", tag = "agents", params(("code" = String, Path)),
    request_body = DispatchBody,
    responses((status = 202, description = "the agent is joining"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
/// `POST /api/meetings/{code}/agent`: sends an AI agent into the meeting.
pub async fn dispatch_meeting(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let room = meeting_room(&s, &code).await?;
    may_run_agent(&caller, room.as_str())?;
    let body = dispatch_body(&body)?;
    let status = dispatch_into(&s, &room, Open::Meeting(room.to_string()), body).await?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

#[utoipa::path(get, path = "/api/meetings/{code}/agent", tag = "agents", params(("code" = String, Path)),
    responses((status = 200, description = "status, score, summary, events"), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
/// `GET /api/meetings/{code}/agent`: the meeting's agent, running or stored.
pub async fn get_meeting(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
) -> Result<Json<AgentStatus>, AppError> {
    let m = s.meetings.get(&code).await?;
    let room = room_name(m.code.as_str())?;
    may_run_agent(&caller, room.as_str())?;
    s.agents.status(&room).await?.map(Json).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "no_agent",
            "no agent has been in this meeting",
        )
    })
}

#[utoipa::path(delete, path = "/api/meetings/{code}/agent", tag = "agents", params(("code" = String, Path)),
    responses((status = 202, description = "the agent is leaving"), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("token" = [])))]
/// `DELETE /api/meetings/{code}/agent`.
pub async fn stop_meeting(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    caller: Caller,
) -> Result<impl IntoResponse, AppError> {
    let m = s.meetings.get(&code).await?;
    let room = room_name(m.code.as_str())?;
    may_run_agent(&caller, room.as_str())?;
    s.agents.stop(&room)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"room": room, "status": "stopping"})),
    ))
}

// ---- question sets ----

/// A question set as sent and served.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuestionSetBody {
    /// Name.
    pub name: String,
    /// Opening line; `{name}` is the lead's name.
    #[serde(default)]
    pub greeting: Option<String>,
    /// Last line, after the spoken summary.
    #[serde(default)]
    pub closing: Option<String>,
    /// In order.
    pub questions: Vec<QuestionSpec>,
}

/// A stored question set.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuestionSetView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Opening line.
    pub greeting: String,
    /// Last line.
    pub closing: String,
    /// In order.
    pub questions: Vec<QuestionSpec>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<QuestionSetRecord> for QuestionSetView {
    fn from(r: QuestionSetRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            greeting: r.greeting,
            closing: r.closing,
            questions: r.questions,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), AppError> {
    if s.chars().count() > max {
        return Err(AppError::bad_request(format!(
            "{what} is longer than {max} characters"
        )));
    }
    Ok(())
}

fn validate_set(
    b: &QuestionSetBody,
) -> Result<(String, String, String, Vec<QuestionSpec>), AppError> {
    let name = b.name.trim().to_owned();
    if name.is_empty() {
        return Err(AppError::bad_request("name must not be empty"));
    }
    check_text("name", &name, MAX_FIELD)?;
    if b.questions.is_empty() || b.questions.len() > MAX_QUESTIONS {
        return Err(AppError::bad_request(format!(
            "a set has 1-{MAX_QUESTIONS} questions"
        )));
    }
    let greeting = b
        .greeting
        .clone()
        .unwrap_or_else(|| "Hi {name}, I have a few quick questions.".into());
    let closing = b
        .closing
        .clone()
        .unwrap_or_else(|| "Thank you for your time.".into());
    check_text("greeting", &greeting, MAX_TEXT)?;
    check_text("closing", &closing, MAX_TEXT)?;
    let mut qs = Vec::with_capacity(b.questions.len());
    for (i, q) in b.questions.iter().enumerate() {
        let text = q.text.trim().to_owned();
        if text.is_empty() {
            return Err(AppError::bad_request(format!(
                "question {} has no text",
                i + 1
            )));
        }
        check_text("a question", &text, MAX_TEXT)?;
        if parse_category(&q.category).is_none() {
            return Err(AppError::bad_request(format!(
                "question {}: category must be budget, authority, need, timeline or other",
                i + 1
            )));
        }
        let follow_up = q
            .follow_up
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty());
        if let Some(f) = follow_up {
            check_text("a follow-up", f, MAX_TEXT)?;
        }
        qs.push(QuestionSpec {
            text,
            category: q.category.clone(),
            follow_up: follow_up.map(str::to_owned),
        });
    }
    Ok((name, greeting, closing, qs))
}

#[utoipa::path(post, path = "/api/question-sets", tag = "agents", request_body = QuestionSetBody,
    responses((status = 201, body = QuestionSetView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
/// `POST /api/question-sets`.
pub async fn create_set(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(b): ApiJson<QuestionSetBody>,
) -> Result<impl IntoResponse, AppError> {
    service_only(&caller)?;
    let (name, greeting, closing, qs) = validate_set(&b)?;
    let r = s
        .meetings
        .store()
        .insert_question_set(&name, &greeting, &closing, &qs, crate::clock::now_ms())
        .await
        .map_err(store_err)?;
    Ok((StatusCode::CREATED, Json(QuestionSetView::from(r))))
}

#[utoipa::path(get, path = "/api/question-sets", tag = "agents",
    responses((status = 200, description = "{\"question_sets\": [...]}, newest first, at most 500"), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
/// `GET /api/question-sets`.
pub async fn list_sets(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let sets = s
        .meetings
        .store()
        .question_sets(500)
        .await
        .map_err(store_err)?;
    let views: Vec<QuestionSetView> = sets.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "question_sets": views })))
}

#[utoipa::path(get, path = "/api/question-sets/{id}", tag = "agents", params(("id" = i64, Path)),
    responses((status = 200, body = QuestionSetView), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `GET /api/question-sets/{id}`.
pub async fn get_set(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    caller: Caller,
) -> Result<Json<QuestionSetView>, AppError> {
    service_only(&caller)?;
    s.meetings
        .store()
        .question_set(id)
        .await
        .map_err(store_err)?
        .map(|r| Json(r.into()))
        .ok_or_else(|| AppError::not_found(format!("no question set {id}")))
}

#[utoipa::path(put, path = "/api/question-sets/{id}", tag = "agents", params(("id" = i64, Path)), request_body = QuestionSetBody,
    responses((status = 200, body = QuestionSetView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `PUT /api/question-sets/{id}`: replaces the set.
pub async fn update_set(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    caller: Caller,
    ApiJson(b): ApiJson<QuestionSetBody>,
) -> Result<Json<QuestionSetView>, AppError> {
    service_only(&caller)?;
    let (name, greeting, closing, qs) = validate_set(&b)?;
    s.meetings
        .store()
        .update_question_set(id, &name, &greeting, &closing, &qs, crate::clock::now_ms())
        .await
        .map_err(store_err)?
        .map(|r| Json(r.into()))
        .ok_or_else(|| AppError::not_found(format!("no question set {id}")))
}

#[utoipa::path(delete, path = "/api/question-sets/{id}", tag = "agents", params(("id" = i64, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `DELETE /api/question-sets/{id}`.
pub async fn delete_set(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    caller: Caller,
) -> Result<StatusCode, AppError> {
    service_only(&caller)?;
    if s.meetings
        .store()
        .delete_question_set(id)
        .await
        .map_err(store_err)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found(format!("no question set {id}")))
    }
}

// ---- leads ----

/// A lead as sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadBody {
    /// Name.
    pub name: String,
    /// Company.
    #[serde(default)]
    pub company: String,
    /// Email.
    #[serde(default)]
    pub email: String,
}

/// A stored lead.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeadView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Company.
    pub company: String,
    /// Email.
    pub email: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<LeadRecord> for LeadView {
    fn from(r: LeadRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            company: r.company,
            email: r.email,
            created_at: rfc3339(r.created_at),
        }
    }
}

fn validate_lead(b: &LeadBody) -> Result<(String, String, String), AppError> {
    let name = b.name.trim().to_owned();
    if name.is_empty() {
        return Err(AppError::bad_request("name must not be empty"));
    }
    let company = b.company.trim().to_owned();
    let email = b.email.trim().to_owned();
    check_text("name", &name, MAX_FIELD)?;
    check_text("company", &company, MAX_FIELD)?;
    check_text("email", &email, MAX_FIELD)?;
    if !email.is_empty() && (!email.contains('@') || email.contains(char::is_whitespace)) {
        return Err(AppError::bad_request("email is not an address"));
    }
    Ok((name, company, email))
}

#[utoipa::path(post, path = "/api/leads", tag = "agents", request_body = LeadBody,
    responses((status = 201, body = LeadView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
/// `POST /api/leads`.
pub async fn create_lead(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(b): ApiJson<LeadBody>,
) -> Result<impl IntoResponse, AppError> {
    service_only(&caller)?;
    let (name, company, email) = validate_lead(&b)?;
    let r = s
        .meetings
        .store()
        .insert_lead(&name, &company, &email, crate::clock::now_ms())
        .await
        .map_err(store_err)?;
    Ok((StatusCode::CREATED, Json(LeadView::from(r))))
}

#[utoipa::path(get, path = "/api/leads", tag = "agents",
    responses((status = 200, description = "{\"leads\": [...]}, newest first, at most 500"), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
/// `GET /api/leads`.
pub async fn list_leads(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let leads = s.meetings.store().leads(500).await.map_err(store_err)?;
    let views: Vec<LeadView> = leads.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "leads": views })))
}

#[utoipa::path(get, path = "/api/leads/{id}", tag = "agents", params(("id" = i64, Path)),
    responses((status = 200, description = "the lead with its runs: meetings, scores over time, summaries and conversation events"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `GET /api/leads/{id}`: the lead and every agent conversation with it.
pub async fn get_lead(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    caller: Caller,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let store = s.meetings.store();
    let lead = store
        .lead(id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| AppError::not_found(format!("no lead {id}")))?;
    let mut runs = Vec::new();
    for run in store.lead_runs(id).await.map_err(store_err)? {
        let events = store.conversation_events(run.id).await.map_err(store_err)?;
        runs.push(json!({
            "run_id": run.id,
            "room": run.room,
            "meeting_code": run.meeting_code,
            "status": run.status,
            "started_at": rfc3339(run.started_at),
            "ended_at": run.ended_at.map(rfc3339),
            "score": run.score,
            "summary": run.summary,
            "events": events,
        }));
    }
    let mut v = serde_json::to_value(LeadView::from(lead)).expect("lead serializes");
    v["runs"] = Value::Array(runs);
    Ok(Json(v))
}

#[utoipa::path(put, path = "/api/leads/{id}", tag = "agents", params(("id" = i64, Path)), request_body = LeadBody,
    responses((status = 200, body = LeadView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `PUT /api/leads/{id}`.
pub async fn update_lead(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    caller: Caller,
    ApiJson(b): ApiJson<LeadBody>,
) -> Result<Json<LeadView>, AppError> {
    service_only(&caller)?;
    let (name, company, email) = validate_lead(&b)?;
    s.meetings
        .store()
        .update_lead(id, &name, &company, &email)
        .await
        .map_err(store_err)?
        .map(|r| Json(r.into()))
        .ok_or_else(|| AppError::not_found(format!("no lead {id}")))
}

#[utoipa::path(delete, path = "/api/leads/{id}", tag = "agents", params(("id" = i64, Path)),
    responses((status = 204, description = "deleted; its runs stay, unlinked"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `DELETE /api/leads/{id}`.
pub async fn delete_lead(
    State(s): State<Arc<AppState>>,
    Path(id): Path<i64>,
    caller: Caller,
) -> Result<StatusCode, AppError> {
    service_only(&caller)?;
    if s.meetings
        .store()
        .delete_lead(id)
        .await
        .map_err(store_err)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found(format!("no lead {id}")))
    }
}
