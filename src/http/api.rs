//! REST endpoints of the foundation: health, metrics, room creation and guest tokens.

use super::error::{ApiJson, AppError, ErrorBody};
use crate::auth::{Grants, TokenError, TokenRequest};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use conclave_signaling::RoomName;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use utoipa::ToSchema;

/// Guest tokens live long enough for a long meeting.
const GUEST_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}

/// When a metrics token is configured, the request must carry it.
fn metrics_allowed(s: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(want) = &s.config.metrics_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare without an early exit, so the time taken says nothing about the token.
    let same = given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(AppError::unauthorized(
            "metrics need Authorization: Bearer <metrics token>",
        ))
    }
}

/// `GET /metrics`, Prometheus text format.
pub async fn metrics(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    metrics_allowed(&s, &headers)?;
    let mut text = s.metrics.render(
        s.rooms.packet_counts(),
        s.transcription
            .as_ref()
            .map(|t| (t.stats().as_ref(), t.consumer_stats().as_ref())),
    );
    crate::metrics::render_agents(&mut text, s.agents.running(), s.agents.stats());
    crate::metrics::render_schedule(&mut text, s.scheduler.stats(), s.notifier.stats());
    if let Some(m) = &s.mailer {
        crate::metrics::render_mail(&mut text, m.stats());
    }
    if let Some(turn) = &s.turn {
        crate::metrics::render_turn(&mut text, &turn.server.stats());
    }
    if let Some(p) = &s.plane {
        crate::metrics::render_plane(&mut text, p.stats());
    }
    if let Some(c) = &s.cluster {
        c.render_metrics(&mut text);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// Load of this node.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Rooms open.
    pub rooms: usize,
    /// Participants connected.
    pub participants: usize,
    /// This node's id (its cluster id with `--redis-url`).
    pub node_id: String,
    /// Whether it takes no new rooms.
    pub draining: bool,
}

/// `GET /api/stats`: rooms and participants on this node.
#[utoipa::path(get, path = "/api/stats", tag = "rooms", responses((status = 200, body = Stats)))]
pub async fn stats(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Stats>, AppError> {
    metrics_allowed(&s, &headers)?;
    let crate::routing::NodeStats {
        rooms,
        participants,
    } = s.router.stats().await;
    let node_id = match &s.cluster {
        Some(c) => c.node_id().to_owned(),
        None => s
            .router
            .nodes()
            .await
            .map(|v| v.node_id)
            .unwrap_or_default(),
    };
    Ok(Json(Stats {
        rooms,
        participants,
        node_id,
        draining: s.router.draining(),
    }))
}

/// `GET /api/nodes`: the cluster as this node sees it (just this node without one).
#[utoipa::path(get, path = "/api/nodes", tag = "rooms",
    responses((status = 200, body = crate::routing::ClusterView), (status = 503, body = ErrorBody)))]
pub async fn nodes(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<crate::routing::ClusterView>, AppError> {
    metrics_allowed(&s, &headers)?;
    s.router.nodes().await.map(Json).map_err(|e| {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            format!("the cluster cannot be read: {e}"),
        )
    })
}

/// Body of `POST /api/nodes/self/drain`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Drain {
    /// `true` to stop taking new rooms, `false` to take them again.
    pub draining: bool,
}

#[utoipa::path(post, path = "/api/nodes/self/drain", tag = "rooms", request_body = Drain,
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
/// `POST /api/nodes/self/drain`: this node stops (or resumes) taking new rooms; rooms here
/// run to their end. Needs the API key.
pub async fn drain(
    State(s): State<Arc<AppState>>,
    caller: crate::meetings::Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Drain>,
) -> Result<Json<Stats>, AppError> {
    if !matches!(caller, crate::meetings::Caller::Service { .. }) {
        return Err(AppError::unauthorized(
            "draining a node needs Authorization: Basic <api_key:api_secret>",
        ));
    }
    s.router.set_draining(body.draining);
    stats(State(s), headers).await
}

/// Unknown paths get the API's error body.
pub async fn not_found() -> AppError {
    AppError::not_found("no such endpoint")
}

