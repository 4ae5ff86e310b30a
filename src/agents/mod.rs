//! AI agent participants: dispatched into a room by the server, they join as members with role
//! `agent`, speak through a [`Voice`], listen through the room's transcription frames, take
//! turns like a person ([`conclave_media::turns`]), ask a question set and score the lead.
//!
//! ```text
//! POST /api/rooms/{room}/agent ─▶ AgentService::dispatch ─▶ session task (one per room)
//!   room frames (speaking, interim, final) ─▶ Turns ─▶ decisions ─▶ Conversation ─▶ Voice
//!   Voice (blocking thread, sentence by sentence) ─▶ 48 kHz PCM ─▶ Opus RTP, paced 20 ms
//!     ─▶ the agent's producer ─▶ every subscriber's leg
//!   each answer ─▶ RuleScorer ─▶ `lead_score` to hosts, the run row, GET .../agent
//! ```
//!
//! Store writes go through a writer task, so a slow database never delays a turn.

mod report;
mod session;

pub use report::{score_json, summary_json};

use crate::room::Open;
use crate::room::{Room, RoomManager};
use crate::store::{AgentRunRecord, ConversationEvent, QuestionSpec, Store};
use conclave_media::conversation::{Question, Script};
use conclave_media::lead::Category;
use conclave_media::voice::Voice;
use conclave_signaling::{ParticipantId, RoomName};
use dashmap::DashMap;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Default question set, used when a dispatch names none.
pub fn default_script() -> Script {
    let q = |text: &str, category, follow_up: Option<&str>| Question {
        text: text.to_owned(),
        category,
        follow_up: follow_up.map(str::to_owned),
    };
    Script {
        greeting: "Hi {name}, I'm the assistant for this call. I have a few quick questions."
            .to_owned(),
        questions: vec![
            q(
                "What problem are you hoping to solve?",
                Category::Need,
                Some("Is there something that is not working well today?"),
            ),
            q(
                "What budget do you have in mind for this?",
                Category::Budget,
                Some("Roughly what amount would that be?"),
            ),
            q(
                "Who makes the final decision on this?",
                Category::Authority,
                None,
            ),
            q(
                "When would you like to have it running?",
                Category::Timeline,
                Some("Is there a date you are aiming for?"),
            ),
        ],
        closing: "Thank you, that is everything I needed. Someone will follow up soon.".to_owned(),
    }
}

/// Parses a stored category name.
pub fn parse_category(s: &str) -> Option<Category> {
    Some(match s {
        "budget" => Category::Budget,
        "authority" => Category::Authority,
        "need" => Category::Need,
        "timeline" => Category::Timeline,
        "other" => Category::Other,
        _ => return None,
    })
}

/// A stored set as the conversation's script.
pub fn script_of(greeting: &str, closing: &str, questions: &[QuestionSpec]) -> Script {
    Script {
        greeting: greeting.to_owned(),
        closing: closing.to_owned(),
        questions: questions
            .iter()
            .map(|q| Question {
                text: q.text.clone(),
                category: parse_category(&q.category).unwrap_or(Category::Other),
                follow_up: q.follow_up.clone().filter(|f| !f.trim().is_empty()),
            })
            .collect(),
    }
}

/// What a dispatch asks for.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// The agent's display name.
    pub name: String,
    /// What it asks.
    pub script: Script,
    /// Stored set it came from.
    pub question_set_id: Option<i64>,
    /// Stored lead it talks to.
    pub lead_id: Option<i64>,
    /// The lead's name, for the greeting.
    pub lead_name: Option<String>,
    /// Only this identity's words are the lead's (default: every member that is neither a
    /// host nor an agent).
    pub lead_identity: Option<String>,
    /// The meeting's date, for relative dates ("by Friday").
    pub meeting_day: conclave_media::lead::Date,
    /// When to leave on its own.
    pub leave: LeaveRules,
}

/// When an agent leaves on its own (besides after its closing line, or when stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaveRules {
    /// Nobody but agents has come this long after it joined.
    pub nobody_came_ms: u64,
    /// Everyone else left this long ago.
    pub everyone_left_ms: u64,
    /// It has been in the room this long.
    pub max_duration_ms: Option<u64>,
}

impl Default for LeaveRules {
    /// A dispatch into a call already under way: leave 10 s after finding nobody.
    fn default() -> Self {
        Self {
            nobody_came_ms: 10_000,
            everyone_left_ms: 10_000,
            max_duration_ms: None,
        }
    }
}

/// Why a dispatch could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A named question set or lead does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Builds a dispatch: the script of question set `set_id` (the built-in one if `None`), the
/// lead's name from lead `lead_id` unless `lead_name` is given.
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    store: &Store,
    name: String,
    set_id: Option<i64>,
    lead_id: Option<i64>,
    lead_name: Option<String>,
    lead_identity: Option<String>,
    meeting_day: conclave_media::lead::Date,
    leave: LeaveRules,
) -> Result<Dispatch, PrepareError> {
    let script = match set_id {
        Some(id) => {
            let set = store
                .question_set(id)
                .await?
                .ok_or_else(|| PrepareError::NotFound(format!("no question set {id}")))?;
            script_of(&set.greeting, &set.closing, &set.questions)
        }
        None => default_script(),
    };
    let mut lead_name = lead_name;
    if let Some(id) = lead_id {
        let lead = store
            .lead(id)
            .await?
            .ok_or_else(|| PrepareError::NotFound(format!("no lead {id}")))?;
        lead_name.get_or_insert(lead.name);
    }
    Ok(Dispatch {
        name,
        script,
        question_set_id: set_id,
        lead_id,
        lead_name,
        lead_identity,
        meeting_day,
        leave,
    })
}

