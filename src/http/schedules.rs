//! `/api/schedules`, `/api/occurrences/{id}`, `/api/hosts/{identity}/preferences`: meetings
//! that run themselves. API key only (operators and calendar integrations script these).

use super::error::{ApiJson, AppError, ErrorBody, service_only, store_err};
use crate::meetings::Caller;
use crate::meetings::model::MeetingCode;
use crate::schedule::recurrence::{self, Rule, Series};
use crate::schedule::{LOCAL_FORMAT, series_of};
use crate::state::AppState;
use crate::store::{
    HostPreferences, Invitee, NewMeeting, OccurrenceRecord, ScheduleRecord, ScheduleSpec,
    StoreError,
};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use utoipa::ToSchema;

/// Longest meeting (each occurrence).
const MAX_DURATION_MS: i64 = 24 * 3_600_000;
/// How far ahead overlaps with the host's other meetings are checked.
const CONFLICT_WINDOW_MS: i64 = 90 * 86_400_000;
/// Most invitees and exceptions of one series.
const MAX_LIST: usize = 100;

/// A meeting to schedule (or its new values).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Title (1-200 characters).
    pub title: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// The host's identity (the `sub` of their tokens).
    pub host_identity: String,
    /// IANA time zone of `start`, `end`, the rule and the exceptions, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// First start, local: `YYYY-MM-DDTHH:MM` (seconds optional).
    pub start: String,
    /// First end, local, after `start` (or give `duration_minutes`).
    #[serde(default)]
    pub end: Option<String>,
    /// Length in minutes (1-1440), instead of `end`.
    #[serde(default)]
    pub duration_minutes: Option<i64>,
    /// RRULE subset: FREQ=DAILY|WEEKLY, INTERVAL, BYDAY, COUNT, UNTIL.
    #[serde(default)]
    pub rrule: Option<String>,
    /// Local starts that do not happen.
    #[serde(default)]
    pub exdates: Vec<String>,
    /// Lead the agent talks to.
    #[serde(default)]
    pub lead_id: Option<i64>,
    /// Question set the agent asks.
    #[serde(default)]
    pub question_set_id: Option<i64>,
    /// Send the AI agent on its own.
    #[serde(default)]
    pub auto_join: bool,
    /// People invited.
    #[serde(default)]
    pub invitees: Vec<Invitee>,
    /// Schedule even if it overlaps another of the host's meetings.
    #[serde(default)]
    pub force: bool,
    /// On update: the version read (a concurrent change makes this a 409).
    #[serde(default)]
    pub version: Option<i64>,
}

fn parse_local(what: &str, v: &str) -> Result<NaiveDateTime, AppError> {
    NaiveDateTime::parse_from_str(v, LOCAL_FORMAT)
        .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M"))
        .map_err(|_| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_time",
                format!("{what} must be a local time YYYY-MM-DDTHH:MM, not {v:?}"),
            )
        })
}

fn invalid(code: &'static str, msg: impl Into<String>) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, code, msg)
}

