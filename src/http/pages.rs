//! Web pages and their assets, embedded in the binary (no files to deploy beside it).

use super::error::AppError;
use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use conclave_signaling::RoomName;

macro_rules! web {
    ($file:literal) => {
        include_str!(concat!("../../web/", $file))
    };
}

/// `GET /`: create a meeting or join one by code.
pub async fn home() -> Html<&'static str> {
    Html(web!("home.html"))
}

/// `GET /join/{code}`: name (and password) form. The page itself reports unknown codes.
pub async fn join(Path(_code): Path<String>) -> Html<&'static str> {
    Html(web!("join.html"))
}

/// `GET /m/{code}`: a meeting's room.
pub async fn meeting(Path(_code): Path<String>) -> Html<&'static str> {
    Html(web!("meeting.html"))
}

/// `GET /room/{room}`: an ad-hoc room. A meeting's room is entered through its join page
/// (password, waiting room), so its link redirects there.
pub async fn room(Path(room): Path<String>) -> Result<Response, AppError> {
    RoomName::validate(&room).ok_or_else(|| AppError::not_found("invalid room name"))?;
    if let Some(code) = crate::meetings::model::MeetingCode::reserved_by(&room) {
        return Ok(axum::response::Redirect::to(&format!("/join/{code}")).into_response());
    }
    Ok(Html(web!("room.html")).into_response())
}

/// `GET /questions`: the question-set editor (asks for the API key).
pub async fn questions() -> Html<&'static str> {
    Html(web!("questions.html"))
}

/// `GET /dashboard`: a host's scheduled meetings, live.
pub async fn dashboard() -> Html<&'static str> {
    Html(web!("dashboard.html"))
}

/// `GET /leads`: leads, and a form for a new one.
pub async fn leads() -> Html<&'static str> {
    Html(web!("leads.html"))
}

/// `GET /leads/{id}`: a lead's meetings, scores over time and conversations.
pub async fn lead(Path(_id): Path<String>) -> Html<&'static str> {
    Html(web!("lead.html"))
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    const JS: &str = "text/javascript; charset=utf-8";
    let (body, mime) = match file.as_str() {
        "room.css" => (web!("room.css"), "text/css; charset=utf-8"),
        "room.js" => (web!("room.js"), JS),
        "dashboard.js" => (web!("dashboard.js"), JS),
        "room-signaling.js" => (web!("room-signaling.js"), JS),
        "room-negotiation.js" => (web!("room-negotiation.js"), JS),
        "room-tiles.js" => (web!("room-tiles.js"), JS),
        "room-captions.js" => (web!("room-captions.js"), JS),
        "room-controls.js" => (web!("room-controls.js"), JS),
        "room-page.js" => (web!("room-page.js"), JS),
        "api.js" => (web!("api.js"), JS),
        "home.js" => (web!("home.js"), JS),
        "join.js" => (web!("join.js"), JS),
        "meeting.js" => (web!("meeting.js"), JS),
        "agent-panel.js" => (web!("agent-panel.js"), JS),
        "admin.js" => (web!("admin.js"), JS),
        "admin.css" => (web!("admin.css"), "text/css; charset=utf-8"),
        "questions.js" => (web!("questions.js"), JS),
        "leads.js" => (web!("leads.js"), JS),
        "lead.js" => (web!("lead.js"), JS),
        _ => return AppError::not_found("no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
