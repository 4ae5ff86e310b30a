//! The external agent (`examples/agent.rs`), a separate process speaking the public signaling
//! protocol with webrtc-rs, in a room of the in-process server with the real Whisper model and
//! Silero VAD: a listening participant (webrtc-rs, publishing nothing) hears the agent's voice
//! through the SFU; the agent is in the participant lists; a speaking lead answers the first
//! question and the agent, having waited for the end of the turn, asks the next one; on SIGTERM
//! the agent prints its lead score as JSON.

mod common;

use common::client::TestClient;
use common::speech::{speak_48k, whisper_model};
use common::{eventually, start_server, token};
use conclave_signaling::{
    ClientMessage, ParticipantInfo, RoomName, ServerMessage, TrackKind, decode_server, encode,
};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "external-agent";
/// The agent is done with a turn when its audio has been silent this long.
const TURN_GAP: Duration = Duration::from_millis(900);
/// What the lead answers to "What problem are you hoping to solve?".
const ANSWER: &str = "Our support team is buried in tickets and everything is too slow.";

/// The compiled example: `target/<profile>/examples/agent`, next to this test's
/// `target/<profile>/deps/`. Built first (a no-op when it is up to date), so the test never
/// runs a stale agent.
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .ancestors()
        .find(|d| d.file_name().is_some_and(|n| n == "deps"))
        .and_then(|d| d.parent())
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf();
    let bin = profile_dir
        .join("examples")
        .join(format!("agent{}", std::env::consts::EXE_SUFFIX));
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--example", "agent"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir);
    // Cargo gives test processes the package's own variables (CARGO_MANIFEST_DIR, CARGO_PKG_*,
    // ...). Some build scripts (ring's) rerun when those change, so a nested cargo that sees
    // them would rebuild half the tree, and the next plain build would rebuild it back.
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        let set_by_cargo_for_tests = k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || k.starts_with("CARGO_CFG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_MANIFEST_LINKS",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&k);
        if set_by_cargo_for_tests {
            cmd.env_remove(k);
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let built = cmd.status().map(|s| s.success()).unwrap_or(false);
    assert!(
        built || bin.is_file(),
        "could not build the agent example ({})",
        bin.display()
    );
    bin
}