/// Checks a body and turns it into what is stored, with its series.
async fn validate(
    s: &AppState,
    b: &ScheduleBody,
    now: i64,
) -> Result<(ScheduleSpec, Series), AppError> {
    let title = b.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(invalid("invalid_title", "title must be 1-200 characters"));
    }
    if b.description.chars().count() > 2_000 {
        return Err(invalid(
            "invalid_description",
            "description is at most 2000 characters",
        ));
    }
    let host = b.host_identity.trim();
    if host.is_empty() || host.len() > 128 {
        return Err(invalid(
            "invalid_host",
            "host_identity must be 1-128 characters",
        ));
    }
    let tz = recurrence::zone(b.time_zone.trim())
        .map_err(|e| invalid("unknown_time_zone", e.to_string()))?;
    let start = parse_local("start", b.start.trim())?;
    let duration_ms = match (&b.end, b.duration_minutes) {
        (Some(end), None) => {
            let end = parse_local("end", end.trim())?;
            // Both in the same zone: compare instants, so an end across a DST change is right.
            recurrence::to_utc(tz, end).timestamp_millis()
                - recurrence::to_utc(tz, start).timestamp_millis()
        }
        (None, Some(m)) => m.saturating_mul(60_000),
        _ => {
            return Err(invalid(
                "invalid_end",
                "give exactly one of end and duration_minutes",
            ));
        }
    };
    if duration_ms <= 0 {
        return Err(invalid(
            "end_before_start",
            "the end must be after the start",
        ));
    }
    if duration_ms > MAX_DURATION_MS {
        return Err(invalid("too_long", "a meeting lasts at most 24 hours"));
    }
    let rule = match b.rrule.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => Some(Rule::parse(r).map_err(|e| invalid("invalid_rrule", e.to_string()))?),
        None => None,
    };
    if b.exdates.len() > MAX_LIST || b.invitees.len() > MAX_LIST {
        return Err(invalid("too_many", "at most 100 exdates and 100 invitees"));
    }
    let exdates = b
        .exdates
        .iter()
        .map(|e| parse_local("exdate", e.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    for i in &b.invitees {
        let email = i.email.trim();
        let at = email.find('@');
        if i.name.trim().is_empty()
            || i.name.chars().count() > 200
            || email.len() > 254
            || !at.is_some_and(|p| p > 0 && email[p + 1..].contains('.'))
        {
            return Err(invalid(
                "invalid_invitee",
                format!("invitee {:?} needs a name and a valid email", i.name),
            ));
        }
    }
    let series = Series {
        start,
        duration: chrono::Duration::milliseconds(duration_ms),
        tz,
        rule: rule.clone(),
        exdates: exdates.clone(),
    };
    let now_t = DateTime::<Utc>::from_timestamp_millis(now).unwrap_or_default();
    let far = now_t + chrono::Duration::days(3_660);
    if series
        .occurrences(now_t, far, 1)
        .into_iter()
        .all(|o| o.start < now_t - chrono::Duration::minutes(1))
    {
        return Err(invalid(
            "in_the_past",
            "the meeting (every occurrence of it) is in the past",
        ));
    }
    let store = s.meetings.store();
    if let Some(id) = b.lead_id
        && store.lead(id).await.map_err(store_err)?.is_none()
    {
        return Err(invalid("unknown_lead", format!("no lead {id}")));
    }
    if let Some(id) = b.question_set_id
        && store.question_set(id).await.map_err(store_err)?.is_none()
    {
        return Err(invalid(
            "unknown_question_set",
            format!("no question set {id}"),
        ));
    }
    let spec = ScheduleSpec {
        title: title.to_owned(),
        description: b.description.trim().to_owned(),
        host_identity: host.to_owned(),
        time_zone: b.time_zone.trim().to_owned(),
        start_local: start.format(LOCAL_FORMAT).to_string(),
        duration_ms,
        rrule: rule.map(|r| r.to_rrule()),
        exdates: exdates
            .iter()
            .map(|e| e.format(LOCAL_FORMAT).to_string())
            .collect(),
        lead_id: b.lead_id,
        question_set_id: b.question_set_id,
        auto_join: b.auto_join,
        invitees: b
            .invitees
            .iter()
            .map(|i| Invitee {
                name: i.name.trim().to_owned(),
                email: i.email.trim().to_owned(),
            })
            .collect(),
    };
    Ok((spec, series))
}

/// The first of the host's other meetings that overlaps `series` in the conflict window.
async fn conflict(
    s: &AppState,
    host: &str,
    series: &Series,
    except: Option<i64>,
    now: i64,
) -> Result<Option<Value>, AppError> {
    let from = DateTime::<Utc>::from_timestamp_millis(now).unwrap_or_default();
    let to = DateTime::<Utc>::from_timestamp_millis(now + CONFLICT_WINDOW_MS).unwrap_or_default();
    let mine = series.occurrences(from, to, 500);
    let others = s
        .meetings
        .store()
        .schedules(Some(host), Some("active"), 0, 500)
        .await
        .map_err(store_err)?;
    for other in others.iter().filter(|o| Some(o.id) != except) {
        let Ok(theirs) = series_of(other) else {
            continue;
        };
        for o in theirs.occurrences(from, to, 500) {
            if let Some(m) = mine.iter().find(|m| m.start < o.end && o.start < m.end) {
                return Ok(Some(json!({
                    "schedule_id": other.id,
                    "title": other.spec.title,
                    "their_start": o.start.to_rfc3339(),
                    "your_start": m.start.to_rfc3339(),
                })));
            }
        }
    }
    Ok(None)
}

fn iso(ms: i64) -> String {
    crate::clock::rfc3339(ms)
}

fn occurrence_json(s: &ScheduleRecord, o: &OccurrenceRecord) -> Value {
    json!({
        "id": o.id,
        "local_start": o.local_start,
        "start": iso(o.starts_at),
        "end": iso(o.ends_at),
        "status": o.status,
        "status_at": iso(o.status_at),
        "meeting": {"id": s.id, "title": s.spec.title, "start": iso(o.starts_at), "end": iso(o.ends_at),
                    "code": s.meeting_code, "url": format!("/m/{}", s.meeting_code)},
        "session": {"id": o.id, "status": o.status, "created_at": iso(o.status_at)},
        "bot": {"id": o.id, "status": o.bot_status, "status_at": o.bot_status_at.map(iso),
                "joined_at": o.bot_joined_at.map(iso), "reason": o.bot_reason, "attempts": o.bot_attempts,
                "next_attempt_at": o.bot_next_at.map(iso), "skipped": o.skip_agent},
    })
}

async fn schedule_json(
    st: &AppState,
    s: &ScheduleRecord,
    now: i64,
    upcoming: usize,
) -> Result<Value, AppError> {
    let stored = st
        .meetings
        .store()
        .occurrences_of(s.id, now, upcoming as i64)
        .await
        .map_err(store_err)?;
    let mut next: Vec<Value> = stored.iter().map(|o| occurrence_json(s, o)).collect();
    // Beyond what the scheduler created so far, what the series will make.
    if let Ok(series) = series_of(s)
        && next.len() < upcoming
        && s.status == "active"
    {
        let from = DateTime::<Utc>::from_timestamp_millis(now).unwrap_or_default();
        for o in series.occurrences(from, from + chrono::Duration::days(3_660), upcoming) {
            let local = o.local_start.format(LOCAL_FORMAT).to_string();
            if next.len() >= upcoming {
                break;
            }
            if stored.iter().any(|x| x.local_start == local) {
                continue;
            }
            next.push(
                json!({"id": null, "local_start": local, "start": o.start.to_rfc3339(),
                             "end": o.end.to_rfc3339(), "status": "scheduled"}),
            );
        }
    }
    Ok(json!({
        "id": s.id,
        "title": s.spec.title,
        "description": s.spec.description,
        "host_identity": s.spec.host_identity,
        "time_zone": s.spec.time_zone,
        "start": s.spec.start_local,
        "duration_minutes": s.spec.duration_ms / 60_000,
        "rrule": s.spec.rrule,
        "exdates": s.spec.exdates,
        "lead_id": s.spec.lead_id,
        "question_set_id": s.spec.question_set_id,
        "auto_join": s.spec.auto_join,
        "invitees": s.spec.invitees,
        "status": s.status,
        "version": s.version,
        "meeting": {"code": s.meeting_code, "url": format!("/m/{}", s.meeting_code)},
        "occurrences": next,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }))
}

#[utoipa::path(post, path = "/api/schedules", tag = "schedules", request_body = ScheduleBody,
    responses((status = 201, description = "scheduled: the series with its meeting code and link and the next occurrences"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
/// `POST /api/schedules`: schedules a meeting (once, or recurring) in a time zone.
pub async fn create(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(b): ApiJson<ScheduleBody>,
) -> Result<impl IntoResponse, AppError> {
    service_only(&caller)?;
    let now = crate::clock::now_ms();
    let (spec, series) = validate(&s, &b, now).await?;
    if !b.force
        && let Some(c) = conflict(&s, &spec.host_identity, &series, None, now).await?
    {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "schedule_conflict",
            format!("overlaps the host's meeting {c}; send \"force\": true to schedule it anyway"),
        ));
    }
    let created_by = match &caller {
        Caller::Service { key } => key.clone(),
        _ => "api".to_owned(),
    };
    let store = s.meetings.store();
    // The code and link are fixed now, so invitations can carry them.
    let r = insert_series(store, &spec, &created_by, now).await?;
    tracing::info!(schedule = r.id, code = %r.meeting_code, host = %spec.host_identity, "meeting scheduled");
    if let Some(m) = &s.mailer {
        m.invite(&r, &base_url(&s), now).await.map_err(store_err)?;
    }
    Ok((
        StatusCode::CREATED,
        Json(schedule_json(&s, &r, now, 10).await?),
    ))
}

/// Stores a series under a fresh meeting code, with the meeting row that makes the code and
/// link work from now on (codes that collide are drawn again).
async fn insert_series(
    store: &crate::store::Store,
    spec: &ScheduleSpec,
    created_by: &str,
    now: i64,
) -> Result<ScheduleRecord, AppError> {
    for _ in 0..8 {
        let code = MeetingCode::random();
        let meeting = NewMeeting {
            code: code.clone(),
            name: spec.title.clone(),
            password_hash: None,
            host_identity: spec.host_identity.clone(),
            host_name: None,
            created_by: created_by.to_owned(),
            created_at: now,
        };
        match store.insert_meeting(&meeting).await {
            Ok(_) => {}
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(store_err(e)),
        }
        return store
            .insert_schedule(spec, code.as_str(), now)
            .await
            .map_err(store_err);
    }
    Err(AppError::internal("no free meeting code"))
}

/// `?host=` filter.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this host's.
    pub host: Option<String>,
}

