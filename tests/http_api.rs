//! The REST edge: guest tokens, room creation, stats, metrics, and its error format.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{start_server, token, token_with};
use conclave::auth::Grants;
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::{Duration, SystemTime};
use tower::ServiceExt;

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn post(path: &str, body: impl Into<Body>, bearer: Option<&str>) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(body.into()).unwrap()
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn guest_tokens_are_issued_for_valid_requests_only() {
    let server = start_server(|_| {}).await;
    let app = conclave::http::app(server.state.clone());

    let (s, body) = call(
        &app,
        post("/api/rooms/demo/guest-token", r#"{"name":"Ada"}"#, None),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let claims = server
        .state
        .tokens
        .verify(
            v["token"].as_str().unwrap(),
            Some("demo"),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(claims.name.as_deref(), Some("Ada"));
    assert!(
        claims.sub.starts_with("guest-") && claims.grants.can_publish && !claims.grants.room_admin
    );

    let (s, body) = call(
        &app,
        post("/api/rooms/demo/guest-token", r#"{"name": "#, None),
    )
    .await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    let (s, body) = call(
        &app,
        post("/api/rooms/demo/guest-token", r#"{"nom":"x"}"#, None),
    )
    .await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (s, body) = call(
        &app,
        post("/api/rooms/demo/guest-token", r#"{"name":"   "}"#, None),
    )
    .await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (s, body) = call(
        &app,
        post(
            "/api/rooms/bad%20room!/guest-token",
            r#"{"name":"x"}"#,
            None,
        ),
    )
    .await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(100 * 1024));
    let (s, body) = call(&app, post("/api/rooms/demo/guest-token", big, None)).await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let req = Request::post("/api/rooms/demo/guest-token")
        .body(Body::from(r#"{"name":"x"}"#))
        .unwrap();
    let (s, body) = call(&app, req).await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn guest_access_can_be_turned_off() {
    let server = start_server(|a| a.guest_access = Some(false)).await;
    let app = conclave::http::app(server.state.clone());
    let (s, body) = call(
        &app,
        post("/api/rooms/demo/guest-token", r#"{"name":"Ada"}"#, None),
    )
    .await;
    assert_eq!(
        (s, error_code(&body).as_str()),
        (StatusCode::FORBIDDEN, "guest_access_disabled")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn creating_a_room_needs_an_admin_token_for_that_room() {
    let server = start_server(|a| a.auto_create_rooms = Some(false)).await;
    let app = conclave::http::app(server.state.clone());
    let body = r#"{"name":"board"}"#;

    let (s, b) = call(&app, post("/api/rooms", body, None)).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (s, b) = call(&app, post("/api/rooms", body, Some("garbage"))).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    let (s, b) = call(&app, post("/api/rooms", body, Some(&token("board", "u")))).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let admin = |room: &str, now| {
        token_with(
            room,
            "ops",
            Grants {
                room_admin: true,
                ..Grants::default()
            },
            Duration::from_secs(60),
            now,
        )
    };
    let (s, b) = call(
        &app,
        post("/api/rooms", body, Some(&admin("other", SystemTime::now()))),
    )
    .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    let old = SystemTime::now() - Duration::from_secs(3600);
    let (s, b) = call(&app, post("/api/rooms", body, Some(&admin("board", old)))).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::UNAUTHORIZED, "token_expired")
    );
    // Guest tokens for a room that does not exist are refused too.
    let (s, b) = call(
        &app,
        post("/api/rooms/board/guest-token", r#"{"name":"x"}"#, None),
    )
    .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );

    let (s, b) = call(
        &app,
        post("/api/rooms", body, Some(&admin("board", SystemTime::now()))),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(
        server
            .state
            .rooms
            .get(&conclave_signaling::RoomName::validate("board").unwrap())
            .is_some()
    );
    let (s, _) = call(
        &app,
        post("/api/rooms/board/guest-token", r#"{"name":"x"}"#, None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn stats_metrics_pages_and_unknown_paths() {
    let server = start_server(|_| {}).await;
    let app = conclave::http::app(server.state.clone());
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();

    let (s, b) = call(&app, get("/api/stats")).await;
    assert_eq!(s, StatusCode::OK);
    let stats: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (&stats["rooms"], &stats["participants"]),
        (&0.into(), &0.into()),
        "{b}"
    );
    assert!(
        stats["node_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("ND_")),
        "{b}"
    );
    assert_eq!(stats["draining"], false, "{b}");
    // Without a cluster, the cluster view is this node alone.
    let (s, b) = call(&app, get("/api/nodes")).await;
    assert_eq!(s, StatusCode::OK);
    let view: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(view["cluster"], false, "{b}");
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(view["nodes"][0]["id"], stats["node_id"], "{b}");
    let (s, b) = call(&app, get("/api/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    let doc: Value = serde_json::from_str(&b).unwrap();
    for path in [
        "/api/meetings",
        "/api/meetings/{code}",
        "/api/meetings/{code}/join",
        "/api/meetings/{code}/start",
        "/api/meetings/{code}/end",
        "/api/meetings/{code}/leave",
        "/api/meetings/{code}/participants",
        "/api/rooms/{room}/guest-token",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let (s, b) = call(&app, get("/metrics")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        b.contains("# TYPE conclave_rtp_packets_dropped_total counter"),
        "{b}"
    );
    assert!(b.contains("conclave_rooms 0"), "{b}");
    let (s, b) = call(&app, get("/room/standup")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        b.contains("/assets/room.js"),
        "room page references its script"
    );
    let (s, b) = call(&app, get("/assets/room.js")).await;
    assert!(s == StatusCode::OK && b.contains("/assets/room-negotiation.js"));
    for module in ["signaling", "negotiation", "tiles", "captions", "controls"] {
        let (s, _) = call(&app, get(&format!("/assets/room-{module}.js"))).await;
        assert_eq!(s, StatusCode::OK, "room-{module}.js is served");
    }
    let (_, b) = call(&app, get("/assets/room-negotiation.js")).await;
    assert!(b.contains("RTCPeerConnection"));
    let (s, b) = call(&app, get("/nowhere")).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (s, _) = call(&app, get("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_key_pair_is_readable_by_its_owner_only() {
    let dir = std::env::temp_dir().join(format!("conclave-dev-{}", conclave::ids::random_id(8)));
    let server = common::start_server_in(dir.clone(), |a| {
        a.dev = true;
        a.api_key = None;
        a.api_secret = None;
    })
    .await;
    let meta = std::fs::metadata(dir.join("dev-api-key.toml")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_or_control_character_names_are_refused() {
    let server = common::start_server(|_| {}).await;
    for name in ["\u{0}\u{0}", "\u{200B}\u{200D}", "\u{202E}nimda", "   "] {
        let body = serde_json::json!({ "name": name }).to_string();
        let (s, b) = common::http(
            server.http_addr,
            "POST",
            "/api/rooms/lobby/guest-token",
            None,
            &body,
        )
        .await;
        assert_eq!(s, 400, "{name:?}: {b}");
        assert!(b.contains("visible character"), "{b}");
        let (s, b) = common::http(
            server.http_addr,
            "POST",
            "/api/meetings",
            None,
            &serde_json::json!({"name": "x", "host_name": name}).to_string(),
        )
        .await;
        assert!(
            s == 400 || (s == 201 && name.trim().is_empty()),
            "{name:?}: {s} {b}"
        );
    }
    server.shutdown().await.unwrap();
}
