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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_costs_the_publisher_one_keyframe_request_and_nobody_else_anything() {
    use conclave::room::SinkOptions;
    // The PeerConnection stack, where every subscriber's leg is a sink of the room's fan-out
    // with its own queue. On the media plane a leg has no queue to stall (a packet goes to the
    // kernel in the pass that read it; a full socket buffer is counted, `send_failed`), and
    // its video does not feed room-level sinks (nothing in the product reads them yet).
    let server = start_server(|a| a.media_plane = Some("webrtc".into())).await;
    let http = server.http_addr;
    let a = TestClient::join(http, "slow", "alice", &token("slow", "alice"), true).await;
    let b = TestClient::join(http, "slow", "bob", &token("slow", "bob"), false).await;
    let c = TestClient::join(http, "slow", "carol", &token("slow", "carol"), false).await;
    for who in [&b, &c] {
        assert!(
            eventually(Duration::from_secs(20), || who
                .received_from(&a.participant_id)
                .video_packets
                > 30)
            .await,
            "a subscriber never got alice's video"
        );
    }
    // A third subscriber whose leg stops draining (as a congested one would): a sink on
    // alice's video producer that nobody reads.
    let room = server
        .state
        .rooms
        .get(&conclave_signaling::RoomName::validate("slow").unwrap())
        .unwrap();
    let (snapshot, _events) = room.subscribe();
    let video = snapshot
        .producers
        .iter()
        .find(|p| p.kind == TrackKind::Video)
        .expect("alice's video producer")
        .clone();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let requests_before = a.keyframe_requests.load(Ordering::Relaxed);
    let (b0, c0) = (
        b.received_from(&a.participant_id).video_packets,
        c.received_from(&a.participant_id).video_packets,
    );
    let (stalled, _queue) = video.add_sink(SinkOptions {
        capacity: 8,
        keyframe_gate: true,
    });
    // Alice's encoder also sends a keyframe every 3 s; 4 s covers one of them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let requests = a.keyframe_requests.load(Ordering::Relaxed) - requests_before;
    let (b1, c1) = (
        b.received_from(&a.participant_id).video_packets - b0,
        c.received_from(&a.participant_id).video_packets - c0,
    );
    let counts = stalled.counts();
    println!("stalled sink {counts:?}; bob +{b1}, carol +{c1}; keyframe requests +{requests}");
    assert!(stalled.is_waiting_for_keyframe());
    assert_eq!(counts.queued, 8, "its queue filled");
    // The first loss, then only keyframes (which find the queue still full): deltas are
    // skipped without counting as losses.
    assert!(counts.dropped >= 1 && counts.dropped <= 4, "{counts:?}");
    assert!(counts.skipped > 80, "{counts:?}");
    assert_eq!(
        requests, 1,
        "one keyframe request for the stalled leg, not a stream"
    );
    // 30 fps for 4 s, with a generous margin for a busy machine; nothing was held back.
    assert!(
        b1 >= 90 && c1 >= 90,
        "others slowed down: bob +{b1}, carol +{c1}"
    );
    let metrics = common::http(http, "GET", "/metrics", None, "").await.1;
    let skipped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("conclave_rtp_packets_skipped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(skipped >= counts.skipped, "{metrics}");
    drop(stalled);
    server.shutdown().await.unwrap();
}
