//! The external agent (`examples/agent.rs`), a separate process speaking the public signaling
//! protocol with webrtc-rs, in a room of the in-process server with the real Whisper model and
//! Silero VAD. A listening participant (webrtc-rs, publishing nothing) hears the agent's voice
//! through the SFU; the agent is in the participant lists; a speaking lead answers the first
//! question and the agent, having waited for the end of the turn, asks the next one; on SIGTERM
//! the agent prints its lead score as JSON. A second scenario has the lead talk over the
//! greeting: the agent stops, then goes on once the lead's turn is over.

mod common;

use common::client::{AudioArrival, LiveSpeech, TestClient};
use common::speech::{speak_48k, whisper_model};
use common::{eventually, start_server, token};
use conclave_signaling::{
    ClientMessage, ParticipantId, ParticipantInfo, RoomName, ServerMessage, TrackKind,
    decode_server, encode,
};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// One scenario at a time: each runs a transcribing server and an agent process, and two at
/// once on two cores would measure the machine, not the agent.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
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
async fn participants_seen_by_newcomer(http: SocketAddr, room: &str) -> Vec<ParticipantInfo> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("ws connect");
    let (mut tx, mut rx) = ws.split();
    let join = ClientMessage::Join {
        room: RoomName::validate(room).unwrap(),
        name: Some("Gus".into()),
        token: token(room, "gus"),
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

/// A transcribing server, a listener (publishes nothing), a lead who speaks when told, and the
/// agent process, joined.
struct Scene {
    server: conclave::server::RunningServer,
    room: String,
    listener: TestClient,
    lead: TestClient,
    speech: LiveSpeech,
    agent: tokio::process::Child,
    stdout: tokio::process::ChildStdout,
    agent_id: ParticipantId,
    launched: Instant,
    /// When the agent showed up in the listener's events, after launch.
    joined_after: Duration,
}

impl Scene {
    async fn start(bin: &Path, room: &str) -> Scene {
        let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
        let server = start_server(|a| a.whisper_model = Some(model.clone())).await;
        assert!(
            server.state.transcription.is_some(),
            "transcription did not start"
        );
        let http = server.http_addr;
        let mut listener = TestClient::join(http, room, "Lena", &token(room, "lena"), false).await;
        let (lead, speech) = TestClient::join_live(http, room, "Dana", &token(room, "dana")).await;
        let launched = Instant::now();
        let mut agent = tokio::process::Command::new(bin)
            .args([
                "--server",
                &format!("http://{http}"),
                "--room",
                room,
                "--token",
                &token(room, "agent-1"),
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
        let stdout = agent.stdout.take().unwrap();
        // In the participant list: announced to those already here.
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
        Scene {
            server,
            room: room.to_owned(),
            listener,
            lead,
            speech,
            agent,
            stdout,
            agent_id: participant.id,
            launched,
            joined_after: launched.elapsed(),
        }
    }

    fn arrivals(&self) -> Vec<AudioArrival> {
        self.listener.audio_arrivals_from(&self.agent_id)
    }

    /// Waits until the agent's audio has been silent for [`TURN_GAP`] after packet `after`;
    /// returns the number of packets so far.
    async fn agent_pause(&self, after: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let arrivals = self.arrivals();
            if arrivals.len() > after
                && Instant::now().duration_since(arrivals.last().unwrap().at) >= TURN_GAP
            {
                return arrivals.len();
            }
            assert!(Instant::now() < deadline, "the agent's turn never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for agent packet number `n` (0-based) and returns its arrival.
    async fn agent_packet(&self, n: usize, timeout: Duration) -> Option<AudioArrival> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self.arrivals().get(n) {
                return Some(*a);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for an utterance of the agent that starts after `t`: a packet whose RTP timestamp
    /// jumps past the previous one's (the agent's packetizer moves its clock on over silence).
    async fn utterance_after(&self, t: Instant, timeout: Duration) -> Option<AudioArrival> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrivals = self.arrivals();
            let start = arrivals.windows(2).find(|w| {
                w[1].at >= t && w[1].rtp_timestamp.wrapping_sub(w[0].rtp_timestamp) > 960
            });
            if let Some(w) = start {
                return Some(w[1]);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM: the agent leaves and prints its report, which is returned.
    async fn stop_agent(&mut self) -> Value {
        let pid = self.agent.id().expect("agent running") as libc::pid_t;
        // SAFETY: `pid` is our own child, still running (we hold its handle and have not
        // waited on it).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let mut out = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            self.stdout.read_to_string(&mut out),
        )
        .await;
        let status = tokio::time::timeout(Duration::from_secs(5), self.agent.wait()).await;
        assert!(read.is_ok(), "agent did not exit on SIGTERM");
        assert!(
            status.is_ok_and(|s| s.is_ok_and(|s| s.success())),
            "agent exited badly: {out}"
        );
        serde_json::from_str(
            out.lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .unwrap_or_else(|| panic!("no JSON report on stdout: {out:?}")),
        )
        .expect("JSON report")
    }

    async fn end(self) {
        self.listener.leave().await;
        self.lead.leave().await;
        self.server.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_agent_joins_speaks_waits_for_the_answer_and_scores_it() {
    let _serial = SERIAL.lock().await;
    let build_started = Instant::now();
    let bin = tokio::task::spawn_blocking(agent_binary).await.unwrap();
    let build_secs = build_started.elapsed().as_secs_f64();
    // The budget below is for the test itself, not for a first build of the example.
    let test_started = Instant::now();
    let answer_pcm = tokio::task::spawn_blocking(|| speak_48k(ANSWER, &std::env::temp_dir()))
        .await
        .unwrap();
    let mut s = Scene::start(&bin, "external-agent").await;
    let agent_id = s.agent_id.clone();

    // Heard: real speech, not silence, within 30 s.
    let heard = eventually(Duration::from_secs(30), || {
        s.listener.received_from(&agent_id).audio_peak_rms > 0.01
    })
    .await;
    let first_audio = s
        .arrivals()
        .first()
        .map(|a| a.at.duration_since(s.launched));
    let got = s.listener.received_from(&agent_id);
    assert!(heard, "no audible audio from the agent: {got:?}");

    // Listed, with its audio track, to whoever joins later.
    let listed = participants_seen_by_newcomer(s.server.http_addr, &s.room).await;
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
    let greeting_packets = s.agent_pause(0, Duration::from_secs(20)).await;
    let greeting_secs = {
        let a = s.arrivals();
        a[greeting_packets - 1]
            .at
            .duration_since(a[0].at)
            .as_secs_f64()
    };
    s.speech.say(&answer_pcm);
    let answer_started = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || s.speech.idle()).await,
        "answer not sent"
    );
    let answer_sent = Instant::now();
    let reply = s
        .agent_packet(greeting_packets, Duration::from_secs(20))
        .await
        .expect("the agent never spoke again after the answer");
    assert!(
        reply.at >= answer_sent,
        "the agent spoke over the lead: {:?} before the answer ended",
        answer_sent - reply.at
    );
    let reply_latency = reply.at - answer_sent;
    // Let the next question play a little, then stop the agent: it prints its score.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = s.stop_agent().await;

    println!(
        "build check {build_secs:.1} s; agent joined {:.2} s after launch, first audio at {:.2} s; \
         {} packets, peak rms {:.3}; greeting {greeting_secs:.1} s; answer spoken {:.1} s; \
         reply {} ms after the answer ended; total {:.1} s",
        s.joined_after.as_secs_f64(),
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
    assert_eq!(
        report["question_index"], 2,
        "the agent moved on to question 2: {report}"
    );
    assert!(
        test_started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        test_started.elapsed()
    );
    s.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_agent_stops_when_talked_over_and_goes_on_after_the_turn() {
    let _serial = SERIAL.lock().await;
    let bin = tokio::task::spawn_blocking(agent_binary).await.unwrap();
    let test_started = Instant::now();
    let answer_pcm = tokio::task::spawn_blocking(|| speak_48k(ANSWER, &std::env::temp_dir()))
        .await
        .unwrap();
    let mut s = Scene::start(&bin, "external-agent-barge-in").await;

    // Two seconds into the greeting (about 7 s long), the lead starts talking over it.
    let first = s
        .agent_packet(0, Duration::from_secs(30))
        .await
        .expect("the agent never greeted");
    tokio::time::sleep_until(first.at + Duration::from_secs(2)).await;
    s.speech.say(&answer_pcm);
    let barge_at = Instant::now();
    let packets_before = s.arrivals().len();
    let stopped_packets = s.agent_pause(packets_before, Duration::from_secs(15)).await;
    let stopped_at = s.arrivals()[stopped_packets - 1].at;
    let lead_done = eventually(Duration::from_secs(10), || s.speech.idle()).await;
    let lead_done_at = Instant::now();
    assert!(lead_done, "answer not sent");
    let stop_latency = stopped_at.saturating_duration_since(barge_at);
    let greeting_secs = stopped_at.duration_since(first.at).as_secs_f64();
    assert!(
        stopped_at < lead_done_at,
        "the agent talked until the lead had finished ({:.1} s of greeting)",
        greeting_secs
    );
    assert!(
        stop_latency < Duration::from_millis(2_500),
        "the agent stopped {stop_latency:?} after being talked over"
    );
    // The lead's turn ends; the agent takes what they said as the answer and goes on.
    let next = s
        .agent_packet(stopped_packets, Duration::from_secs(20))
        .await
        .expect("the agent never spoke again after the interruption");
    assert!(
        next.at >= lead_done_at,
        "the agent spoke again while the lead was still talking"
    );
    // The lead's words reach the agent as a final caption (the listener sees it too); then the
    // agent's report must count them.
    let lead_id = s.lead.participant_id.clone();
    let final_caption = s
        .listener
        .wait_for(Duration::from_secs(15), |m| {
            matches!(m, ServerMessage::Caption { participant_id, is_final: true, text, .. }
                if *participant_id == lead_id && !text.trim().is_empty())
        })
        .await;
    let caption_after = lead_done_at.elapsed();
    assert!(
        final_caption.is_some(),
        "no final caption of the lead's words"
    );
    // With the words in, the agent goes on to the next question: a new utterance starts (after
    // the resumed greeting, if that is still playing), without re-asking the first.
    let caption_at = Instant::now();
    // The caption reaches the agent and this listener within milliseconds of each other, in
    // either order: an utterance the agent began just before the listener saw the caption is
    // its going on too.
    let went_on = s
        .utterance_after(
            (caption_at - Duration::from_millis(300)).max(lead_done_at),
            Duration::from_secs(12),
        )
        .await
        .expect("the agent did not go on after the lead's words came in");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = s.stop_agent().await;
    let kinds: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["who"] == "agent")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    println!(
        "talked over 2 s into the greeting: agent stopped {} ms later (greeting played \
         {greeting_secs:.1} s); spoke again {} ms after the lead finished; the lead's final \
         caption came {} ms after they finished; next utterance {} ms after the caption; \
         agent: {kinds:?}; total {:.1} s",
        stop_latency.as_millis(),
        (next.at - lead_done_at).as_millis(),
        caption_after.as_millis(),
        (went_on.at - caption_at).as_millis(),
        test_started.elapsed().as_secs_f64(),
    );
    println!(
        "agent report: events {} | stats {}",
        report["events"], report["stats"]
    );
    assert_eq!(report["stats"]["interruptions"], 1, "{report}");
    assert_eq!(kinds.first().copied(), Some("greeting"), "{kinds:?}");
    assert_eq!(kinds.get(1).copied(), Some("interrupted"), "{kinds:?}");
    // Then it goes on: with the lead's words in time, their turn ends and the next question
    // follows; when the words come later than the turn machine's false-interruption window
    // (1.5 s), it resumes the cut greeting instead. Either way, never over the lead.
    assert!(
        matches!(
            kinds.get(2).copied(),
            Some("question" | "follow_up" | "resumed")
        ),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"question") && !kinds.contains(&"reprompt"),
        "the answer given over the agent did not count: {kinds:?}"
    );
    assert_eq!(report["lead_score"]["need"], true, "{report}");
    assert!(
        test_started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        test_started.elapsed()
    );
    s.end().await;
}
