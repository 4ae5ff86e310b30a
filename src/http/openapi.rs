//! The OpenAPI document, generated from the handlers' annotations.

use super::{agents, api, error, meetings, notify, schedules, transcripts};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("api_key:api_secret"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Conclave API", description = "Meetings, rooms and tokens of a Conclave server. Errors always use ErrorBody."),
    paths(
        meetings::create, meetings::list, meetings::get, meetings::join, meetings::start, meetings::end,
        meetings::leave, meetings::participants, api::create_room, api::guest_token, api::stats,
        api::nodes, api::drain,
        transcripts::room, transcripts::meeting, transcripts::search,
        schedules::create, schedules::list, schedules::get, schedules::update, schedules::cancel,
        schedules::occurrence, schedules::override_occurrence, schedules::get_preferences,
        schedules::put_preferences, schedules::import_calendar, schedules::export_ics,
        schedules::feed_url, schedules::emails, notify::list, notify::mark_read, notify::get_preferences,
        notify::put_preferences, notify::add_webhook, notify::list_webhooks, notify::remove_webhook,
        notify::deliveries, notify::events,
        agents::dispatch_room, agents::get_room, agents::stop_room, agents::dispatch_meeting,
        agents::get_meeting, agents::stop_meeting, agents::create_set, agents::list_sets,
        agents::get_set, agents::update_set, agents::delete_set, agents::create_lead,
        agents::list_leads, agents::get_lead, agents::update_lead, agents::delete_lead,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
