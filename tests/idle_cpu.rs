//! An idle server is idle: after a participant whose microphone sends a steady tone (which
//! the voice detector takes for speech, so Whisper runs on it) leaves, the process's CPU time
//! stops growing. Read from /proc, so it is the whole process: server, pipelines, Whisper
//! workers. Its own test binary, so no other test's work is counted.

mod common;

use common::client::TestClient;
use common::speech::whisper_model;
use common::{eventually, start_server, token};
use std::time::Duration;

/// User + system CPU time of this process, in seconds (from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // The clock tick is 100 Hz on Linux unless the kernel says otherwise.
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks / hz
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_goes_quiet_once_the_last_room_closes() {
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let server = start_server(|a| a.whisper_model = Some(model.clone())).await;
    assert!(server.state.transcription.is_some());
    let http = server.http_addr;
    let beeper = TestClient::join(http, "beep", "tone", &token("beep", "tone"), true).await;
    // Long enough for the tone to become an utterance with interims in flight.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats = server.state.transcription.as_ref().unwrap().stats().clone();
    let busy = || {
        conclave_media::pool::PipelineStats::get(&stats.transcriptions_done)
            + conclave_media::pool::PipelineStats::get(&stats.transcriptions_aborted)
    };
    assert!(busy() >= 1, "Whisper never ran on the tone");
    beeper.leave().await;
    assert!(
        eventually(Duration::from_secs(10), || server.state.rooms.counts().0
            == 0)
        .await,
        "the room did not close"
    );
    // The tone's last utterance is still transcribed after the room closed (bounded by its
    // token limit and deadline); a second later nothing may run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds() - before;
    println!("CPU over 3 s of idleness: {used:.3} s");
    assert!(
        used < 0.15,
        "an idle server used {used:.2} s of CPU in 3 s (more than 5% of a core)"
    );
    server.shutdown().await.unwrap();
}