/// Joins with a bare WebSocket (no media) and returns the `joined` participant list.
async fn participants_seen_by_newcomer(http: SocketAddr) -> Vec<ParticipantInfo> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("ws connect");
    let (mut tx, mut rx) = ws.split();
    let join = ClientMessage::Join {
        room: RoomName::validate(ROOM).unwrap(),
        name: Some("Gus".into()),
        token: token(ROOM, "gus"),
    };
    tx.send(Message::Text(encode(&join).into())).await.unwrap();
    let participants = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(frame)) = rx.next().await {
            let Message::Text(text) = frame else { continue };
            if let Ok(ServerMessage::Joined { participants, .. }) = decode_server(text.as_str()) {
                return participants;
            }
        }
        panic!("socket closed before joined");
    })
    .await
    .expect("joined in time");
    let _ = tx
        .send(Message::Text(encode(&ClientMessage::Leave).into()))
        .await;
    participants
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_agent_joins_speaks_waits_for_the_answer_and_scores_it() {
    let build_started = Instant::now();
    let bin = tokio::task::spawn_blocking(agent_binary).await.unwrap();
    let build_secs = build_started.elapsed().as_secs_f64();
    // The budget below is for the test itself, not for a first build of the example.
    let test_started = Instant::now();
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let answer_pcm = tokio::task::spawn_blocking(|| speak_48k(ANSWER, &std::env::temp_dir()))
        .await
        .unwrap();
    let server = start_server(|a| a.whisper_model = Some(model.clone())).await;
    assert!(server.state.transcription.is_some(), "transcription did not start");
    let http = server.http_addr;
    let setup_secs = test_started.elapsed().as_secs_f64();

    let mut listener = TestClient::join(http, ROOM, "Lena", &token(ROOM, "lena"), false).await;
    let (lead, speech) = TestClient::join_live(http, ROOM, "Dana", &token(ROOM, "dana")).await;

    let launched = Instant::now();
    let mut agent = tokio::process::Command::new(&bin)
        .args([
            "--server",
            &format!("http://{http}"),
            "--room",
            ROOM,
            "--token",
            &token(ROOM, "agent-1"),
            "--name",
            "Ava",
            "--voice",
            "flite",
            "--lead-identity",
            "dana",
            "--meeting-day",
            "2026-12-01",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("agent starts");
    let mut stdout = agent.stdout.take().unwrap();

    // In the participant list: announced to those already here...
    let joined = listener
        .wait_for(Duration::from_secs(15), |m| {
            matches!(m, ServerMessage::ParticipantJoined { participant } if participant.identity == "agent-1")
        })
        .await
        .expect("the agent joined the room");
    let ServerMessage::ParticipantJoined { participant } = joined else {
        unreachable!()
    };
    assert_eq!(participant.name, "Ava");
    let agent_id = participant.id;
    let joined_after = launched.elapsed();

    // ...and heard: real speech, not silence, within 30 s.
    let heard = eventually(Duration::from_secs(30), || {
        listener.received_from(&agent_id).audio_peak_rms > 0.01
    })
    .await;
    let first_audio = listener
        .audio_arrivals_from(&agent_id)
        .first()
        .map(|a| a.at.duration_since(launched));
    let got = listener.received_from(&agent_id);
    assert!(heard, "no audible audio from the agent: {got:?}");

    // ...and listed, with its audio track, to whoever joins later.
    let listed = participants_seen_by_newcomer(http).await;
    let me = listed
        .iter()
        .find(|p| p.id == agent_id)
        .unwrap_or_else(|| panic!("agent not in a newcomer's participant list: {listed:?}"));
    assert_eq!(me.identity, "agent-1");
    assert!(
        me.tracks.iter().any(|t| t.kind == TrackKind::Audio),
        "agent listed without its audio track: {me:?}"
    );

    // The greeting (with the first question) ends; the lead answers; the agent waits for the
    // end of the turn and asks the next question.
    let greeting_end = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let arrivals = listener.audio_arrivals_from(&agent_id);
            let last = arrivals.last().map(|a| a.at);
            if last.is_some_and(|l| Instant::now().duration_since(l) >= TURN_GAP) {
                break (arrivals.len(), last.unwrap());
            }
            assert!(Instant::now() < deadline, "the greeting never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let greeting_secs = {
        let a = listener.audio_arrivals_from(&agent_id);
        a[greeting_end.0 - 1].at.duration_since(a[0].at).as_secs_f64()
    };
    speech.say(&answer_pcm);
    let answer_started = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || speech.idle()).await,
        "answer not sent"
    );
    let answer_sent = Instant::now();
    let replied = eventually(Duration::from_secs(20), || {
        listener.audio_arrivals_from(&agent_id).len() > greeting_end.0
    })
    .await;
    let reply_at = listener
        .audio_arrivals_from(&agent_id)
        .get(greeting_end.0)
        .map(|a| a.at);
    assert!(replied, "the agent never spoke again after the answer");
    let reply_at = reply_at.unwrap();
    assert!(
        reply_at >= answer_sent,
        "the agent spoke over the lead: {:?} before the answer ended",
        answer_sent - reply_at
    );
    let reply_latency = reply_at - answer_sent;
    // Let the next question play a little, then stop the agent: it prints its score.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = agent.id().expect("agent running") as libc::pid_t;
    // SAFETY: `pid` is our own child, still running (we hold its handle).
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let mut out = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stdout.read_to_string(&mut out)).await;
    let status = tokio::time::timeout(Duration::from_secs(5), agent.wait()).await;
    assert!(read.is_ok(), "agent did not exit on SIGTERM");
    assert!(
        status.is_ok_and(|s| s.is_ok_and(|s| s.success())),
        "agent exited badly: {out}"
    );
    let report: Value = serde_json::from_str(
        out.lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON report on stdout: {out:?}")),
    )
    .expect("JSON report");

    println!(
        "build check {build_secs:.1} s; setup {setup_secs:.1} s; agent joined {:.2} s after launch, first audio at {:.2} s; \
         {} packets, peak rms {:.3}; greeting {greeting_secs:.1} s; answer spoken {:.1} s; \
         reply {} ms after the answer ended; total {:.1} s",
        joined_after.as_secs_f64(),
        first_audio.map_or(f64::NAN, |d| d.as_secs_f64()),
        got.audio_packets,
        got.audio_peak_rms,
        (answer_sent - answer_started).as_secs_f64(),
        reply_latency.as_millis(),
        test_started.elapsed().as_secs_f64(),
    );
    println!(
        "agent report: answers {} | lead_score {} | stats {}",
        report["answers"], report["lead_score"], report["stats"]
    );

    assert_eq!(report["status"], "stopped", "{report}");
    assert_eq!(report["participant_id"], agent_id.as_str());
    assert_eq!(report["voice"], "flite");
    let answers = report["answers"].as_array().unwrap();
    assert!(
        answers.iter().any(|a| a["category"] == "need"),
        "the lead's answer was not heard as an answer to the need question: {report}"
    );
    assert_eq!(
        report["lead_score"]["need"], true,
        "\"buried in tickets ... too slow\" states a need: {report}"
    );
    assert_eq!(report["question_index"], 2, "the agent moved on to question 2: {report}");
    assert!(
        test_started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        test_started.elapsed()
    );

    listener.leave().await;
    lead.leave().await;
    server.shutdown().await.unwrap();
}
