//! Live transcription end to end: a webrtc-rs participant speaks five sentences (espeak-ng,
//! Opus over RTP) into a room; another participant receives interim and final captions; the
//! final lines are stored, listed and searchable. Real Whisper tiny.en model.

mod common;

use common::client::TestClient;
use common::speech::{speak_48k, whisper_model, word_error_rate, words};
use common::{start_server, token};
use conclave_signaling::ServerMessage;
use std::time::Duration;

/// Word error rate a regression must not exceed. Measured 0.02 alone and 0.10 with the other
/// transcription test running beside it on 2 cores (one garbled first sentence); a regression
/// that garbles two of the five sentences goes over.
const MAX_WER: f64 = 0.18;

const SENTENCES: [&str; 5] = [
    "The quarterly budget was approved on Monday morning.",
    "We need the new contract signed before the end of March.",
    "Please send the meeting notes to everyone on the project.",
    "Our customers want a faster way to export their reports.",
    "The engineering team will ship the update next Tuesday.",
];

async fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (_, body) = common::http(addr, "GET", path, Some(&common::api_key_auth()), "").await;
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoken_sentences_become_captions_for_others_and_a_searchable_transcript() {
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let dir = std::env::temp_dir().join(format!("conclave-speech-{}", conclave::ids::random_id(6)));
    let mut speech = Vec::new();
    for s in SENTENCES {
        speech.extend(speak_48k(s, &dir));
        speech.extend(std::iter::repeat_n(0.0f32, 48_000 * 6 / 5)); // 1.2 s pause
    }
    let spoken_secs = speech.len() as f64 / 48_000.0;

    let server = start_server(|a| a.whisper_model = Some(model.clone())).await;
    assert!(
        server.state.transcription.is_some(),
        "transcription did not start"
    );
    let http = server.http_addr;
    let mut listener =
        TestClient::join(http, "standup", "lena", &token("standup", "lena"), false).await;
    let (speaker, mic) =
        TestClient::join_live(http, "standup", "sam", &token("standup", "sam")).await;
    microphone_heard(&server, "standup").await;
    mic.say(&speech);

    let mut finals: Vec<String> = Vec::new();
    let mut interims = 0;
    let mut speaking_edges = 0;
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs_f64(spoken_secs + 60.0);
    while tokio::time::Instant::now() < deadline {
        // Once everything has been said, 15 s without news means the pipeline is done.
        let speaking_until = started + Duration::from_secs_f64(spoken_secs + 2.0);
        let quiet = if tokio::time::Instant::now() < speaking_until {
            deadline
        } else {
            tokio::time::Instant::now() + Duration::from_secs(15)
        };
        let left = quiet.min(deadline) - tokio::time::Instant::now();
        let Some(msg) = listener
            .wait_for(left, |m| {
                matches!(
                    m,
                    ServerMessage::Caption { .. } | ServerMessage::Speaking { .. }
                )
            })
            .await
        else {
            break;
        };
        match msg {
            ServerMessage::Caption {
                participant_id,
                name,
                text,
                is_final,
                ..
            } => {
                assert_eq!(
                    (participant_id, name.as_str()),
                    (speaker.participant_id.clone(), "sam")
                );
                if is_final {
                    finals.push(text);
                } else {
                    interims += 1;
                }
            }
            ServerMessage::Speaking { .. } => speaking_edges += 1,
            _ => {}
        }
        let heard: usize = finals.iter().map(|f| words(f).len()).sum();
        if heard >= words(&SENTENCES.join(" ")).len() - 2 && finals.len() >= 5 {
            break;
        }
    }
    let reference = SENTENCES.join(" ");
    let hypothesis = finals.join(" ");
    let wer = word_error_rate(&reference, &hypothesis);
    println!(
        "finals: {finals:#?}\ninterims: {interims}, speaking edges: {speaking_edges}, WER {wer:.3}"
    );
    assert!(
        finals.len() >= SENTENCES.len(),
        "each sentence (1.2 s pauses between them) is its own final: {finals:?}"
    );
    assert!(
        wer <= MAX_WER,
        "word error rate {wer:.3} over {MAX_WER}:\n  said:  {reference}\n  heard: {hypothesis}"
    );
    assert!(
        interims >= 1,
        "no interim captions while someone spoke for seconds"
    );
    assert!(speaking_edges >= 2, "no speaking indicators");

    // Stored (the insert runs off the caption path, so wait for it), listed in order,
    // searchable.
    let listed = stored_lines(http, "standup", finals.len()).await;
    let lines = listed["lines"].as_array().unwrap();
    assert_eq!(
        lines.len(),
        finals.len(),
        "every final caption is stored: {listed}"
    );
    assert_eq!(lines[0]["speaker_name"], "sam");
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["start_ms"].as_i64() <= w[1]["start_ms"].as_i64())
    );
    // Search for a word that was heard (the model may mishear any given one).
    let heard_word = ["contract", "customers", "engineering", "budget", "meeting"]
        .into_iter()
        .find(|w| words(&hypothesis).iter().any(|h| h == w))
        .expect("none of the key words was heard");
    let found = get_json(http, &format!("/api/transcripts/search?q={heard_word}")).await;
    let found = found["lines"].as_array().unwrap();
    assert!(
        !found.is_empty()
            && found[0]["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(heard_word),
        "{heard_word}: {found:?}"
    );
    let none = get_json(http, "/api/transcripts/search?q=zebra").await;
    assert!(none["lines"].as_array().unwrap().is_empty());

    let metrics = get_json_text(http, "/metrics").await;
    assert!(metrics.contains("conclave_transcription_enabled 1"));
    assert!(
        metrics.contains("conclave_transcription_jobs_dropped_total 0"),
        "a final transcription was dropped:\n{metrics}"
    );
    drop(speaker);
    server.shutdown().await.unwrap();
}