/// Body of `POST /api/rooms`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateRoom {
    /// Room name.
    pub name: String,
}

#[utoipa::path(post, path = "/api/rooms", tag = "rooms", request_body = CreateRoom,
    responses((status = 201, description = "created"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("token" = [])))]
/// `POST /api/rooms`: creates a room that stays when empty. Needs a bearer token with the
/// `roomAdmin` grant for that room.
pub async fn create_room(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateRoom>,
) -> Result<impl IntoResponse, AppError> {
    let name = RoomName::validate(&body.name).ok_or_else(|| {
        AppError::bad_request("room name must be 1-64 characters of [A-Za-z0-9_.-]")
    })?;
    if crate::meetings::model::MeetingCode::reserved_by(name.as_str()).is_some() {
        // Meeting rooms come and go with their meetings; a host token's admin grant for its
        // meeting's room makes no persistent room.
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "meeting_room",
            format!("room {name} is a meeting's room; it cannot be created on its own"),
        ));
    }
    let token = bearer(&headers)?;
    let claims = s
        .tokens
        .verify(token, Some(name.as_str()), SystemTime::now())
        .map_err(token_error)?;
    if !claims.grants.room_admin {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token lacks the roomAdmin grant",
        ));
    }
    s.router.create_room(&name).await.map_err(|e| {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })?;
    Ok((StatusCode::CREATED, Json(json!({"name": name}))))
}

/// Body of `POST /api/rooms/{room}/guest-token`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GuestTokenRequest {
    /// Display name.
    pub name: String,
}

/// Reply of the guest-token endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct GuestToken {
    /// Access token.
    pub token: String,
    /// Identity assigned.
    pub identity: String,
    /// Room.
    #[schema(value_type = String)]
    pub room: RoomName,
}

#[utoipa::path(post, path = "/api/rooms/{room}/guest-token", tag = "rooms", request_body = GuestTokenRequest, params(("room" = String, Path)),
    responses((status = 200, body = GuestToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
/// `POST /api/rooms/{room}/guest-token`: a token for anyone who has the room link, when
/// guest access is on.
pub async fn guest_token(
    State(s): State<Arc<AppState>>,
    Path(room): Path<String>,
    super::ClientIp(ip): super::ClientIp,
    ApiJson(body): ApiJson<GuestTokenRequest>,
) -> Result<Json<GuestToken>, AppError> {
    s.abuse.request(ip)?;
    if !s.config.guest_access {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "guest_access_disabled",
            "guest access is disabled on this server",
        ));
    }
    let room = RoomName::validate(&room).ok_or_else(|| {
        AppError::bad_request("room name must be 1-64 characters of [A-Za-z0-9_.-]")
    })?;
    if let Some(code) = crate::meetings::model::MeetingCode::reserved_by(room.as_str()) {
        // A meeting's room is entered only through the meeting: password, waiting room,
        // participant record.
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "meeting_room",
            format!(
                "room {room} belongs to a meeting: join it with POST /api/meetings/{code}/join"
            ),
        ));
    }
    let name = crate::admission::display_name(&body.name).map_err(AppError::bad_request)?;
    let name = name.as_str();
    if !s.config.auto_create_rooms && !s.router.room_exists(&room).await {
        return Err(AppError::not_found(format!("room {room} does not exist")));
    }
    let identity = format!("guest-{}", crate::ids::random_id(10));
    let token = s.tokens.issue(
        &TokenRequest {
            room: room.to_string(),
            identity: identity.clone(),
            name: Some(name.to_owned()),
            grants: Grants::default(),
            ttl: GUEST_TOKEN_TTL,
            ..Default::default()
        },
        SystemTime::now(),
    );
    Ok(Json(GuestToken {
        token,
        identity,
        room,
    }))
}

fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| AppError::unauthorized("missing Authorization: Bearer <token>"))
}

fn token_error(e: TokenError) -> AppError {
    match e {
        TokenError::Expired => {
            AppError::new(StatusCode::UNAUTHORIZED, "token_expired", e.to_string())
        }
        other => AppError::new(StatusCode::UNAUTHORIZED, "invalid_token", other.to_string()),
    }
}
