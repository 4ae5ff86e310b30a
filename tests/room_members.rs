//! Members that are not PeerConnections: a member running inside the server joins a room
//! through the room domain, publishes an Opus track it feeds from Rust, and a WebRTC
//! subscriber hears it; room events tell followers what happened.

mod common;

use bytes::Bytes;
use common::client::TestClient;
use common::speech::whisper_model;
use common::{eventually, start_server, token};
use conclave::room::{MemberInfo, Open, ProducerSpec, RoomEvent};
use conclave_signaling::{ParticipantId, Role, RoomName, ServerMessage, TrackId, TrackKind};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::time::Duration;

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_member_publishes_audio_that_a_webrtc_subscriber_decodes() {
    server_side_member("webrtc").await;
}

/// The same on the media plane: the in-process track reaches the plane's subscriber through
/// a bridge (a local source of the worker fed from the room's fan-out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_member_publishes_audio_that_a_media_plane_subscriber_decodes() {
    server_side_member("worker").await;
}

async fn server_side_member(plane: &str) {
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let plane = plane.to_owned();
    let server = start_server(|a| {
        a.whisper_model = Some(model.clone());
        a.media_plane = Some(plane);
    })
    .await;
    assert!(server.state.transcription.is_some());
    let http = server.http_addr;
    let mut lena = TestClient::join(http, "mixed", "lena", &token("mixed", "lena"), false).await;

    let name = RoomName::validate("mixed").unwrap();
    let room = server.state.rooms.open(&name, &Open::Join).unwrap();
    let (_snapshot, mut events) = room.subscribe();
    let bot = ParticipantId("PA_bot".into());
    let (_link, others) = room
        .join(MemberInfo {
            id: bot.clone(),
            identity: "agent-1".into(),
            name: "Notetaker".into(),
            role: Some(Role::Agent),
            can_subscribe: false,
        })
        .unwrap();
    assert_eq!(others.len(), 1, "lena is already here");
    let joined = lena
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::ParticipantJoined { participant } if participant.id == bot)
        })
        .await;
    let Some(ServerMessage::ParticipantJoined { participant }) = joined else {
        panic!("lena was not told the agent joined: {joined:?}")
    };
    assert_eq!(
        (participant.name.as_str(), participant.role),
        ("Notetaker", Some(Role::Agent))
    );

    // Its voice opts out of transcription, as an agent's own voice must.
    let producer = room
        .publish(ProducerSpec {
            id: TrackId("TR_bot_voice".into()),
            publisher: bot.clone(),
            kind: TrackKind::Audio,
            codec: opus(),
            transcribe: false,
        })
        .unwrap();
    assert!(matches!(
        events.recv().await.unwrap(),
        RoomEvent::MemberJoined(m) if m.id == bot
    ));
    assert!(matches!(
        events.recv().await.unwrap(),
        RoomEvent::TrackPublished(p) if p.id == producer.id
    ));

    // 3 s of a 440 Hz tone, encoded and packetised here, paced by a 20 ms clock.
    let feeder = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut enc =
                opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut out = vec![0u8; 1500];
            let mut phase = 0f32;
            for i in 0..150u32 {
                tick.tick().await;
                let pcm: Vec<f32> = (0..960)
                    .map(|_| {
                        phase += 2.0 * std::f32::consts::PI * 440.0 / 48_000.0;
                        0.3 * phase.sin()
                    })
                    .collect();
                let n = enc.encode_float(&pcm, &mut out).unwrap();
                producer.deliver(rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: i == 0,
                        payload_type: 111,
                        sequence_number: i as u16,
                        timestamp: i * 960,
                        ssrc: 0xB07,
                        ..Default::default()
                    },
                    payload: Bytes::copy_from_slice(&out[..n]),
                });
            }
        })
    };
    assert!(
        eventually(Duration::from_secs(15), || {
            let r = lena.received_from(&bot);
            r.audio_decoded > 50 && r.audio_peak_rms > 0.1
        })
        .await,
        "lena did not hear the agent: {:?}",
        lena.received_from(&bot)
    );
    feeder.await.unwrap();
    assert_eq!(
        producer.sink_count(),
        1,
        "only lena's leg: transcription stayed off the agent's voice"
    );
    let counts = producer.counts();
    assert_eq!(counts.packets_in, 150);
    assert!(counts.sinks.written > 50, "{counts:?}");

    assert!(!room.leave(&bot));
    let left = lena
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::ParticipantLeft { participant_id } if *participant_id == bot)
        })
        .await;
    assert!(left.is_some(), "lena was not told the agent left");
    server.shutdown().await.unwrap();
}