/// Why a dispatch failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An agent is already running in the room.
    #[error("an agent is already in room {0}")]
    AlreadyRunning(RoomName),
    /// No agent is running there.
    #[error("no agent in room {0}")]
    NotRunning(RoomName),
    /// The server has as many agents as it may run.
    #[error("the server already runs {0} agents")]
    TooMany(usize),
    /// Transcription (the agent's ears) or a voice is missing.
    #[error("{0}")]
    Unavailable(String),
    /// The voice is still loading; retry in a few seconds.
    #[error("the agent voice is still loading; retry shortly")]
    VoiceLoading,
    /// The room could not be entered.
    #[error("{0}")]
    Join(#[from] crate::room::JoinError),
    /// The database.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// A run's state as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// Room.
    pub room: String,
    /// Meeting, if the room is a meeting's.
    pub meeting_code: Option<String>,
    /// `running`, `finished`, `stopped`, `failed`, `interrupted`.
    pub status: String,
    /// The agent's participant id while it is in the room.
    pub participant_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Voice engine.
    pub voice: String,
    /// Stored run id.
    pub run_id: i64,
    /// Question set, if one was named.
    pub question_set_id: Option<i64>,
    /// Lead, if one was named.
    pub lead_id: Option<i64>,
    /// Question being asked (0-based), if any.
    pub question_index: Option<usize>,
    /// Number of questions.
    pub questions_total: usize,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    pub ended_at: Option<i64>,
    /// The latest score.
    pub score: serde_json::Value,
    /// Post-meeting summary, once finished or stopped.
    pub summary: Option<serde_json::Value>,
    /// Every turn so far.
    pub events: Vec<ConversationEvent>,
}

/// Counters rendered at `/metrics`.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Agents dispatched.
    pub dispatched: AtomicU64,
    /// Utterances started.
    pub utterances: AtomicU64,
    /// Utterances cut off by a person.
    pub interruptions: AtomicU64,
    /// Times playback paused for a voice over it (resumed, or then cut off).
    pub pauses: AtomicU64,
    /// Final transcripts recognised as the agent's own voice in a microphone (ignored).
    pub echoes: AtomicU64,
    /// Sentences the voice failed on (logged).
    pub voice_failures: AtomicU64,
    /// Audio frames not sent because the pacer fell behind (logged).
    pub frames_skipped: AtomicU64,
    /// Store writes that failed (logged).
    pub store_failures: AtomicU64,
}