/// The room's stored transcript once it has `want` lines (or after 20 s, whatever it has).
async fn stored_lines(http: std::net::SocketAddr, room: &str, want: usize) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = get_json(http, &format!("/api/rooms/{room}/transcript")).await;
        let n = listed["lines"].as_array().map_or(0, |l| l.len());
        if n >= want || tokio::time::Instant::now() > deadline {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_words_of_a_speaker_who_leaves_at_once_are_stored_under_their_name() {
    // Alone in the room, the speaker says one sentence and leaves the moment the audio ends,
    // before the endpointer's trailing silence: the room empties and closes while the
    // utterance is still open and its final transcription has not even been queued.
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let dir = std::env::temp_dir().join(format!("conclave-leave-{}", conclave::ids::random_id(6)));
    let sentence = "Please send the signed contract to our legal team today.";
    let speech = speak_48k(sentence, &dir);
    let server = start_server(|a| a.whisper_model = Some(model.clone())).await;
    let http = server.http_addr;
    let (speaker, mic) =
        TestClient::join_live(http, "goodbye", "Sam Okafor", &token("goodbye", "sam")).await;
    microphone_heard(&server, "goodbye").await;
    mic.say(&speech);
    assert!(
        common::eventually(Duration::from_secs(30), || mic.idle()).await,
        "the speech was never sent"
    );
    speaker.leave().await;
    assert!(
        common::eventually(Duration::from_secs(10), || server.state.rooms.counts().0
            == 0)
        .await,
        "the room did not close when its last member left"
    );
    let listed = stored_lines(http, "goodbye", 1).await;
    let lines = listed["lines"].as_array().unwrap();
    if lines.len() != 1 {
        let metrics = get_json_text(http, "/metrics").await;
        let pipeline: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("conclave_")
                    && (l.contains("audio") || l.contains("transcri") || l.contains("caption"))
            })
            .collect();
        panic!(
            "the last utterance was not stored: {listed}\n{}",
            pipeline.join("\n")
        );
    }
    assert_eq!(lines[0]["speaker_name"], "Sam Okafor", "{listed}");
    assert_eq!(lines[0]["speaker_identity"], "sam", "{listed}");
    let heard = lines[0]["text"].as_str().unwrap();
    let wer = word_error_rate(sentence, heard);
    assert!(
        wer <= 0.3,
        "heard {heard:?} for {sentence:?} (WER {wer:.2})"
    );
    server.shutdown().await.unwrap();
}

/// Waits until the server receives the room's published audio (an audio track with packets:
/// the video track alone is not the microphone): speech starts once the server hears it, as a person talks once connected (on a busy machine the track can
/// take a while to be published, and what is sent before that is not these tests' subject).
async fn microphone_heard(server: &conclave::server::RunningServer, room: &str) {
    let room = conclave_signaling::RoomName::validate(room).unwrap();
    assert!(
        common::eventually(Duration::from_secs(30), || server
            .state
            .rooms
            .get(&room)
            .is_some_and(|r| r.subscribe().0.producers.iter().any(|p| {
                p.kind == conclave_signaling::TrackKind::Audio && p.counts().packets_in > 0
            })))
        .await,
        "the speaker's audio never reached the server"
    );
}

async fn get_json_text(addr: std::net::SocketAddr, path: &str) -> String {
    common::http(addr, "GET", path, None, "").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_model_leaves_the_server_running_without_transcription() {
    let server = start_server(|a| a.whisper_model = Some("/nonexistent/model.bin".into())).await;
    assert!(server.state.transcription.is_none());
    let bogus = std::env::temp_dir().join(format!("bogus-{}.bin", conclave::ids::random_id(6)));
    std::fs::write(&bogus, b"definitely not a ggml model").unwrap();
    let server2 = start_server(|a| a.whisper_model = Some(bogus)).await;
    assert!(
        server2.state.transcription.is_none(),
        "a corrupt model must not be used"
    );
    let metrics = get_json_text(server2.http_addr, "/metrics").await;
    assert!(
        metrics.contains("conclave_transcription_enabled 0"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
    server2.shutdown().await.unwrap();
}
