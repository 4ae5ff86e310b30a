//! Live meeting events over the signaling WebSocket: waiting room, start, host hand-over after
//! the grace period, and the end of a meeting.

mod common;

use common::start_server;
use conclave_signaling::{ErrorCode, ServerMessage};
use futures::StreamExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use common::http_json as http;
use common::ws::{Ws, join as ws_join, wait_for};

async fn closed(ws: &mut Ws, secs: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            _ => {}
        }
    }
}

struct Meeting {
    code: String,
    host_token: String,
}

async fn create(addr: SocketAddr) -> Meeting {
    let v = http(
        addr,
        "POST",
        "/api/meetings",
        None,
        json!({"name": "live", "host_name": "Hana"}),
    )
    .await;
    Meeting {
        code: v["code"].as_str().unwrap().into(),
        host_token: v["host_token"].as_str().unwrap().into(),
    }
}

async fn join_token(addr: SocketAddr, m: &Meeting, name: &str, as_host: bool) -> String {
    let auth = as_host.then_some(m.host_token.as_str());
    let v = http(
        addr,
        "POST",
        &format!("/api/meetings/{}/join", m.code),
        auth,
        json!({"name": name}),
    )
    .await;
    v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("join failed: {v}"))
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_wait_for_the_host_whose_arrival_starts_the_meeting() {
    let server = start_server(|_| {}).await;
    let addr = server.http_addr;
    let m = create(addr).await;
    let guest_token = join_token(addr, &m, "Gus", false).await;
    let mut guest = ws_join(addr, &m.code, &guest_token).await;
    let waiting = wait_for(&mut guest, 5, |_| true).await;
    assert!(
        matches!(&waiting, Some(ServerMessage::Waiting { meeting }) if meeting.status == "waiting"),
        "{waiting:?}"
    );
    assert_eq!(
        server.state.rooms.counts().1,
        0,
        "a waiting guest is not in the room yet"
    );

    let host_token = join_token(addr, &m, "Hana", true).await;
    let mut host = ws_join(addr, &m.code, &host_token).await;
    let joined = wait_for(&mut host, 5, |m| matches!(m, ServerMessage::Joined { .. })).await;
    assert!(
        matches!(&joined, Some(ServerMessage::Joined { meeting: Some(info), .. }) if info.role == Some(conclave_signaling::Role::Host)),
        "{joined:?}"
    );
    // The guest is let in once the host's arrival started the meeting.
    let joined = wait_for(&mut guest, 5, |m| matches!(m, ServerMessage::Joined { .. })).await;
    assert!(
        matches!(&joined, Some(ServerMessage::Joined { participants, .. }) if participants.len() == 1),
        "{joined:?}"
    );
    let info = http(
        addr,
        "GET",
        &format!("/api/meetings/{}", m.code),
        None,
        json!({}),
    )
    .await;
    assert_eq!(info["status"], "active");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_leaving_hands_over_after_the_grace_period_then_the_meeting_ends_when_empty() {
    let server = start_server(|a| a.host_grace_secs = Some(1)).await;
    let addr = server.http_addr;
    let m = create(addr).await;
    let mut host = ws_join(addr, &m.code, &join_token(addr, &m, "Hana", true).await).await;
    assert!(
        wait_for(&mut host, 5, |m| matches!(m, ServerMessage::Joined { .. }))
            .await
            .is_some()
    );
    let gus_token = join_token(addr, &m, "Gus", false).await;
    let mut gus = ws_join(addr, &m.code, &gus_token).await;
    assert!(
        wait_for(&mut gus, 5, |m| matches!(m, ServerMessage::Joined { .. }))
            .await
            .is_some()
    );

    // The host leaves; within the grace period nothing happens, after it Gus is host.
    let left_at = Instant::now();
    host.close(None).await.unwrap();
    let changed = wait_for(&mut gus, 5, |m| {
        matches!(m, ServerMessage::HostChanged { .. })
    })
    .await;
    let waited = left_at.elapsed();
    let Some(ServerMessage::HostChanged {
        identity,
        participant_id,
    }) = changed
    else {
        panic!("no host_changed: {changed:?}")
    };
    assert!(
        waited >= Duration::from_millis(900),
        "handed over before the grace period ({waited:?})"
    );
    assert!(identity.starts_with("guest-") && participant_id.is_some());
    let info = http(
        addr,
        "GET",
        &format!("/api/meetings/{}", m.code),
        None,
        json!({}),
    )
    .await;
    assert_eq!(info["host_identity"].as_str(), Some(identity.as_str()));

    // The new host may end the meeting with their own join token.
    let ended = http(
        addr,
        "POST",
        &format!("/api/meetings/{}/end", m.code),
        Some(&gus_token),
        json!({}),
    )
    .await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let msg = wait_for(&mut gus, 5, |m| {
        matches!(m, ServerMessage::MeetingEnded { .. })
    })
    .await;
    assert!(
        matches!(&msg, Some(ServerMessage::MeetingEnded { reason }) if reason == "host_ended"),
        "{msg:?}"
    );
    assert!(
        closed(&mut gus, 5).await,
        "socket not closed after meeting_ended"
    );
    let state = server.state.clone();
    assert!(common::eventually(Duration::from_secs(5), || state.rooms.counts() == (0, 0)).await);

    // Nobody gets back in.
    let mut late = ws_join(addr, &m.code, &gus_token).await;
    let refused = wait_for(&mut late, 5, |_| true).await;
    assert!(
        matches!(
            refused,
            Some(ServerMessage::Error {
                code: ErrorCode::MeetingEnded,
                ..
            })
        ),
        "{refused:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_everyone_left_ends_after_the_grace_period() {
    let server = start_server(|a| a.host_grace_secs = Some(1)).await;
    let addr = server.http_addr;
    let m = create(addr).await;
    let mut host = ws_join(addr, &m.code, &join_token(addr, &m, "Hana", true).await).await;
    assert!(
        wait_for(&mut host, 5, |m| matches!(m, ServerMessage::Joined { .. }))
            .await
            .is_some()
    );
    host.close(None).await.unwrap();
    let mut status = Value::Null;
    for _ in 0..40 {
        status = http(
            addr,
            "GET",
            &format!("/api/meetings/{}", m.code),
            None,
            json!({}),
        )
        .await;
        if status["status"] == "ended" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["status"], "ended", "{status}");
    server.shutdown().await.unwrap();
}
