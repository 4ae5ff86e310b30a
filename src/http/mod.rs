//! The HTTP edge: REST API, pages, metrics and the signaling WebSocket.

pub mod abuse;
pub mod agents;
pub mod api;
pub mod error;
pub mod meetings;
pub mod notify;
pub mod openapi;
pub mod pages;
pub mod schedules;
pub mod serve;
pub mod transcripts;
pub mod ws;

use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::sync::Arc;

/// The client's address, as the listener saw it (absent for in-process requests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(serve::client_address(parts).map(|a| a.ip())))
    }
}

/// Largest REST request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole HTTP application; tests drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/room/{room}", get(pages::room))
        .route("/join/{code}", get(pages::join))
        .route("/m/{code}", get(pages::meeting))
        .route("/assets/{file}", get(pages::asset))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/stats", get(api::stats))
        .route("/api/nodes", get(api::nodes))
        .route("/api/nodes/self/drain", post(api::drain))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/rooms", post(api::create_room))
        .route("/api/rooms/{room}/guest-token", post(api::guest_token))
        .route("/api/meetings", post(meetings::create).get(meetings::list))
        .route("/api/meetings/{code}", get(meetings::get))
        .route("/api/meetings/{code}/join", post(meetings::join))
        .route("/api/meetings/{code}/start", post(meetings::start))
        .route("/api/meetings/{code}/end", post(meetings::end))
        .route("/api/meetings/{code}/leave", post(meetings::leave))
        .route(
            "/api/meetings/{code}/participants",
            get(meetings::participants),
        )
        .route("/api/meetings/{code}/transcript", get(transcripts::meeting))
        .route("/api/rooms/{room}/transcript", get(transcripts::room))
        .route("/api/transcripts/search", get(transcripts::search))
        .route(
            "/api/rooms/{room}/agent",
            post(agents::dispatch_room)
                .get(agents::get_room)
                .delete(agents::stop_room),
        )
        .route(
            "/api/meetings/{code}/agent",
            post(agents::dispatch_meeting)
                .get(agents::get_meeting)
                .delete(agents::stop_meeting),
        )
        .route(
            "/api/question-sets",
            post(agents::create_set).get(agents::list_sets),
        )
        .route(
            "/api/question-sets/{id}",
            get(agents::get_set)
                .put(agents::update_set)
                .delete(agents::delete_set),
        )
        .route(
            "/api/leads",
            post(agents::create_lead).get(agents::list_leads),
        )
        .route(
            "/api/leads/{id}",
            get(agents::get_lead)
                .put(agents::update_lead)
                .delete(agents::delete_lead),
        )
        .route(
            "/api/schedules",
            post(schedules::create).get(schedules::list),
        )
        .route(
            "/api/schedules/{id}",
            get(schedules::get).put(schedules::update),
        )
        .route("/api/schedules/{id}/cancel", post(schedules::cancel))
        .route("/api/schedules/{id}/ics", get(schedules::export_ics))
        .route("/api/schedules/{id}/emails", get(schedules::emails))
        .route(
            "/api/hosts/{identity}/calendar",
            post(schedules::import_calendar)
                .layer(DefaultBodyLimit::max(schedules::MAX_CALENDAR_BYTES)),
        )
        .route(
            "/api/hosts/{identity}/calendar-feed",
            get(schedules::feed_url),
        )
        .route("/calendar/{file}", get(schedules::feed))
        .route("/api/occurrences/{id}", get(schedules::occurrence))
        .route(
            "/api/occurrences/{id}/override",
            post(schedules::override_occurrence),
        )
        .route(
            "/api/hosts/{identity}/preferences",
            get(schedules::get_preferences).put(schedules::put_preferences),
        )
        .route("/api/users/{identity}/notifications", get(notify::list))
        .route(
            "/api/users/{identity}/notifications/{id}/read",
            post(notify::mark_read),
        )
        .route(
            "/api/users/{identity}/notification-preferences",
            get(notify::get_preferences).put(notify::put_preferences),
        )
        .route(
            "/api/hosts/{identity}/webhooks",
            post(notify::add_webhook).get(notify::list_webhooks),
        )
        .route(
            "/api/webhooks/{id}",
            axum::routing::delete(notify::remove_webhook),
        )
        .route("/api/webhooks/{id}/deliveries", get(notify::deliveries))
        .route("/api/hosts/{identity}/events", get(notify::events))
        .route("/dashboard", get(pages::dashboard))
        .route("/questions", get(pages::questions))
        .route("/leads", get(pages::leads))
        .route("/leads/{id}", get(pages::lead))
        .route("/ws", get(ws::upgrade))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A body that trickles in (or never comes after its headers) is cut off.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.config.body_timeout,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
