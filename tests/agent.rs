//! The AI agent end to end with real audio: a scripted lead (a webrtc-rs participant that
//! speaks espeak-ng answers after each of the agent's turns ends, hearing the agent's audio
//! through the SFU) against a dispatched agent, with the real Whisper model and Silero VAD
//! listening. Runs: the whole question set with a follow-up; the lead interrupting the agent;
//! the lead saying "mm-hmm" while the agent talks.

mod common;

use common::client::{LiveSpeech, TestClient};
use common::speech::{piper_model, speak_48k, whisper_model};
use common::{api_key_auth, http, start_server, token, token_with};
use conclave::auth::Grants;
use conclave_signaling::{ParticipantId, ServerMessage};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// One scenario at a time: each runs a transcribing server, and three at once on two cores
/// would measure the machine, not the agent.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The agent is done with a turn when its audio has been silent this long.
const TURN_GAP: Duration = Duration::from_millis(900);

struct Call {
    server: conclave::server::RunningServer,
    host: TestClient,
    lead: TestClient,
    speech: LiveSpeech,
    agent: ParticipantId,
    room: String,
    /// Agent packets already accounted to earlier turns.
    seen: usize,
}

/// One turn of the agent's audio as the lead heard it.
#[derive(Debug, Clone, Copy)]
struct Heard {
    first: Instant,
    last: Instant,
    packets: usize,
}

