//! Bad input gets a clear, coded error, the session survives where it can, and the server
//! keeps serving everyone else.

mod common;

use common::client::TestClient;
use common::{eventually, start_server, token, token_with};
use conclave::auth::Grants;
use conclave_signaling::{ErrorCode, ServerMessage, decode_server};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(http: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .unwrap()
        .0
}

async fn next_msg(ws: &mut Ws) -> ServerMessage {
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

async fn send_text(ws: &mut Ws, text: impl Into<String>) {
    ws.send(Message::Text(text.into().into())).await.unwrap();
}

async fn expect_error(ws: &mut Ws, want: ErrorCode) -> String {
    match next_msg(ws).await {
        ServerMessage::Error { code, message } => {
            assert_eq!(code, want, "message: {message}");
            assert!(!message.is_empty());
            message
        }
        other => panic!("expected error {want:?}, got {other:?}"),
    }
}

/// The connection still answers after an error.
async fn still_alive(ws: &mut Ws) {
    send_text(ws, r#"{"type":"ping","id":42}"#).await;
    assert_eq!(next_msg(ws).await, ServerMessage::Pong { id: Some(42) });
}

fn join(room: &str, token: &str) -> String {
    format!(r#"{{"v":1,"type":"join","room":"{room}","name":"x","token":"{token}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_oversized_frames_are_refused_and_the_session_survives() {
    let server = start_server(|a| a.max_message_bytes = Some(64 * 1024)).await;
    let mut ws = connect(server.http_addr).await;

    send_text(&mut ws, "{this is not json").await;
    expect_error(&mut ws, ErrorCode::MalformedMessage).await;
    still_alive(&mut ws).await;

    send_text(&mut ws, r#"{"type":"teleport","to":"mars"}"#).await;
    let msg = expect_error(&mut ws, ErrorCode::UnknownMessageType).await;
    assert!(msg.contains("teleport"), "{msg}");

    send_text(&mut ws, r#"{"v":9,"type":"ping"}"#).await;
    expect_error(&mut ws, ErrorCode::UnsupportedVersion).await;

    send_text(&mut ws, r#"{"type":"join","room":"r"}"#).await;
    expect_error(&mut ws, ErrorCode::InvalidMessage).await;

    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(65 * 1024));
    send_text(&mut ws, big).await;
    let msg = expect_error(&mut ws, ErrorCode::MessageTooLarge).await;
    assert!(msg.contains("65536"), "limit named in the message: {msg}");
    still_alive(&mut ws).await;

    ws.send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    expect_error(&mut ws, ErrorCode::MalformedMessage).await;

    send_text(&mut ws, r#"{"type":"offer","sdp":"v=0"}"#).await;
    expect_error(&mut ws, ErrorCode::NotJoined).await;
    still_alive(&mut ws).await;

    // After all that, this very connection can still join.
    send_text(&mut ws, join("errors", &token("errors", "u1"))).await;
    assert!(matches!(
        next_msg(&mut ws).await,
        ServerMessage::Joined { .. }
    ));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_far_over_the_limit_closes_only_that_connection() {
    let server = start_server(|a| a.max_message_bytes = Some(4096)).await;
    let mut other = connect(server.http_addr).await;
    let mut ws = connect(server.http_addr).await;
    send_text(&mut ws, "x".repeat(64 * 1024)).await;
    // The server says why (when it can) and closes this connection.
    let mut closed = false;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match frame {
            Ok(Message::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "oversized connection was not closed");
    still_alive(&mut other).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_their_own_codes() {
    let server = start_server(|_| {}).await;
    let mut ws = connect(server.http_addr).await;

    let long_ago = SystemTime::now() - Duration::from_secs(7200);
    let expired = token_with(
        "secure",
        "eve",
        Grants::default(),
        Duration::from_secs(60),
        long_ago,
    );
    send_text(&mut ws, join("secure", &expired)).await;
    expect_error(&mut ws, ErrorCode::TokenExpired).await;

    let forged = conclave::auth::TokenAuthority::new(
        common::API_KEY,
        "a-different-secret-of-enough-length-xxxxx",
    )
    .issue(
        &conclave::auth::TokenRequest {
            room: "secure".into(),
            identity: "eve".into(),
            name: None,
            grants: Grants::default(),
            ttl: Duration::from_secs(60),
            ..Default::default()
        },
        SystemTime::now(),
    );
    send_text(&mut ws, join("secure", &forged)).await;
    expect_error(&mut ws, ErrorCode::InvalidToken).await;

    send_text(&mut ws, join("secure", "not-a-jwt")).await;
    expect_error(&mut ws, ErrorCode::InvalidToken).await;

    let for_other_room = token("elsewhere", "eve");
    send_text(&mut ws, join("secure", &for_other_room)).await;
    let msg = expect_error(&mut ws, ErrorCode::InvalidToken).await;
    assert!(msg.contains("elsewhere"), "{msg}");

    // Nobody got in, and the refused socket may still join properly.
    assert_eq!(server.state.rooms.counts().1, 0);
    send_text(&mut ws, join("secure", &token("secure", "eve"))).await;
    assert!(matches!(
        next_msg(&mut ws).await,
        ServerMessage::Joined { .. }
    ));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_twice_and_invalid_sdp_are_refused_without_disturbing_the_room() {
    let server = start_server(|_| {}).await;
    let http = server.http_addr;
    let a = TestClient::join(http, "calm", "alice", &token("calm", "alice"), true).await;
    let b = TestClient::join(http, "calm", "bob", &token("calm", "bob"), true).await;

    let mut ws = connect(http).await;
    send_text(&mut ws, join("calm", &token("calm", "mallory"))).await;
    assert!(matches!(
        next_msg(&mut ws).await,
        ServerMessage::Joined { .. }
    ));
    send_text(&mut ws, join("calm", &token("calm", "mallory"))).await;
    let err = loop {
        match next_msg(&mut ws).await {
            e @ ServerMessage::Error { .. } => break e,
            _ => continue, // participant_joined / track_published about alice and bob
        }
    };
    assert!(
        matches!(
            err,
            ServerMessage::Error {
                code: ErrorCode::AlreadyJoined,
                ..
            }
        ),
        "{err:?}"
    );

    send_text(&mut ws, r#"{"type":"offer","sdp":"this is not SDP"}"#).await;
    let err = loop {
        match next_msg(&mut ws).await {
            e @ ServerMessage::Error { .. } => break e,
            _ => continue,
        }
    };
    assert!(
        matches!(
            err,
            ServerMessage::Error {
                code: ErrorCode::InvalidSdp,
                ..
            }
        ),
        "{err:?}"
    );

    send_text(
        &mut ws,
        r#"{"type":"mute","track_id":"TR_nope","muted":true}"#,
    )
    .await;
    let err = loop {
        match next_msg(&mut ws).await {
            e @ ServerMessage::Error { .. } => break e,
            _ => continue,
        }
    };
    assert!(
        matches!(
            err,
            ServerMessage::Error {
                code: ErrorCode::UnknownTrack,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.state.rooms.counts(), (1, 3));

    // Alice and Bob were never disturbed.
    let ok = eventually(Duration::from_secs(20), || {
        a.received_from(&b.participant_id).audio_decoded > 25
            && b.received_from(&a.participant_id).audio_decoded > 25
    })
    .await;
    assert!(ok, "media between alice and bob did not flow");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_room_is_refused_when_rooms_must_exist() {
    let server = start_server(|a| a.auto_create_rooms = Some(false)).await;
    let mut ws = connect(server.http_addr).await;
    send_text(&mut ws, join("ghost", &token("ghost", "u"))).await;
    let msg = expect_error(&mut ws, ErrorCode::RoomNotFound).await;
    assert!(msg.contains("ghost"), "{msg}");
    assert_eq!(server.state.rooms.counts(), (0, 0));

    // Created through the API, the room then admits the same token.
    let admin = token_with(
        "ghost",
        "ops",
        Grants {
            room_admin: true,
            ..Grants::default()
        },
        Duration::from_secs(60),
        SystemTime::now(),
    );
    let bearer = format!("Bearer {admin}");
    let (status, body) = common::http(
        server.http_addr,
        "POST",
        "/api/rooms",
        Some(&bearer),
        r#"{"name":"ghost"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    send_text(&mut ws, join("ghost", &token("ghost", "u"))).await;
    assert!(matches!(
        next_msg(&mut ws).await,
        ServerMessage::Joined { .. }
    ));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_participants_and_releases_everything() {
    let server = start_server(|_| {}).await;
    let mut ws = connect(server.http_addr).await;
    send_text(&mut ws, join("bye", &token("bye", "u"))).await;
    assert!(matches!(
        next_msg(&mut ws).await,
        ServerMessage::Joined { .. }
    ));
    let state = server.state.clone();
    server.shutdown().await.unwrap();
    let msg = expect_error(&mut ws, ErrorCode::ShuttingDown).await;
    assert!(msg.contains("shutting down"));
    assert!(eventually(Duration::from_secs(5), || state.rooms.counts() == (0, 0)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_the_next_member_and_keeps_the_others() {
    let server = start_server(|a| a.max_participants = Some(2)).await;
    let http = server.http_addr;
    let a = TestClient::join(http, "tiny", "alice", &token("tiny", "alice"), true).await;
    let b = TestClient::join(http, "tiny", "bob", &token("tiny", "bob"), false).await;
    let mut ws = connect(http).await;
    send_text(&mut ws, join("tiny", &token("tiny", "carol"))).await;
    let msg = expect_error(&mut ws, ErrorCode::RoomFull).await;
    assert!(msg.contains('2'), "{msg}");
    still_alive(&mut ws).await;
    assert_eq!(server.state.rooms.counts(), (1, 2));
    assert!(
        eventually(Duration::from_secs(20), || b
            .received_from(&a.participant_id)
            .audio_decoded
            > 10)
        .await
    );
    server.shutdown().await.unwrap();
}
