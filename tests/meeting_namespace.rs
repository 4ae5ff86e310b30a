//! Rooms and meetings are one namespace with one admission path: a meeting's room can be
//! entered, and its transcript read, only with a token from that meeting's join. Every path
//! that mints a token is tried against it.

mod common;

use common::client::TestClient;
use common::{api_key_auth, http, start_server, token};
use conclave_signaling::{ErrorCode, ServerMessage, decode_server};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Sends one `join` over a fresh socket and returns the first reply.
async fn ws_join(addr: std::net::SocketAddr, room: &str, token: &str) -> ServerMessage {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let join = json!({"v": 1, "type": "join", "room": room, "name": "Hana (host)", "token": token});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = frame {
            return decode_server(t.as_str()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meetings_room_is_entered_only_through_the_meeting() {
    let server = start_server(|_| {}).await;
    let addr = server.http_addr;
    let (s, created) = http(
        addr,
        "POST",
        "/api/meetings",
        Some(&api_key_auth()),
        &json!({"name": "Pricing", "password": "4812", "host_name": "Hana"}).to_string(),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    let code = created["code"].as_str().unwrap().to_owned();

    // 1. The free-room guest token endpoint refuses a meeting's room.
    let (s, body) = http(
        addr,
        "POST",
        &format!("/api/rooms/{code}/guest-token"),
        None,
        r#"{"name":"Mallory"}"#,
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("meeting_room"), "{body}");

    // The free-room page of a meeting's room sends the browser to the meeting's join page.
    let (s, _) = http(addr, "GET", &format!("/room/{code}"), None, "").await;
    assert_eq!(s, 303, "/room/{code} redirects to /join/{code}");

    // 2. A token that merely names the room (signed with the API key, as `conclave token
    //    create` or an old guest token would be) does not get in, and reads no transcript.
    let plain = token(&code, "mallory");
    match ws_join(addr, &code, &plain).await {
        ServerMessage::Error { code: e, message } => {
            assert_eq!(e, ErrorCode::PermissionDenied, "{message}")
        }
        other => panic!("a plain token entered a meeting's room: {other:?}"),
    }
    assert_eq!(
        server.state.rooms.counts(),
        (0, 0),
        "nobody sits in the room"
    );
    let (s, body) = http(
        addr,
        "GET",
        &format!("/api/rooms/{code}/transcript"),
        Some(&format!("Bearer {plain}")),
        "",
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let (s, body) = http(
        addr,
        "GET",
        &format!("/api/meetings/{code}/transcript"),
        Some(&format!("Bearer {plain}")),
        "",
    )
    .await;
    assert_eq!(s, 403, "{body}");

    // 3. The meeting's own join (password checked) gives a token that enters, under the name
    //    given at the join, whatever the socket's `join` says.
    let (s, body) = http(
        addr,
        "POST",
        &format!("/api/meetings/{code}/join"),
        None,
        r#"{"name":"Gus","password":"0000"}"#,
    )
    .await;
    assert_eq!(s, 401, "a wrong password: {body}");
    let host = created["host_token"].as_str().unwrap();
    let (s, body) = http(
        addr,
        "POST",
        &format!("/api/meetings/{code}/join"),
        Some(&format!("Bearer {host}")),
        r#"{"name":"Hana"}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let host_join: Value = serde_json::from_str(&body).unwrap();
    let _hana = TestClient::join(
        addr,
        &code,
        "Hana",
        host_join["token"].as_str().unwrap(),
        false,
    )
    .await;
    let (s, body) = http(
        addr,
        "POST",
        &format!("/api/meetings/{code}/join"),
        None,
        r#"{"name":"Gus","password":"4812"}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let joined: Value = serde_json::from_str(&body).unwrap();
    let gus_token = joined["token"].as_str().unwrap();
    match ws_join(addr, &code, gus_token).await {
        ServerMessage::Joined { participant_id, .. } => {
            let room = server
                .state
                .rooms
                .get(&conclave_signaling::RoomName::validate(&code).unwrap())
                .unwrap();
            let me = room.member(&participant_id).expect("Gus is in the room");
            assert_eq!(
                me.name, "Gus",
                "the socket cannot rename a meeting participant"
            );
            assert_eq!(me.role, Some(conclave_signaling::Role::Participant));
        }
        other => panic!("the meeting's own token was refused: {other:?}"),
    }
    // And that token reads the meeting's transcript.
    let (s, body) = http(
        addr,
        "GET",
        &format!("/api/meetings/{code}/transcript"),
        Some(&format!("Bearer {gus_token}")),
        "",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_rooms_keep_working_with_guest_tokens() {
    let server = start_server(|_| {}).await;
    let addr = server.http_addr;
    // Nine letters of the code alphabet, but not a code's canonical form: a free room.
    for room in ["quarterly", "standup"] {
        let (s, body) = http(
            addr,
            "POST",
            &format!("/api/rooms/{room}/guest-token"),
            None,
            r#"{"name":"Ada"}"#,
        )
        .await;
        assert_eq!(s, 200, "{room}: {body}");
        let t: Value = serde_json::from_str(&body).unwrap();
        match ws_join(addr, room, t["token"].as_str().unwrap()).await {
            ServerMessage::Joined { .. } => {}
            other => panic!("{room}: {other:?}"),
        }
    }
    server.shutdown().await.unwrap();
}