#[utoipa::path(get, path = "/api/schedules", tag = "schedules", params(("host" = Option<String>, Query)),
    responses((status = 200, description = "{\"schedules\": [...]}: active series, each with its next 3 occurrences"), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
/// `GET /api/schedules`.
pub async fn list(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let now = crate::clock::now_ms();
    let rows = s
        .meetings
        .store()
        .schedules(q.host.as_deref(), Some("active"), 0, 500)
        .await
        .map_err(store_err)?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(schedule_json(&s, r, now, 3).await?);
    }
    Ok(Json(json!({ "schedules": out })))
}

async fn load(s: &AppState, id: i64) -> Result<ScheduleRecord, AppError> {
    s.meetings
        .store()
        .schedule(id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| AppError::not_found(format!("no schedule {id}")))
}

#[utoipa::path(get, path = "/api/schedules/{id}", tag = "schedules", params(("id" = i64, Path)),
    responses((status = 200, description = "the series and its next 10 occurrences"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `GET /api/schedules/{id}`.
pub async fn get(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let r = load(&s, id).await?;
    Ok(Json(
        schedule_json(&s, &r, crate::clock::now_ms(), 10).await?,
    ))
}

#[utoipa::path(put, path = "/api/schedules/{id}", tag = "schedules", params(("id" = i64, Path)), request_body = ScheduleBody,
    responses((status = 200, description = "rescheduled"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
/// `PUT /api/schedules/{id}`: new times, rule or settings; occurrences not yet ready are
/// made afresh at the next tick. `version` must be the one read.
pub async fn update(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    ApiJson(b): ApiJson<ScheduleBody>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let now = crate::clock::now_ms();
    let current = load(&s, id).await?;
    if current.status != "active" {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "cancelled",
            "the meeting is cancelled",
        ));
    }
    let (spec, series) = validate(&s, &b, now).await?;
    if spec.host_identity != current.spec.host_identity {
        return Err(invalid(
            "host_changed",
            "a scheduled meeting keeps its host",
        ));
    }
    if !b.force
        && let Some(c) = conflict(&s, &spec.host_identity, &series, Some(id), now).await?
    {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "schedule_conflict",
            format!("overlaps the host's meeting {c}; send \"force\": true to schedule it anyway"),
        ));
    }
    let version = b.version.unwrap_or(current.version);
    let store = s.meetings.store();
    let Some(r) = store
        .update_schedule(id, version, &spec, now)
        .await
        .map_err(store_err)?
    else {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "version_conflict",
            "the meeting changed since it was read; read it again",
        ));
    };
    store
        .drop_scheduled_occurrences(id)
        .await
        .map_err(store_err)?;
    s.scheduler.tick(now).await.map_err(store_err)?;
    Ok(Json(schedule_json(&s, &r, now, 10).await?))
}

