//! Peers in one room receive each other's audio (decoded, not silent) and video; leaving is
//! announced and the server forgets empty rooms. Each case runs on both media stacks: the
//! default (a PeerConnection per participant) and the media plane (`--media-plane worker`).

mod common;

use common::client::TestClient;
use common::{eventually, start_server, token};
use conclave_signaling::ServerMessage;
use std::time::Duration;

const MEDIA_TIMEOUT: Duration = Duration::from_secs(25);

/// Whether `to` hears `from`'s tone and sees its video.
fn hears_and_sees(to: &TestClient, from: &TestClient) -> bool {
    let r = to.received_from(&from.participant_id);
    r.audio_decoded >= 25 && r.audio_peak_rms > 0.05 && r.video_packets >= 15
}

/// A server on the given media stack.
async fn server_on(plane: &str) -> conclave::server::RunningServer {
    let plane = plane.to_owned();
    start_server(move |a| a.media_plane = Some(plane)).await
}

/// `conclave_plane_forwarded_total` from /metrics, if the server has a media plane.
async fn plane_forwarded(server: &conclave::server::RunningServer) -> Option<f64> {
    let (_, body) = common::http(server.http_addr, "GET", "/metrics", None, "").await;
    body.lines()
        .find_map(|l| l.strip_prefix("conclave_plane_forwarded_total "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_hear_and_see_each_other() {
    two_peers("webrtc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_hear_and_see_each_other_on_the_media_plane() {
    two_peers("worker").await;
}

async fn two_peers(plane: &str) {
    let server = server_on(plane).await;
    let http = server.http_addr;
    let a = TestClient::join(http, "duo", "alice", &token("duo", "alice"), true).await;
    let b = TestClient::join(http, "duo", "bob", &token("duo", "bob"), true).await;

    let ok = eventually(MEDIA_TIMEOUT, || {
        hears_and_sees(&a, &b) && hears_and_sees(&b, &a)
    })
    .await;
    assert!(
        ok,
        "media did not flow both ways: alice got {:?} from bob, bob got {:?} from alice (states {:?}/{:?})",
        a.received_from(&b.participant_id),
        b.received_from(&a.participant_id),
        a.connection_state(),
        b.connection_state(),
    );
    // A participant never receives its own tracks back.
    assert_eq!(a.received_from(&a.participant_id).audio_packets, 0);
    // The stack asked for is the one that carried the media.
    let forwarded = plane_forwarded(&server).await;
    match plane {
        "worker" => assert!(
            forwarded.is_some_and(|n| n >= 50.0),
            "the media plane forwarded {forwarded:?} packets"
        ),
        _ => assert_eq!(forwarded, None, "a media plane runs on the default stack"),
    }
    assert_eq!(server.state.rooms.counts(), (1, 2));

    a.leave().await;
    b.leave().await;
    let state = server.state.clone();
    assert!(
        eventually(Duration::from_secs(10), || state.rooms.counts() == (0, 0)).await,
        "room not released: {:?}",
        state.rooms.counts()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_then_one_leaves_and_the_rest_are_told() {
    three_peers("webrtc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_then_one_leaves_and_the_rest_are_told_on_the_media_plane() {
    three_peers("worker").await;
}

async fn three_peers(plane: &str) {
    let server = server_on(plane).await;
    let http = server.http_addr;
    let mut a = TestClient::join(http, "trio", "alice", &token("trio", "alice"), true).await;
    let mut b = TestClient::join(http, "trio", "bob", &token("trio", "bob"), true).await;
    let c = TestClient::join(http, "trio", "carol", &token("trio", "carol"), true).await;

    let ok = eventually(MEDIA_TIMEOUT, || {
        hears_and_sees(&a, &b)
            && hears_and_sees(&a, &c)
            && hears_and_sees(&b, &a)
            && hears_and_sees(&b, &c)
            && hears_and_sees(&c, &a)
            && hears_and_sees(&c, &b)
    })
    .await;
    assert!(
        ok,
        "not everyone got everyone: a<-b {:?} a<-c {:?} b<-a {:?} b<-c {:?} c<-a {:?} c<-b {:?}",
        a.received_from(&b.participant_id),
        a.received_from(&c.participant_id),
        b.received_from(&a.participant_id),
        b.received_from(&c.participant_id),
        c.received_from(&a.participant_id),
        c.received_from(&b.participant_id),
    );

    let carol = c.participant_id.clone();
    c.leave().await;
    for peer in [&mut a, &mut b] {
        let left = peer
            .wait_for(Duration::from_secs(10), |m| matches!(m, ServerMessage::ParticipantLeft { participant_id } if *participant_id == carol))
            .await;
        assert!(
            left.is_some(),
            "{} was not told carol left",
            peer.participant_id
        );
    }
    assert_eq!(server.state.rooms.counts(), (1, 2));

    // Media between the remaining two keeps flowing after the renegotiation.
    let before = a.received_from(&b.participant_id).audio_packets;
    let flowing = eventually(Duration::from_secs(5), || {
        a.received_from(&b.participant_id).audio_packets > before + 25
    })
    .await;
    assert!(flowing, "alice stopped hearing bob after carol left");

    a.leave().await;
    b.leave().await;
    let state = server.state.clone();
    assert!(
        eventually(Duration::from_secs(10), || state.rooms.counts() == (0, 0)).await,
        "room not released: {:?}",
        state.rooms.counts()
    );
    server.shutdown().await.unwrap();
}
