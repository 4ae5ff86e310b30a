//! Web pages and their assets, embedded in the binary.

use super::error::AppError;
use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use conclave_signaling::RoomName;

const ROOM_HTML: &str = include_str!("../../web/room.html");
const ROOM_JS: &str = include_str!("../../web/room.js");
const ROOM_CSS: &str = include_str!("../../web/room.css");

/// `GET /`: pick a room.
pub async fn home() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>",
        "<title>Conclave</title><link rel=stylesheet href=/assets/room.css>",
        "<main class=home><h1>Conclave</h1><form onsubmit=\"location.href='/room/'+encodeURIComponent(this.room.value.trim());return false\">",
        "<label for=room>Room name</label> <input id=room name=room required pattern='[A-Za-z0-9_.\\-]{1,64}'> ",
        "<button>Open room</button></form></main></html>"
    ))
}

/// `GET /room/{room}`.
pub async fn room(Path(room): Path<String>) -> Result<Html<&'static str>, AppError> {
    RoomName::validate(&room).ok_or_else(|| AppError::not_found("invalid room name"))?;
    Ok(Html(ROOM_HTML))
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, mime) = match file.as_str() {
        "room.js" => (ROOM_JS, "text/javascript; charset=utf-8"),
        "room.css" => (ROOM_CSS, "text/css; charset=utf-8"),
        _ => return AppError::not_found("no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