#[utoipa::path(post, path = "/api/schedules/{id}/cancel", tag = "schedules", params(("id" = i64, Path)),
    responses((status = 200, description = "cancelled, with every occurrence not yet run"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `POST /api/schedules/{id}/cancel`: the whole series; no agent goes to any of it.
pub async fn cancel(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let now = crate::clock::now_ms();
    let _ = load(&s, id).await?;
    s.meetings
        .store()
        .cancel_schedule(id, now)
        .await
        .map_err(store_err)?;
    s.scheduler.cancel_open(id, now).await.map_err(store_err)?;
    let r = load(&s, id).await?;
    Ok(Json(schedule_json(&s, &r, now, 10).await?))
}

async fn occurrence_and_series(
    s: &AppState,
    id: i64,
) -> Result<(OccurrenceRecord, ScheduleRecord), AppError> {
    let o = s
        .meetings
        .store()
        .occurrence(id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| AppError::not_found(format!("no occurrence {id}")))?;
    let r = load(s, o.schedule_id).await?;
    Ok((o, r))
}

#[utoipa::path(get, path = "/api/occurrences/{id}", tag = "schedules", params(("id" = i64, Path)),
    responses((status = 200, description = "meeting, session, bot, status history, auto-join log"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `GET /api/occurrences/{id}`.
pub async fn occurrence(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let (o, r) = occurrence_and_series(&s, id).await?;
    let store = s.meetings.store();
    let history = store.occurrence_events(id).await.map_err(store_err)?;
    let log = store.auto_join_logs(id).await.map_err(store_err)?;
    let mut v = occurrence_json(&r, &o);
    v["history"] = json!(history.iter().map(|h| json!({"at": iso(h.at), "from": h.from_status, "to": h.to_status, "cause": h.cause, "node": h.node})).collect::<Vec<_>>());
    v["auto_join_log"] = json!(log.iter().map(|l| json!({"at": iso(l.at), "attempt": l.attempt, "outcome": l.outcome, "error": l.error, "node": l.node})).collect::<Vec<_>>());
    Ok(Json(v))
}

/// An override on one occurrence.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Override {
    /// Cancel this occurrence only.
    Cancel,
    /// No agent for this occurrence.
    SkipAgent,
    /// Send the agent now (clears a skip; the room must be ready).
    DispatchAgent,
    /// Take the agent out (and do not send it again to this occurrence).
    StopAgent,
}

/// `{"action": ...}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// What to do.
    pub action: Override,
}

#[utoipa::path(post, path = "/api/occurrences/{id}/override", tag = "schedules", params(("id" = i64, Path)), request_body = OverrideBody,
    responses((status = 200, description = "the occurrence after the override"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
/// `POST /api/occurrences/{id}/override`: cancel it, skip its agent, dispatch now, stop the agent.
pub async fn override_occurrence(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    ApiJson(b): ApiJson<OverrideBody>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let now = crate::clock::now_ms();
    let (o, r) = occurrence_and_series(&s, id).await?;
    let result = match b.action {
        Override::Cancel => s.scheduler.cancel_occurrence(&r, &o, now).await,
        Override::SkipAgent => s.scheduler.skip_agent(&r, &o, true, now).await,
        Override::StopAgent => s.scheduler.stop_agent(&r, &o, now).await,
        Override::DispatchAgent => s.scheduler.dispatch_now(&r, &o, now).await,
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(AppError::new(StatusCode::CONFLICT, "not_possible", why)),
        Err(e) => return Err(store_err(e)),
    }
    let (o, r) = occurrence_and_series(&s, id).await?;
    Ok(Json(occurrence_json(&r, &o)))
}

#[utoipa::path(get, path = "/api/hosts/{identity}/preferences", tag = "schedules", params(("identity" = String, Path)),
    responses((status = 200, body = HostPreferences)), security(("api_key" = [])))]
/// `GET /api/hosts/{identity}/preferences`: auto-join settings (defaults until set).
pub async fn get_preferences(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
) -> Result<Json<HostPreferences>, AppError> {
    service_only(&caller)?;
    Ok(Json(
        s.meetings
            .store()
            .host_preferences(&identity)
            .await
            .map_err(store_err)?,
    ))
}

#[utoipa::path(put, path = "/api/hosts/{identity}/preferences", tag = "schedules", params(("identity" = String, Path)),
    request_body = HostPreferences, responses((status = 200, body = HostPreferences), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
/// `PUT /api/hosts/{identity}/preferences`; honoured from the next tick.
pub async fn put_preferences(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
    ApiJson(p): ApiJson<HostPreferences>,
) -> Result<Json<HostPreferences>, AppError> {
    service_only(&caller)?;
    if identity.is_empty() || identity.len() > 128 {
        return Err(invalid(
            "invalid_host",
            "host identity must be 1-128 characters",
        ));
    }
    if !(0..=60).contains(&p.join_buffer_minutes) {
        return Err(invalid(
            "invalid_buffer",
            "join_buffer_minutes must be 0-60",
        ));
    }
    if p.excluded_keywords.len() > MAX_LIST
        || p.excluded_keywords.iter().any(|k| k.chars().count() > 100)
    {
        return Err(invalid(
            "invalid_keywords",
            "at most 100 keywords of at most 100 characters",
        ));
    }
    if let Some(id) = p.question_set_id
        && s.meetings
            .store()
            .question_set(id)
            .await
            .map_err(store_err)?
            .is_none()
    {
        return Err(invalid(
            "unknown_question_set",
            format!("no question set {id}"),
        ));
    }
    s.meetings
        .store()
        .set_host_preferences(&identity, &p, crate::clock::now_ms())
        .await
        .map_err(store_err)?;
    Ok(Json(p))
}

#[utoipa::path(get, path = "/api/schedules/{id}/emails", tag = "schedules", params(("id" = i64, Path)),
    responses((status = 200, description = "{\"emails\": [...]}: each invitation, reminder and summary with its delivery status"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `GET /api/schedules/{id}/emails`.
pub async fn emails(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let _ = load(&s, id).await?;
    let list = s.meetings.store().emails_of(id).await.map_err(store_err)?;
    Ok(Json(
        json!({ "enabled": s.mailer.is_some(), "emails": list }),
    ))
}

/// Largest calendar file taken.
pub const MAX_CALENDAR_BYTES: usize = 1024 * 1024;

fn feed_token(s: &AppState, identity: &str) -> String {
    s.tokens.derived_secret(&format!("ical-feed:{identity}"))
}

fn base_url(s: &AppState) -> String {
    let scheme = if s.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", s.config.http_addr)
}

#[utoipa::path(post, path = "/api/hosts/{identity}/calendar", tag = "schedules", params(("identity" = String, Path)),
    request_body(content = String, content_type = "text/calendar"),
    responses((status = 200, description = "{created, updated, cancelled, refused: [{uid, reason}]}"),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("api_key" = [])))]
/// `POST /api/hosts/{identity}/calendar`: imports an iCalendar file (VEVENTs become scheduled
/// meetings of the host). Idempotent by UID + RECURRENCE-ID.
pub async fn import_calendar(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| invalid("invalid_calendar", "the file is not UTF-8"))?;
    let (mut events, mut refused) =
        crate::schedule::ical::parse(text).map_err(|e| invalid("invalid_calendar", e))?;
    // The series first, then the single-occurrence changes that refer to them.
    events.sort_by_key(|e| !e.recurrence_id.is_empty());
    let now = crate::clock::now_ms();
    let store = s.meetings.store();
    let (mut created, mut updated, mut cancelled) = (0, 0, 0);
    for e in events {
        let existing = store
            .schedule_by_ical(&identity, &e.uid, &e.recurrence_id)
            .await
            .map_err(store_err)?;
        if !e.recurrence_id.is_empty() {
            // One occurrence changed: it leaves its series (an EXDATE there) and, unless
            // cancelled, becomes a meeting of its own.
            if let Some(master) = store
                .schedule_by_ical(&identity, &e.uid, "")
                .await
                .map_err(store_err)?
                && !master.spec.exdates.contains(&e.recurrence_id)
            {
                let mut spec = master.spec.clone();
                spec.exdates.push(e.recurrence_id.clone());
                store
                    .update_schedule(master.id, master.version, &spec, now)
                    .await
                    .map_err(store_err)?;
                store
                    .drop_scheduled_occurrences(master.id)
                    .await
                    .map_err(store_err)?;
                if e.cancelled {
                    cancelled += 1;
                }
            }
            if e.cancelled {
                if let Some(x) = existing
                    && x.status == "active"
                {
                    store.cancel_schedule(x.id, now).await.map_err(store_err)?;
                    s.scheduler
                        .cancel_open(x.id, now)
                        .await
                        .map_err(store_err)?;
                }
                continue;
            }
        }
        if e.cancelled && e.recurrence_id.is_empty() {
            if let Some(x) = existing
                && x.status == "active"
            {
                store.cancel_schedule(x.id, now).await.map_err(store_err)?;
                s.scheduler
                    .cancel_open(x.id, now)
                    .await
                    .map_err(store_err)?;
                cancelled += 1;
            }
            continue;
        }
        let b = ScheduleBody {
            title: e.title.chars().take(200).collect(),
            description: e.description.chars().take(2_000).collect(),
            host_identity: identity.clone(),
            time_zone: e.time_zone.clone(),
            start: e.start.format(LOCAL_FORMAT).to_string(),
            end: None,
            duration_minutes: Some((e.duration_ms / 60_000).max(1)),
            rrule: if e.recurrence_id.is_empty() {
                e.rrule.clone()
            } else {
                None
            },
            exdates: {
                let mut x: Vec<String> = e
                    .exdates
                    .iter()
                    .map(|t| t.format(LOCAL_FORMAT).to_string())
                    .collect();
                // Occurrences an earlier import took out stay out.
                if let Some(old) = &existing {
                    for d in &old.spec.exdates {
                        if !x.contains(d) {
                            x.push(d.clone());
                        }
                    }
                }
                x
            },
            lead_id: existing.as_ref().and_then(|x| x.spec.lead_id),
            question_set_id: existing.as_ref().and_then(|x| x.spec.question_set_id),
            auto_join: existing.as_ref().is_some_and(|x| x.spec.auto_join),
            invitees: existing
                .as_ref()
                .map(|x| x.spec.invitees.clone())
                .unwrap_or_default(),
            force: true,
            version: None,
        };
        let (spec, _) = match validate(&s, &b, now).await {
            Ok(v) => v,
            Err(err) => {
                refused.push((e.uid.clone(), err.message.clone()));
                continue;
            }
        };
        match existing {
            Some(x) if x.status == "active" => {
                if x.spec != spec {
                    store
                        .update_schedule(x.id, x.version, &spec, now)
                        .await
                        .map_err(store_err)?;
                    store
                        .drop_scheduled_occurrences(x.id)
                        .await
                        .map_err(store_err)?;
                    updated += 1;
                }
            }
            Some(_) => refused.push((e.uid.clone(), "cancelled here; schedule it anew".into())),
            None => {
                let r = insert_series(store, &spec, "calendar", now).await?;
                match store.set_ical_key(r.id, &e.uid, &e.recurrence_id).await {
                    Ok(()) => created += 1,
                    // A concurrent import of the same file made it first.
                    Err(StoreError::Conflict) => {
                        store.cancel_schedule(r.id, now).await.map_err(store_err)?;
                    }
                    Err(e) => return Err(store_err(e)),
                }
            }
        }
    }
    s.scheduler.tick(now).await.map_err(store_err)?;
    tracing::info!(host = %identity, created, updated, cancelled, refused = refused.len(), "calendar imported");
    Ok(Json(json!({
        "created": created, "updated": updated, "cancelled": cancelled,
        "refused": refused.iter().map(|(u, r)| json!({"uid": u, "reason": r})).collect::<Vec<_>>(),
    })))
}

fn calendar_response(text: String, name: &str) -> impl IntoResponse + use<> {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/calendar; charset=utf-8".to_owned(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.ics\""),
            ),
        ],
        text,
    )
}

