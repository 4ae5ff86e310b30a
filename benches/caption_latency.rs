//! Latency from the end of speech to the final caption at another participant, end to end:
//! a webrtc-rs participant speaks ~5 s utterances (espeak-ng, Opus over RTP) into a room on an
//! in-process server with the real Whisper model; a second participant receives the captions.
//!
//! End of speech is the wall-clock moment the speaker sent the packet holding the last sample
//! of each utterance (the speaker records every packet's send time). Latency = arrival of the
//! final caption at the listener − that moment. It therefore includes the 500 ms of silence the
//! endpointer waits for before it calls an utterance finished.
//!
//! Run: `cargo bench --bench caption_latency` (prints p50/p95; not a criterion bench because
//! each sample is a whole spoken utterance). `CONCLAVE_WHISPER_THREADS=2` measures two threads
//! per transcription instead of the default budget.

#[path = "../tests/common/mod.rs"]
mod common;

use common::client::TestClient;
use common::speech::{speak_48k, whisper_model};
use conclave_signaling::ServerMessage;
use std::sync::Arc;
use std::time::Duration;

const UTTERANCE: &str = "We need the new contract signed before the end of March, and the team will ship the update on Tuesday.";
const REPEATS: usize = 8;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let dir = std::env::temp_dir().join("conclave-latency-bench");
    let one = speak_48k(UTTERANCE, &dir);
    let utterance_secs = one.len() as f64 / 48_000.0;
    let mut speech = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..REPEATS {
        speech.extend_from_slice(&one);
        ends.push(speech.len());
        speech.extend(std::iter::repeat_n(0.0f32, 48_000 * 3));
    }
    // CONCLAVE_WHISPER_THREADS=N measures another thread budget than the default.
    let threads = std::env::var("CONCLAVE_WHISPER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    let server = common::start_server(|a| {
        a.whisper_model = Some(model.clone());
        a.whisper_threads = threads;
    })
    .await;
    let http = server.http_addr;
    let mut listener = TestClient::join(
        http,
        "bench",
        "lena",
        &common::token("bench", "lena"),
        false,
    )
    .await;
    let speaker = TestClient::join_speaking(
        http,
        "bench",
        "sam",
        &common::token("bench", "sam"),
        Arc::new(speech),
    )
    .await;

    let mut latencies = Vec::new();
    while latencies.len() < REPEATS {
        let Some(ServerMessage::Caption { text, .. }) = listener
            .wait_for(Duration::from_secs(30), |m| {
                matches!(m, ServerMessage::Caption { is_final: true, .. })
            })
            .await
        else {
            eprintln!("no final caption within 30 s; stopping");
            break;
        };
        let arrived = conclave::clock::now_ms();
        let last_packet = ends[latencies.len()].div_ceil(960) - 1;
        let Some(speech_end) = speaker
            .audio_sent_at
            .lock()
            .unwrap()
            .get(last_packet)
            .copied()
        else {
            eprintln!("final caption before the utterance was sent?");
            break;
        };
        let latency = arrived - speech_end;
        println!("final after {latency} ms: {text}");
        latencies.push(latency);
    }
    latencies.sort_unstable();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    if !latencies.is_empty() {
        println!(
            "caption_latency: {} utterances of {utterance_secs:.1} s; end of speech -> final caption at another participant: p50 {} ms, p95 {} ms (includes the 500 ms end-of-speech silence)",
            latencies.len(),
            pick(0.5),
            pick(0.95)
        );
    }
    server.shutdown().await.unwrap();
}
