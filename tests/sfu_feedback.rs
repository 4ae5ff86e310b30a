//! Control flowing back through the SFU: keyframe requests relayed (and throttled) to the
//! publisher, and mute state announced to the room.

mod common;

use common::client::TestClient;
use common::{eventually, start_server, token};
use conclave_signaling::{ServerMessage, TrackKind};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_keyframe_requests_reach_the_publisher_throttled() {
    let server = start_server(|_| {}).await;
    let http = server.http_addr;
    let a = TestClient::join(http, "pli", "alice", &token("pli", "alice"), true).await;
    let b = TestClient::join(http, "pli", "bob", &token("pli", "bob"), false).await;
    assert!(
        eventually(Duration::from_secs(20), || b
            .received_from(&a.participant_id)
            .video_packets
            > 10)
        .await,
        "bob never got alice's video"
    );
    // Bob starting to receive already asked for one keyframe on his behalf.
    assert!(
        eventually(Duration::from_secs(5), || a
            .keyframe_requests
            .load(Ordering::Relaxed)
            >= 1)
        .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await;

    // A decoder that asks ten times a second for 2 s gets through about every 500 ms.
    let before = a.keyframe_requests.load(Ordering::Relaxed);
    for _ in 0..20 {
        assert!(
            b.request_keyframe_from(&a.participant_id).await,
            "bob has no video track from alice"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relayed = a.keyframe_requests.load(Ordering::Relaxed) - before;
    assert!(
        (3..=6).contains(&relayed),
        "expected 3-6 relayed keyframe requests in 2 s, got {relayed}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muting_is_announced_to_everyone() {
    let server = start_server(|_| {}).await;
    let http = server.http_addr;
    let mut a = TestClient::join(http, "mute", "alice", &token("mute", "alice"), true).await;
    let mut b = TestClient::join(http, "mute", "bob", &token("mute", "bob"), false).await;
    let alice = a.participant_id.clone();
    // Alice learns her own audio track id from track_published.
    let published = a
        .wait_for(Duration::from_secs(15), |m| {
            matches!(m, ServerMessage::TrackPublished { participant_id, track } if *participant_id == alice && track.kind == TrackKind::Audio)
        })
        .await
        .expect("alice's audio track announced");
    let ServerMessage::TrackPublished { track, .. } = published else {
        unreachable!()
    };
    a.send(conclave_signaling::ClientMessage::Mute {
        track_id: track.id.clone(),
        muted: true,
    });
    let muted = b
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::TrackMuted { track_id, muted: true, .. } if *track_id == track.id)
        })
        .await;
    assert!(muted.is_some(), "bob was not told alice muted");
    server.shutdown().await.unwrap();
}
