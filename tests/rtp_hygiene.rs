//! Padding-only RTP packets, as Chromium's audio-only publishers send them (no payload, the
//! previous packet's timestamp), never reach the Opus decoder: no decode errors, and caption
//! times do not drift. Here one arrives every 200 ms for 20 s, a hundred of them; each one
//! that reached the decoder used to add 20 ms of invented audio (2 s of drift by the end).

mod common;

use bytes::Bytes;
use common::speech::{speak_48k, whisper_model};
use common::{http, start_server, token};
use conclave::room::{MemberInfo, Open, ProducerSpec};
use conclave_signaling::{ParticipantId, RoomName, ServerMessage, TrackId, TrackKind};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::time::Duration;

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padding_packets_cause_no_decode_errors_and_no_drift() {
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let server = start_server(|a| a.whisper_model = Some(model.clone())).await;
    let addr = server.http_addr;
    let mut listener =
        common::client::TestClient::join(addr, "pad", "lena", &token("pad", "lena"), false).await;
    let room = server
        .state
        .rooms
        .open(&RoomName::validate("pad").unwrap(), &Open::Join)
        .unwrap();
    let speaker = ParticipantId("PA_speaker".into());
    let (_link, _) = room
        .join(MemberInfo {
            id: speaker.clone(),
            identity: "sam".into(),
            name: "Sam".into(),
            role: None,
            can_subscribe: false,
        })
        .unwrap();
    let producer = room
        .publish(ProducerSpec {
            id: TrackId("TR_pad".into()),
            publisher: speaker.clone(),
            kind: TrackKind::Audio,
            codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            transcribe: true,
        })
        .unwrap();
    // 16 s of silence, then a sentence: its caption's start tells whether time drifted.
    let dir = std::env::temp_dir().join("conclave-pad");
    let sentence = speak_48k("The renewal terms look good to us.", &dir);
    let speech_at_ms = 16_000u64;
    let mut pcm = vec![0.0f32; 48 * speech_at_ms as usize];
    pcm.extend(&sentence);
    pcm.extend(vec![0.0f32; 48 * 2_000]);
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut out = vec![0u8; 1500];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut seq, mut ts) = (1_000u16, 90_000u32);
    let mut anchor_ms = None;
    let mut padding = 0;
    for (i, frame) in pcm.chunks_exact(960).enumerate() {
        tick.tick().await;
        let n = enc.encode_float(frame, &mut out).unwrap();
        anchor_ms.get_or_insert(producer.now_ms());
        let header = |seq, ts, padding| rtp::header::Header {
            version: 2,
            padding,
            payload_type: 111,
            sequence_number: seq,
            timestamp: ts,
            ssrc: 0x5A5A,
            ..Default::default()
        };
        producer.deliver(rtp::Packet {
            header: header(seq, ts, false),
            payload: Bytes::copy_from_slice(&out[..n]),
        });
        seq = seq.wrapping_add(1);
        if i % 10 == 9 {
            // Padding only: next sequence number, the same timestamp, no payload.
            producer.deliver(rtp::Packet {
                header: header(seq, ts, true),
                payload: Bytes::new(),
            });
            seq = seq.wrapping_add(1);
            padding += 1;
        }
        ts = ts.wrapping_add(960);
    }
    let caption = listener
        .wait_for(Duration::from_secs(30), |m| {
            matches!(m, ServerMessage::Caption { is_final: true, text, .. } if !text.is_empty())
        })
        .await
        .expect("the sentence was captioned");
    let ServerMessage::Caption { start_ms, text, .. } = caption else {
        unreachable!()
    };
    // The utterance's audio starts 300 ms (pre-roll) before the voice, which espeak starts
    // a few tens of ms into its file.
    let expected = anchor_ms.unwrap() + speech_at_ms - 300;
    println!(
        "{text:?} starts at {start_ms} ms, expected about {expected} ms; {padding} padding packets"
    );
    assert!(
        start_ms.abs_diff(expected) <= 200,
        "caption time drifted: {start_ms} ms against {expected} ms"
    );
    let metrics = http(addr, "GET", "/metrics", None, "").await.1;
    assert_eq!(metric(&metrics, "conclave_audio_decode_errors_total"), 0);
    assert!(metric(&metrics, "conclave_audio_padding_skipped_total") >= padding);
    assert_eq!(metric(&metrics, "conclave_audio_packets_late_total"), 0);
    server.shutdown().await.unwrap();
}