pub(crate) struct Running {
    status: Arc<Mutex<AgentStatus>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The server's agents.
pub struct AgentService {
    rooms: Arc<RoomManager>,
    store: Store,
    /// Replaced once, when the Piper voice has loaded in the background.
    voice: std::sync::RwLock<Option<Arc<dyn Voice>>>,
    voice_loading: std::sync::atomic::AtomicBool,
    /// The pipelines judge pauses with an end-of-turn model (Smart Turn) when asked.
    turn_model: std::sync::atomic::AtomicBool,
    transcription: bool,
    max_agents: usize,
    running: DashMap<RoomName, Running>,
    stats: Arc<AgentStats>,
}

impl AgentService {
    /// Agents in `rooms`, speaking with `voice`, listening only if `transcription` is on.
    pub fn new(
        rooms: Arc<RoomManager>,
        store: Store,
        voice: Option<Arc<dyn Voice>>,
        transcription: bool,
        max_agents: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            rooms,
            store,
            voice: std::sync::RwLock::new(voice),
            voice_loading: std::sync::atomic::AtomicBool::new(false),
            turn_model: std::sync::atomic::AtomicBool::new(false),
            transcription,
            max_agents,
            running: DashMap::new(),
            stats: Arc::default(),
        })
    }

    /// Counters.
    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// The voice engine's name, if there is one.
    pub fn voice_name(&self) -> Option<String> {
        self.voice().map(|v| v.name().to_owned())
    }

    fn voice(&self) -> Option<Arc<dyn Voice>> {
        self.voice.read().expect("agent voice").clone()
    }

    /// Whether the audio pipelines can judge pauses with an end-of-turn model.
    pub fn set_turn_model(&self, available: bool) {
        self.turn_model.store(available, Ordering::Relaxed);
    }

    /// A better voice is loading (dispatches without a voice are asked to retry).
    pub fn set_voice_loading(&self, loading: bool) {
        self.voice_loading.store(loading, Ordering::Relaxed);
    }

    /// Uses `voice` for agents dispatched from now on.
    pub fn set_voice(&self, voice: Arc<dyn Voice>) {
        tracing::info!(voice = voice.name(), "agent voice ready");
        *self.voice.write().expect("agent voice") = Some(voice);
    }

    /// Agents running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Sends an agent into `room` (opened as `how` if it is not open yet).
    pub async fn dispatch(
        self: &Arc<Self>,
        room_name: &RoomName,
        how: &Open,
        d: Dispatch,
    ) -> Result<AgentStatus, AgentError> {
        if !self.transcription {
            return Err(AgentError::Unavailable(
                "agents need live transcription (start the server with a Whisper model)".into(),
            ));
        }
        if self.voice_loading.load(Ordering::Relaxed) {
            // The natural voice is seconds away; agents do not start with a lesser one.
            return Err(AgentError::VoiceLoading);
        }
        let Some(voice) = self.voice() else {
            return Err(AgentError::Unavailable(
                "no voice engine: run `conclave model install` (Piper) or install flite or espeak-ng".into(),
            ));
        };
        if self.running.len() >= self.max_agents {
            return Err(AgentError::TooMany(self.max_agents));
        }
        if self.running.contains_key(room_name) {
            return Err(AgentError::AlreadyRunning(room_name.clone()));
        }
        let room: Arc<Room> = self.rooms.open(room_name, how)?;
        let now = crate::clock::now_ms();
        let mut record = AgentRunRecord {
            id: 0,
            room: room_name.to_string(),
            meeting_code: room.meeting_code(),
            lead_id: d.lead_id,
            question_set_id: d.question_set_id,
            agent_name: d.name.clone(),
            status: "running".into(),
            score: None,
            summary: None,
            started_at: now,
            ended_at: None,
        };
        record.id = self.store.insert_agent_run(&record).await?;
        let id = ParticipantId(format!("PA_{}", crate::ids::random_id(12)));
        let status = Arc::new(Mutex::new(AgentStatus {
            room: room_name.to_string(),
            meeting_code: record.meeting_code.clone(),
            status: "running".into(),
            participant_id: Some(id.to_string()),
            name: d.name.clone(),
            voice: voice.name().to_owned(),
            run_id: record.id,
            question_set_id: d.question_set_id,
            lead_id: d.lead_id,
            question_index: None,
            questions_total: d.script.questions.len(),
            started_at: now,
            ended_at: None,
            score: score_json(&conclave_media::lead::LeadScorer::score(
                &conclave_media::lead::RuleScorer,
                &[],
                d.meeting_day,
            )),
            summary: None,
            events: Vec::new(),
        }));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        match self.running.entry(room_name.clone()) {
            dashmap::Entry::Occupied(_) => {
                return Err(AgentError::AlreadyRunning(room_name.clone()));
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(Running {
                    status: status.clone(),
                    stop: stop_tx,
                });
            }
        }
        self.stats.dispatched.fetch_add(1, Ordering::Relaxed);
        let svc = self.clone();
        let session = session::Session::new(
            room,
            id.clone(),
            d,
            voice,
            status.clone(),
            record,
            self.store.clone(),
            self.stats.clone(),
            self.turn_model.load(Ordering::Relaxed),
        );
        let name = room_name.clone();
        let span = tracing::info_span!("agent", room = %room_name, participant = %id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                session.run(stop_rx).await;
                svc.running.remove(&name);
                // The agent may have been the last member.
                svc.rooms.remove_if_closed(&name);
            },
            span,
        ));
        let s = status.lock().expect("agent status").clone();
        Ok(s)
    }

    /// Asks the room's agent to leave.
    pub fn stop(&self, room: &RoomName) -> Result<(), AgentError> {
        let r = self
            .running
            .get(room)
            .ok_or_else(|| AgentError::NotRunning(room.clone()))?;
        r.stop.send_replace(true);
        Ok(())
    }

    /// Asks every agent to leave (shutdown).
    pub fn stop_all(&self) {
        for r in self.running.iter() {
            r.stop.send_replace(true);
        }
    }

    /// The room's agent: the running one, else the latest stored run.
    pub async fn status(&self, room: &RoomName) -> Result<Option<AgentStatus>, AgentError> {
        if let Some(r) = self.running.get(room) {
            return Ok(Some(r.status.lock().expect("agent status").clone()));
        }
        let Some(run) = self.store.latest_agent_run(room.as_str()).await? else {
            return Ok(None);
        };
        let events = self.store.conversation_events(run.id).await?;
        Ok(Some(status_of_record(run, events)))
    }
}

/// A stored run as the API shows it.
pub fn status_of_record(run: AgentRunRecord, events: Vec<ConversationEvent>) -> AgentStatus {
    AgentStatus {
        room: run.room,
        meeting_code: run.meeting_code,
        status: run.status,
        participant_id: None,
        name: run.agent_name,
        voice: String::new(),
        run_id: run.id,
        question_set_id: run.question_set_id,
        lead_id: run.lead_id,
        question_index: None,
        questions_total: 0,
        started_at: run.started_at,
        ended_at: run.ended_at,
        score: run.score.unwrap_or(serde_json::Value::Null),
        summary: run.summary,
        events,
    }
}
