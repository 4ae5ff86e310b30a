//! A scripted lead on a call with a dispatched agent: shared by the agent tests and the
//! agent latency bench.

use super::client::{LiveSpeech, TestClient};
use super::speech::{piper_model, smart_turn_model, whisper_model};
use super::{api_key_auth, http, start_server, token, token_with};
use conclave::auth::Grants;
use conclave_signaling::ParticipantId;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The agent is done with a turn when its audio has been silent this long.
pub const TURN_GAP: Duration = Duration::from_millis(900);
/// The longest one agent turn is waited for once it has started.
pub const MAX_TURN: Duration = Duration::from_secs(60);

pub struct Call {
    /// Shared by the calls of a concurrent run.
    pub server: std::sync::Arc<conclave::server::RunningServer>,
    pub host: TestClient,
    pub lead: TestClient,
    pub speech: LiveSpeech,
    pub agent: ParticipantId,
    pub room: String,
    /// Agent packets already accounted to earlier turns.
    pub seen: usize,
}

/// One turn of the agent's audio as the lead heard it.
#[derive(Debug, Clone, Copy)]
pub struct Heard {
    pub first: Instant,
    pub last: Instant,
    pub packets: usize,
}

pub async fn api(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    // `Null`: no body at all (GET, DELETE, and POSTs that take none).
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, text) = http(addr, method, path, Some(&api_key_auth()), &body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A call on a server of its own.
pub async fn start_call(room: &str, set: Value) -> Call {
    join_call(std::sync::Arc::new(agent_server().await), room, set).await
}

/// A transcribing server with the product's agent defaults, its voice loaded.
pub async fn agent_server() -> conclave::server::RunningServer {
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let voice = tokio::task::spawn_blocking(piper_model).await.unwrap();
    let turn_model = tokio::task::spawn_blocking(smart_turn_model).await.unwrap();
    // The product's defaults: the Piper voice, Smart Turn judging the lead's pauses.
    let server = start_server(|a| {
        a.whisper_model = Some(model.clone());
        a.voice = Some("piper".into());
        a.piper_model = Some(voice.clone());
        a.turn_model = Some(turn_model.clone());
    })
    .await;
    assert!(
        server
            .state
            .transcription
            .as_ref()
            .is_some_and(|t| t.judges_turns()),
        "Smart Turn did not load"
    );
    let agents = server.state.agents.clone();
    assert!(
        super::eventually(Duration::from_secs(30), || agents.voice_name().as_deref()
            == Some("piper"))
        .await,
        "the Piper voice did not load"
    );
    server
}

/// A host and a lead join `room` on `server`, and an agent is dispatched with `set`.
pub async fn join_call(
    server: std::sync::Arc<conclave::server::RunningServer>,
    room: &str,
    set: Value,
) -> Call {
    let addr = server.http_addr;
    let admin = Grants {
        room_admin: true,
        ..Grants::default()
    };
    let host_token = token_with(
        room,
        "sales",
        admin,
        Duration::from_secs(600),
        SystemTime::now(),
    );
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
    /// Waits up to `timeout` for the agent's next turn to start, then for it to end (silence
    /// for [`TURN_GAP`]; a turn still playing after [`MAX_TURN`] is returned as it is). The
    /// timeout is for the start only: a turn that starts in time is never cut off by it.
    pub async fn agent_turn(&mut self, timeout: Duration) -> Option<Heard> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrivals = self.lead.audio_arrivals_from(&self.agent);
            if arrivals.len() > self.seen {
                let first = arrivals[self.seen].at;
                let last = arrivals.last().unwrap().at;
                let now = Instant::now();
                if now.duration_since(last) >= TURN_GAP || now.duration_since(first) >= MAX_TURN {
                    let turn = &arrivals[self.seen..];
                    let heard = Heard {
                        first,
                        last,
                        packets: turn.len(),
                    };
                    self.seen = arrivals.len();
                    return Some(heard);
                }
            } else if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the agent has said `n` lines that ask or close (greeting, question,
    /// follow-up, reprompt, summary; not acknowledgements), and its audio has then been silent
    /// for [`TURN_GAP`]: the moment a lead answers.
    pub async fn asked(&mut self, n: usize, timeout: Duration) -> Option<Heard> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status().await;
            let said = status["events"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter(|e| e["who"] == "agent")
                        .filter(|e| {
                            ["greeting", "question", "follow_up", "reprompt", "summary"]
                                .contains(&e["kind"].as_str().unwrap_or(""))
                        })
                        .count()
                })
                .unwrap_or(0);
            if said >= n {
                // Recorded as its synthesis starts, after earlier audio finished playing.
                self.seen = self.lead.audio_arrivals_from(&self.agent).len();
                let rest = deadline.saturating_duration_since(Instant::now());
                return self.agent_turn(rest).await;
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the agent has begun its `n`th asking line (see [`Call::asked`]) and returns
    /// when that line's first packet reached the lead (not the acknowledgement before it).
    pub async fn starts_line(&mut self, n: usize, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status().await;
            let said = status["events"].as_array().map_or(0, |e| {
                e.iter()
                    .filter(|e| e["who"] == "agent")
                    .filter(|e| {
                        ["greeting", "question", "follow_up", "reprompt", "summary"]
                            .contains(&e["kind"].as_str().unwrap_or(""))
                    })
                    .count()
            });
            if said >= n {
                // The line is recorded when its synthesis starts, after anything before it
                // finished playing: what arrived so far belongs to earlier lines.
                self.seen = self.lead.audio_arrivals_from(&self.agent).len();
                let rest = deadline.saturating_duration_since(Instant::now());
                return self.agent_starts(rest).await;
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the agent's audio starts again after `after`.
    pub async fn agent_starts(&self, timeout: Duration) -> Option<Instant> {
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
    pub async fn say(&self, pcm: &[f32]) -> (Instant, Instant) {
        let start = Instant::now();
        self.speech.say(pcm);
        while !self.speech.idle() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (start, Instant::now())
    }

    /// Agent packets that reached the lead between `from` and `to`.
    pub fn agent_packets_between(&self, from: Instant, to: Instant) -> usize {
        self.lead
            .audio_arrivals_from(&self.agent)
            .iter()
            .filter(|a| a.at >= from && a.at <= to)
            .count()
    }

    pub async fn status(&self) -> Value {
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
    pub async fn finished(&self, timeout: Duration) -> Value {
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