#[utoipa::path(get, path = "/api/schedules/{id}/ics", tag = "schedules", params(("id" = i64, Path)),
    responses((status = 200, description = "text/calendar"), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
/// `GET /api/schedules/{id}/ics`: the meeting as an iCalendar file (an invitation's attachment).
pub async fn export_ics(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse, AppError> {
    service_only(&caller)?;
    let r = load(&s, id).await?;
    let text = crate::schedule::ical::export(
        std::slice::from_ref(&r),
        &base_url(&s),
        crate::clock::now_ms(),
    );
    Ok(calendar_response(text, &r.meeting_code))
}

#[utoipa::path(get, path = "/api/hosts/{identity}/calendar-feed", tag = "schedules", params(("identity" = String, Path)),
    responses((status = 200, description = "{\"url\": ...}: the host's subscribable feed, with its secret token")), security(("api_key" = [])))]
/// `GET /api/hosts/{identity}/calendar-feed`.
pub async fn feed_url(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let token = feed_token(&s, &identity);
    Ok(Json(
        json!({"url": format!("{}/calendar/{identity}.ics?token={token}", base_url(&s))}),
    ))
}

/// `?token=`.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    /// The feed's secret.
    pub token: Option<String>,
}

/// `GET /calendar/{identity}.ics?token=...`: a host's meetings for calendar apps to subscribe
/// to; the token (from `calendar-feed`) is the only credential, so the path is unguessable.
pub async fn feed(
    State(s): State<Arc<AppState>>,
    Path(file): Path<String>,
    Query(q): Query<FeedQuery>,
) -> Result<impl IntoResponse, AppError> {
    let identity = file.strip_suffix(".ics").unwrap_or(&file).to_owned();
    let want = feed_token(&s, &identity);
    let given = q.token.unwrap_or_default();
    // Constant time: the token is a password.
    let same = given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such calendar",
        ));
    }
    let rows = s
        .meetings
        .store()
        .schedules(Some(&identity), None, 0, 1_000)
        .await
        .map_err(store_err)?;
    let text = crate::schedule::ical::export(&rows, &base_url(&s), crate::clock::now_ms());
    Ok(calendar_response(text, &identity))
}