async fn api(addr: std::net::SocketAddr, method: &str, path: &str, body: Value) -> (u16, Value) {
    let (status, text) = http(addr, method, path, Some(&api_key_auth()), &body.to_string()).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn start_call(room: &str, set: Value) -> Call {
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let voice = tokio::task::spawn_blocking(piper_model).await.unwrap();
    // The product's default voice: Piper.
    let server = start_server(|a| {
        a.whisper_model = Some(model.clone());
        a.voice = Some("piper".into());
        a.piper_model = Some(voice.clone());
    })
    .await;
    let agents = server.state.agents.clone();
    assert!(
        common::eventually(Duration::from_secs(30), || agents.voice_name().as_deref() == Some("piper")).await,
        "the Piper voice did not load"
    );
    let addr = server.http_addr;
    let admin = Grants {
        room_admin: true,
        ..Grants::default()
    };
    let host_token = token_with(room, "sales", admin, Duration::from_secs(600), SystemTime::now());
    let host = TestClient::join(addr, room, "Sam (sales)", &host_token, false).await;
    let (lead, speech) = TestClient::join_live(addr, room, "Dana", &token(room, "dana")).await;
    let (status, created) = api(addr, "POST", "/api/question-sets", set).await;
    assert_eq!(status, 201, "{created}");
    let (status, agent) = api(
        addr,
        "POST",
        &format!("/api/rooms/{room}/agent"),
        json!({"question_set_id": created["id"], "lead_name": "Dana", "meeting_day": "2026-12-01", "name": "Ava"}),
    )
    .await;
    assert_eq!(status, 202, "{agent}");
    let agent = ParticipantId(agent["participant_id"].as_str().unwrap().to_owned());
    Call {
        server,
        host,
        lead,
        speech,
        agent,
        room: room.to_owned(),
        seen: 0,
    }
}

impl Call {
    /// Waits for the agent's next turn to start and end (silence for [`TURN_GAP`]).
    async fn agent_turn(&mut self, timeout: Duration) -> Option<Heard> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrivals = self.lead.audio_arrivals_from(&self.agent);
            if arrivals.len() > self.seen {
                let last = arrivals.last().unwrap().at;
                if Instant::now().duration_since(last) >= TURN_GAP {
                    let turn = &arrivals[self.seen..];
                    let heard = Heard {
                        first: turn[0].at,
                        last,
                        packets: turn.len(),
                    };
                    self.seen = arrivals.len();
                    return Some(heard);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the agent's audio starts again after `after`.
    async fn agent_starts(&self, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrivals = self.lead.audio_arrivals_from(&self.agent);
            if arrivals.len() > self.seen {
                return Some(arrivals[self.seen].at);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Speaks `pcm` and returns when the last of it was sent.
    async fn say(&self, pcm: &[f32]) -> (Instant, Instant) {
        let start = Instant::now();
        self.speech.say(pcm);
        while !self.speech.idle() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (start, Instant::now())
    }

    /// Agent packets that reached the lead between `from` and `to`.
    fn agent_packets_between(&self, from: Instant, to: Instant) -> usize {
        self.lead
            .audio_arrivals_from(&self.agent)
            .iter()
            .filter(|a| a.at >= from && a.at <= to)
            .count()
    }

    async fn status(&self) -> Value {
        let (code, v) = api(
            self.server.http_addr,
            "GET",
            &format!("/api/rooms/{}/agent", self.room),
            Value::Null,
        )
        .await;
        assert_eq!(code, 200, "{v}");
        v
    }

    /// Waits for the agent to finish (its status leaves `running`).
    async fn finished(&self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.status().await;
            if v["status"] != "running" || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn kinds(status: &Value) -> Vec<String> {
    status["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["who"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn bant_set() -> Value {
    json!({
        "name": "Discovery",
        "greeting": "Hi {name}, I'm Ava.",
        "closing": "Thanks, talk soon.",
        "questions": [
            {"text": "What problem are you trying to solve?", "category": "need"},
            {"text": "What budget do you have for this?", "category": "budget",
             "follow_up": "Roughly what amount would that be?"},
            {"text": "Who makes the final decision?", "category": "authority"},
            {"text": "When do you need it running?", "category": "timeline"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_lead_is_asked_every_question_in_order_and_scored() {
    let _serial = SERIAL.lock().await;
    let mut call = start_call("discovery", bant_set()).await;
    // The lead answers whatever was asked, in this order; the second answer lacks an amount,
    // so the agent must follow up before moving on.
    let answers = [
        "The main problem is that our old tool drops calls, and we are losing customers.",
        "We do have some money set aside for this.",
        "About one hundred thousand dollars for the first year.",
        "I make the final call on this.",
        "We want to be live by the end of February.",
    ];
    let speech: Vec<Vec<f32>> = answers.iter().map(|a| speak_48k(a, &std::env::temp_dir())).collect();
    let mut latencies = Vec::new();
    let mut overlaps = Vec::new();
    for (i, pcm) in speech.iter().enumerate() {
        let heard = call
            .agent_turn(Duration::from_secs(40))
            .await
            .unwrap_or_else(|| panic!("agent turn {i} never came"));
        assert!(heard.packets > 25, "turn {i}: {} packets", heard.packets);
        let (start, end) = call.say(pcm).await;
        // Never over the lead: agent audio while the lead speaks.
        overlaps.push(call.agent_packets_between(start, end) as f64 * 20.0);
        let next = call
            .agent_starts(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("agent did not answer answer {i}"));
        latencies.push(next.duration_since(end).as_secs_f64() * 1_000.0);
    }
    // The summary and the closing.
    let summary = call.agent_turn(Duration::from_secs(40)).await.expect("summary");
    assert!(summary.packets > 50, "summary: {} packets", summary.packets);
    let status = call.finished(Duration::from_secs(20)).await;
    eprintln!("events: {:#?}", status["events"]);
    eprintln!("end of lead speech -> agent's first audio at the lead, ms: {latencies:?}");
    eprintln!("agent audio during lead speech, ms: {overlaps:?}");
    assert_eq!(status["status"], "finished", "{status}");
    assert_eq!(
        kinds(&status).iter().filter(|k| k.starts_with("agent:")).cloned().collect::<Vec<_>>(),
        vec!["agent:greeting", "agent:question", "agent:follow_up", "agent:question", "agent:question", "agent:summary"],
        "{status}"
    );
    let questions: Vec<&str> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["who"] == "agent")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(questions[0].ends_with("What problem are you trying to solve?"));
    assert!(questions[1].ends_with("What budget do you have for this?"));
    assert!(questions[3].ends_with("Who makes the final decision?"));
    assert!(questions[4].ends_with("When do you need it running?"));
    let score = &status["score"];
    assert_eq!(score["budget"]["kind"], "amount", "{score}");
    assert_eq!(score["budget"]["amount"].as_f64(), Some(100_000.0), "{score}");
    assert_eq!(score["budget"]["currency"], "USD");
    assert_eq!(score["authority"], "decision_maker", "{score}");
    assert_eq!(score["need"], true, "{score}");
    assert_eq!(score["timeline_by"], "2027-02-28", "{score}");
    assert_eq!(score["band"], "hot", "{score}");
    assert!(
        score["evidence"].as_array().unwrap().iter().any(|e| e["criterion"] == "budget"
            && e["quote"].as_str().unwrap().to_lowercase().contains("first year")),
        "{score}"
    );
    assert!(status["summary"]["key_points"].as_array().unwrap().len() >= 4, "{status}");
    // The spoken summary says what was heard.
    let said = questions.last().unwrap();
    assert!(said.contains("100k dollars") && said.contains("February 28, 2027"), "{said}");
    for (i, o) in overlaps.iter().enumerate() {
        assert!(*o <= 300.0, "agent talked over answer {i} for {o} ms");
    }
    let p50 = percentile(&mut latencies.clone(), 0.5);
    eprintln!("p50 {p50:.0} ms");
    assert!(p50 < 2_500.0, "agent answers too slowly: {latencies:?}");
    // The host saw the score fill in live.
    let pushed = call
        .host
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::LeadScore { score, .. } if score["band"] == "hot")
        })
        .await;
    assert!(pushed.is_some(), "the host never got a hot lead_score");
    // Still readable after everyone left and the room closed.
    call.lead.leave().await;
    call.host.leave().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = api(
        call.server.http_addr,
        "GET",
        "/api/rooms/discovery/agent",
        Value::Null,
    )
    .await;
    assert_eq!(after.0, 200);
    assert_eq!(after.1["score"]["band"], "hot");
    assert_eq!(after.1["status"], "finished");
}

fn long_set() -> Value {
    json!({
        "name": "Long",
        "greeting": "Hi {name}.",
        "closing": "Thanks.",
        "questions": [
            {"text": "What problem are you trying to solve?", "category": "need"},
            {"text": "Thinking about the next year and everything your team has planned, and keeping in mind that prices depend on the number of seats and the support level you choose, what budget do you have in mind for this project?", "category": "budget"},
            {"text": "Who makes the final decision?", "category": "authority"}
        ]
    })
}

/// Plays the first question and answers it, then returns when the long second question starts.
async fn into_long_question(call: &mut Call) -> Instant {
    call.agent_turn(Duration::from_secs(40)).await.expect("greeting");
    let pcm = speak_48k(
        "The main problem is that our old tool drops calls, and we are losing customers.",
        &std::env::temp_dir(),
    );
    call.say(&pcm).await;
    call.agent_starts(Duration::from_secs(15)).await.expect("second question starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_talking_over_the_agent_stops_it_and_the_answer_counts() {
    let _serial = SERIAL.lock().await;
    let mut call = start_call("interrupt", long_set()).await;
    let started = into_long_question(&mut call).await;
    tokio::time::sleep_until(started + Duration::from_millis(1_500)).await;
    let answer = speak_48k(
        "Sorry to cut in, we have about fifty thousand euros for it.",
        &std::env::temp_dir(),
    );
    let barge = Instant::now();
    call.say(&answer).await;
    let cut = call.agent_turn(Duration::from_secs(20)).await.expect("cut turn");
    let stop_ms = cut.last.duration_since(barge).as_millis();
    let played_ms = cut.last.duration_since(cut.first).as_millis();
    eprintln!("lead started over the agent -> agent's last packet: {stop_ms} ms (played {played_ms} ms of the question)");
    // The full question is ~14 s of speech; cut off well before.
    assert!(played_ms < 6_000, "the agent did not stop: played {played_ms} ms");
    assert!(stop_ms < 2_000, "the agent took {stop_ms} ms to stop");
    // The answer counted: next comes the authority question.
    let next = call.agent_turn(Duration::from_secs(20)).await.expect("next question");
    assert!(next.packets > 25);
    let status = call.status().await;
    eprintln!("{:#?}", status["events"]);
    let k = kinds(&status);
    assert!(k.contains(&"agent:interruption".to_owned()), "{k:?}");
    let last_q = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["who"] == "agent" && e["kind"] == "question")
        .unwrap();
    assert!(last_q["text"].as_str().unwrap().ends_with("Who makes the final decision?"), "{status}");
    assert_eq!(status["score"]["budget"]["amount"].as_f64(), Some(50_000.0), "{status}");
    assert_eq!(status["score"]["budget"]["currency"], "EUR", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mm_hmm_while_the_agent_talks_does_not_interrupt_it() {
    let _serial = SERIAL.lock().await;
    let mut call = start_call("backchannel", long_set()).await;
    let started = into_long_question(&mut call).await;
    tokio::time::sleep_until(started + Duration::from_millis(2_000)).await;
    call.say(&speak_48k("Mm-hmm.", &std::env::temp_dir())).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    call.say(&speak_48k("Right.", &std::env::temp_dir())).await;
    let turn = call.agent_turn(Duration::from_secs(30)).await.expect("long question");
    let played_ms = turn.last.duration_since(turn.first).as_millis();
    eprintln!("long question played for {played_ms} ms with two backchannels");
    let status = call.status().await;
    eprintln!("{:#?}", status["events"]);
    let k = kinds(&status);
    assert!(!k.contains(&"agent:interruption".to_owned()), "{k:?}");
    assert!(played_ms > 9_000, "the question was cut: {played_ms} ms");
}
