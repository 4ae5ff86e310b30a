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

fn jobs(server: &conclave::server::RunningServer) -> u64 {
    let stats = server.state.transcription.as_ref().unwrap().stats();
    conclave_media::pool::PipelineStats::get(&stats.transcriptions_done)
        + conclave_media::pool::PipelineStats::get(&stats.transcriptions_aborted)
}

/// CPU seconds the process uses over `secs` of wall time.
async fn cpu_over(secs: u64) -> f64 {
    let before = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    cpu_seconds() - before
}

/// One tone-sending participant for 6 s, then gone; returns once the room has closed.
async fn beep_for_six_seconds(server: &conclave::server::RunningServer, room: &str) {
    let beeper = TestClient::join(server.http_addr, room, "tone", &token(room, "tone"), true).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    beeper.leave().await;
    assert!(
        eventually(Duration::from_secs(10), || server.state.rooms.counts().0
            == 0)
        .await,
        "the room did not close"
    );
}

// Both phases in one test: CPU time is the whole process's, so nothing may run beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_goes_quiet_once_the_last_room_closes() {
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();

    // The product's default: Silero hears no speech in a tone, so Whisper never starts.
    let server = start_server(|a| a.whisper_model = Some(model.clone())).await;
    assert!(server.state.transcription.is_some());
    beep_for_six_seconds(&server, "beep").await;
    assert_eq!(
        jobs(&server),
        0,
        "Whisper ran on a steady tone behind Silero"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_over(3).await;
    println!("Silero: CPU over 3 s of idleness: {used:.3} s");
    assert!(
        used < 0.15,
        "an idle server used {used:.2} s of CPU in 3 s (more than 5% of a core)"
    );
    server.shutdown().await.unwrap();

    // The fallback takes the tone for speech, so Whisper does run: every job is bounded (token
    // limit, deadline), and once the last one ends nothing runs any more.
    let server = start_server(|a| {
        a.whisper_model = Some(model.clone());
        a.vad = Some("webrtc".into());
    })
    .await;
    beep_for_six_seconds(&server, "beep2").await;
    assert!(
        jobs(&server) >= 1,
        "Whisper never ran on the tone with webrtc-vad"
    );
    // The room's last final may still run; its deadline is 2 s + 3 x its audio, so within
    // 25 s the process must have gone quiet (a second with under 5% of a core).
    let mut quiet_after = None;
    for waited in 0..25 {
        if cpu_over(1).await < 0.05 {
            quiet_after = Some(waited);
            break;
        }
    }
    let last = jobs(&server);
    assert!(
        quiet_after.is_some(),
        "still busy 25 s after the room closed ({last} jobs)"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_over(3).await;
    println!(
        "webrtc-vad: quiet {}s after the room closed; CPU over 3 s of idleness after {last} jobs: {used:.3} s",
        quiet_after.unwrap()
    );
    assert!(
        used < 0.15,
        "an idle server used {used:.2} s of CPU in 3 s (more than 5% of a core)"
    );
    server.shutdown().await.unwrap();
}
