//! Who may create what: with guest access off only the API key (or a token that says so)
//! creates meetings; a host token's admin grant makes no persistent rooms; rooms created
//! through the API go away after staying empty for their time.

mod common;

use common::{api_key_auth, eventually, http, start_server, token_with};
use conclave::auth::Grants;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_guest_access_off_only_the_api_key_or_a_create_grant_creates_meetings() {
    let server = start_server(|a| a.guest_access = Some(false)).await;
    let addr = server.http_addr;
    let body = json!({"name": "Standup"}).to_string();
    let (s, b) = http(addr, "POST", "/api/meetings", None, &body).await;
    assert_eq!(s, 401, "anonymous: {b}");
    let (s, b) = http(addr, "POST", "/api/meetings", Some(&api_key_auth()), &body).await;
    assert_eq!(s, 201, "API key: {b}");
    let created: Value = serde_json::from_str(&b).unwrap();
    let code = created["code"].as_str().unwrap();
    // A participant's join token for that meeting is no licence to create more.
    let (_, j) = http(
        addr,
        "POST",
        &format!("/api/meetings/{code}/join"),
        None,
        r#"{"name":"Gus"}"#,
    )
    .await;
    let join_token = serde_json::from_str::<Value>(&j).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = http(
        addr,
        "POST",
        "/api/meetings",
        Some(&format!("Bearer {join_token}")),
        &body,
    )
    .await;
    assert_eq!(s, 403, "a join token: {b}");
    let host = created["host_token"].as_str().unwrap();
    let (s, b) = http(
        addr,
        "POST",
        "/api/meetings",
        Some(&format!("Bearer {host}")),
        &body,
    )
    .await;
    assert_eq!(s, 403, "a host token: {b}");
    let granted = token_with(
        "ops",
        "scheduler",
        Grants {
            create_meetings: true,
            ..Grants::default()
        },
        Duration::from_secs(60),
        SystemTime::now(),
    );
    let (s, b) = http(
        addr,
        "POST",
        "/api/meetings",
        Some(&format!("Bearer {granted}")),
        &body,
    )
    .await;
    assert_eq!(s, 201, "a token with the create grant: {b}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_token_makes_no_persistent_rooms() {
    let server = start_server(|_| {}).await;
    let addr = server.http_addr;
    let (_, b) = http(addr, "POST", "/api/meetings", None, r#"{"name":"Demo"}"#).await;
    let created: Value = serde_json::from_str(&b).unwrap();
    let (code, host) = (
        created["code"].as_str().unwrap(),
        created["host_token"].as_str().unwrap(),
    );
    let bearer = format!("Bearer {host}");
    let (s, b) = http(
        addr,
        "POST",
        "/api/rooms",
        Some(&bearer),
        &json!({ "name": code }).to_string(),
    )
    .await;
    assert_eq!(s, 403, "its own meeting's room: {b}");
    assert!(b.contains("meeting_room"), "{b}");
    let (s, b) = http(
        addr,
        "POST",
        "/api/rooms",
        Some(&bearer),
        r#"{"name":"squat"}"#,
    )
    .await;
    assert!(s == 401 || s == 403, "another room: {s} {b}");
    assert_eq!(server.state.rooms.counts().0, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_created_through_the_api_expire_when_left_empty() {
    let server = start_server(|a| a.empty_room_ttl_secs = Some(1)).await;
    let addr = server.http_addr;
    let admin = token_with(
        "board",
        "ops",
        Grants {
            room_admin: true,
            ..Grants::default()
        },
        Duration::from_secs(60),
        SystemTime::now(),
    );
    let (s, b) = http(
        addr,
        "POST",
        "/api/rooms",
        Some(&format!("Bearer {admin}")),
        r#"{"name":"board"}"#,
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(server.state.rooms.counts().0, 1);
    assert!(
        eventually(Duration::from_secs(5), || server.state.rooms.counts().0
            == 0)
        .await,
        "an empty API room outlived its time"
    );
    server.shutdown().await.unwrap();
}
