//! One agent in one room: joins, listens to the room's frames, talks, leaves.

use super::{AgentStats, AgentStatus, Dispatch, score_json, summary_json};
use crate::room::{MemberEvent, MemberInfo, ProducerSpec, Room};
use crate::store::{AgentRunRecord, ConversationEvent, Store};
use conclave_media::conversation::{Conversation, Say, SayKind};
use conclave_media::frames::Frame;
use conclave_media::lead::{LeadScore, LeadScorer, RuleScorer};
use conclave_media::packetize::{FRAME, OpusPacketizer, Pacer};
use conclave_media::turns::{TurnConfig, TurnDecision, TurnEvent, Turns};
use conclave_media::voice::{Voice, VoiceError, split_sentences};
use conclave_signaling::{ParticipantId, Role, ServerMessage, TrackId, TrackKind};
use rtc::rtp;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// How long the agent waits for a lead to be in the room before greeting.
const GREET_AFTER_MS: u64 = 1_000;
/// How long a turn's end waits for the lead's final transcript.
const FINAL_WAIT_MS: u64 = 4_000;
/// Frames sent at once after a late wake-up; beyond that they are skipped (and counted).
const MAX_BURST_FRAMES: u64 = 5;
/// Words heard over a question that make it answered (fewer may be a mis-heard "mm-hmm").
const MIN_ANSWER_WORDS: usize = 3;
/// Silence after the pipeline's end of utterance that ends the lead's turn.
const END_OF_TURN_MS: u64 = 200;
/// The same when an end-of-turn model judges pauses but its verdict has not come (it
/// usually comes 100-150 ms after the pipeline's end of utterance).
const END_OF_TURN_UNJUDGED_MS: u64 = 400;
/// Voice over the agent, counted from the pipeline's speech-start edge (which itself fires
/// 200 ms into the voice), after which the agent pauses: 350 ms of voice in all, so the agent
/// is silent at the listener about 0.5 s after someone starts over it.
const BARGE_IN_MS: u64 = 150;
/// What the agent says the moment the lead's turn ends, while their words are transcribed.
const ACKNOWLEDGEMENT: &str = "Okay.";
/// Opus bitrate of the agent's voice.
const VOICE_BITRATE: i32 = 32_000;
/// Sentences synthesized ahead of playback.
const SYNTH_AHEAD: usize = 4;

enum Write {
    Event(ConversationEvent),
    Run(AgentRunRecord),
}

async fn writer(store: Store, run_id: i64, mut rx: mpsc::Receiver<Write>, stats: Arc<AgentStats>) {
    while let Some(w) = rx.recv().await {
        let r = match &w {
            Write::Event(e) => store.insert_conversation_event(run_id, e).await,
            Write::Run(r) => store.update_agent_run(r).await,
        };
        if let Err(e) = r {
            stats.store_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "agent store write failed");
        }
    }
}

fn opus_codec() -> rtc::rtp_transceiver::rtp_sender::RTCRtpCodec {
    rtc::rtp_transceiver::rtp_sender::RTCRtpCodec {
        mime_type: "audio/opus".to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// What is being played.
struct Playing {
    say: Say,
    sentences: Vec<String>,
    /// Synthesized sentences: (index, samples).
    rx: mpsc::Receiver<(usize, Result<Vec<i16>, VoiceError>)>,
    queue: VecDeque<(usize, Vec<i16>)>,
    current: Option<(usize, Vec<i16>, usize)>,
    synth_done: bool,
    announced: bool,
}

pub(super) struct Session {
    room: Arc<Room>,
    id: ParticipantId,
    d: Dispatch,
    voice: Arc<dyn Voice>,
    status: Arc<Mutex<AgentStatus>>,
    record: AgentRunRecord,
    store: Store,
    stats: Arc<AgentStats>,
    /// The pipelines can judge pauses (Smart Turn): ask them to while this agent listens.
    turn_model: bool,
}

/// Keeps the room's end-of-turn verdicts on while the agent is in it.
struct VerdictsWanted(Arc<std::sync::atomic::AtomicBool>);

impl Drop for VerdictsWanted {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

struct Live {
    turns: Turns,
    conv: Conversation,
    score: LeadScore,
    playing: Option<Playing>,
    /// Interrupted utterance and the sentence it was cut in, for a resume.
    cut: Option<(Say, usize)>,
    packetizer: OpusPacketizer,
    pacer: Option<Pacer>,
    last_packet_ms: Option<u64>,
    ssrc: u32,
    /// Lead speakers whose final transcript is still to come.
    awaiting_final: Vec<String>,
    /// A turn ended and the agent waits for the final to decide what to say, until then.
    speak_pending: Option<u64>,
    roles: HashMap<String, bool>,
    lead_seen_at: Option<u64>,
    alone_since: Option<u64>,
    /// Someone other than agents was in the room since it joined.
    anyone_seen: bool,
    /// When it joined, on the room clock.
    joined_at: u64,
    greeted: bool,
    done_at: Option<u64>,
    writes: mpsc::Sender<Write>,
    /// [`ACKNOWLEDGEMENT`], synthesized once at the start.
    ack: Option<Arc<Vec<i16>>>,
    /// Playback holds its place: someone's voice came over it, words not known yet.
    paused: bool,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        room: Arc<Room>,
        id: ParticipantId,
        d: Dispatch,
        voice: Arc<dyn Voice>,
        status: Arc<Mutex<AgentStatus>>,
        record: AgentRunRecord,
        store: Store,
        stats: Arc<AgentStats>,
        turn_model: bool,
    ) -> Self {
        Self {
            room,
            id,
            d,
            voice,
            status,
            record,
            store,
            stats,
            turn_model,
        }
    }

    fn now_ms(&self) -> u64 {
        self.room.opened().elapsed().as_millis() as u64
    }

    pub(super) async fn run(self, mut stop: watch::Receiver<bool>) {
        let (wtx, wrx) = mpsc::channel(1_024);
        let writer = tokio::spawn(writer(
            self.store.clone(),
            self.record.id,
            wrx,
            self.stats.clone(),
        ));
        let outcome = self.converse(&mut stop, wtx.clone()).await;
        let (status, score) = match outcome {
            Ok((finished, score)) => (if finished { "finished" } else { "stopped" }, score),
            Err((e, score)) => {
                tracing::warn!(error = %e, "agent failed");
                ("failed", score)
            }
        };
        let mut record = self.record.clone();
        record.status = status.to_owned();
        record.score = Some(score_json(&score));
        record.summary = Some(summary_json(&score));
        record.ended_at = Some(crate::clock::now_ms());
        {
            let mut s = self.status.lock().expect("agent status");
            s.status = record.status.clone();
            s.summary = record.summary.clone();
            s.score = record.score.clone().unwrap_or_default();
            s.ended_at = record.ended_at;
            s.participant_id = None;
        }
        self.push_to_hosts(status, &score);
        let _ = wtx.send(Write::Run(record)).await;
        drop(wtx);
        let _ = writer.await;
        tracing::info!(status, "agent left");
    }

    fn push_to_hosts(&self, status: &str, score: &LeadScore) {
        let s = self.status.lock().expect("agent status");
        let msg = ServerMessage::LeadScore {
            status: status.to_owned(),
            question_index: s.question_index.map(|i| i + 1),
            questions_total: s.questions_total,
            score: score_json(score),
        };
        drop(s);
        self.room.signal_role(Role::Host, msg);
    }

    fn is_lead(&self, live: &mut Live, speaker: &str) -> bool {
        if let Some(&known) = live.roles.get(speaker) {
            return known;
        }
        let Some(m) = self.room.member(&ParticipantId(speaker.to_owned())) else {
            return false;
        };
        let lead = m.id != self.id
            && !matches!(m.role, Some(Role::Host) | Some(Role::Agent))
            && self
                .d
                .lead_identity
                .as_ref()
                .is_none_or(|want| *want == m.identity);
        live.roles.insert(speaker.to_owned(), lead);
        lead
    }

    fn record(&self, live: &Live, who: &str, kind: &str, text: &str, at_ms: u64) {
        let e = ConversationEvent {
            at_ms: at_ms as i64,
            who: who.to_owned(),
            kind: kind.to_owned(),
            text: text.to_owned(),
        };
        self.status
            .lock()
            .expect("agent status")
            .events
            .push(e.clone());
        if live.writes.try_send(Write::Event(e)).is_err() {
            self.stats.store_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("agent store queue full; conversation event not stored");
        }
    }

    async fn converse(
        &self,
        stop: &mut watch::Receiver<bool>,
        writes: mpsc::Sender<Write>,
    ) -> Result<(bool, LeadScore), (String, LeadScore)> {
        let empty = RuleScorer.score(&[], self.d.meeting_day);
        let info = MemberInfo {
            id: self.id.clone(),
            identity: format!("agent-{}", crate::ids::random_id(8)),
            name: self.d.name.clone(),
            role: Some(Role::Agent),
            can_subscribe: false,
        };
        let (mut link, _others) = self
            .room
            .join(info)
            .map_err(|e| (e.to_string(), empty.clone()))?;
        let result = self.talk(stop, &mut link, writes).await;
        self.room.leave(&self.id);
        result
    }

    async fn talk(
        &self,
        stop: &mut watch::Receiver<bool>,
        link: &mut crate::room::MemberLink,
        writes: mpsc::Sender<Write>,
    ) -> Result<(bool, LeadScore), (String, LeadScore)> {
        let empty = RuleScorer.score(&[], self.d.meeting_day);
        let fail = |e: String| (e, empty.clone());
        let producer = self
            .room
            .publish(ProducerSpec {
                id: TrackId(format!("TR_{}", crate::ids::random_id(12))),
                publisher: self.id.clone(),
                kind: TrackKind::Audio,
                codec: opus_codec(),
                transcribe: false,
            })
            .map_err(|e| fail(e.to_string()))?;
        let mut frames: broadcast::Receiver<Frame> = self
            .room
            .frames()
            .ok_or_else(|| fail("the room closed".into()))?
            .subscribe();
        let packetizer = OpusPacketizer::new(rand::random(), rand::random(), VOICE_BITRATE)
            .map_err(|e| fail(e.to_string()))?;
        let _verdicts = self.turn_model.then(|| {
            let flag = self.room.turn_verdicts().clone();
            flag.store(true, Ordering::Relaxed);
            VerdictsWanted(flag)
        });
        let mut live = Live {
            // The pipeline already waited 300 ms of silence before it said the lead stopped:
            // 200 ms more makes LiveKit's 0.5 s minimum endpointing delay. With Smart Turn, a
            // "complete" verdict ends the turn when it comes (~0.4 s after the last word), an
            // "incomplete" one waits 1.5 s.
            turns: Turns::new(TurnConfig {
                end_ms: if self.turn_model {
                    END_OF_TURN_UNJUDGED_MS
                } else {
                    END_OF_TURN_MS
                },
                barge_in_ms: BARGE_IN_MS,
                ..TurnConfig::default()
            }),
            conv: Conversation::new(
                self.d.script.clone(),
                self.d.lead_name.clone(),
                self.d.meeting_day,
            ),
            score: empty.clone(),
            playing: None,
            cut: None,
            packetizer,
            pacer: None,
            last_packet_ms: None,
            ssrc: rand::random(),
            awaiting_final: Vec::new(),
            speak_pending: None,
            roles: HashMap::new(),
            lead_seen_at: None,
            alone_since: None,
            anyone_seen: false,
            joined_at: self.now_ms(),
            greeted: false,
            done_at: None,
            writes,
            ack: None,
            paused: false,
        };
        let voice = self.voice.clone();
        let ack_pcm = tokio::task::spawn_blocking(move || voice.synthesize(ACKNOWLEDGEMENT));
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_turn_tick = 0u64;
        match ack_pcm.await {
            Ok(Ok(pcm)) => live.ack = Some(Arc::new(pcm)),
            Ok(Err(e)) => tracing::warn!(error = %e, "acknowledgement not synthesized"),
            Err(e) => tracing::warn!(error = %e, "acknowledgement task failed"),
        }
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => {
                    self.stop_playing(&mut live, &producer);
                    return Ok((false, live.score));
                }
                event = link.events.recv() => match event {
                    None | Some(MemberEvent::Close { .. }) | Some(MemberEvent::Farewell(_)) => {
                        return Ok((live.conv.finished(), live.score));
                    }
                    Some(_) => {}
                },
                _ = link.kicked.wait() => return Ok((live.conv.finished(), live.score)),
                frame = frames.recv() => match frame {
                    Ok(f) => self.on_frame(&mut live, f),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "agent fell behind the room's frames");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Ok((live.conv.finished(), live.score));
                    }
                },
                _ = tick.tick() => {
                    let now = self.now_ms();
                    self.play(&mut live, &producer, now);
                    if now >= last_turn_tick + 100 {
                        last_turn_tick = now;
                        if let Some(d) = live.turns.on(TurnEvent::Tick, now) {
                            self.decide(&mut live, &producer, d, now);
                        }
                        if self.housekeeping(&mut live, now) {
                            return Ok((live.conv.finished(), live.score));
                        }
                    }
                }
            }
        }
    }

    /// Greets when a lead is here, leaves when alone or done. Returns whether to leave.
    fn housekeeping(&self, live: &mut Live, now: u64) -> bool {
        let (people, ids) = self.room.with_members(|members| {
            let mut people = 0usize;
            let mut ids = Vec::new();
            for m in members.filter(|m| m.role != Some(Role::Agent)) {
                people += 1;
                // Only members not yet classified need a look-up.
                if !live.roles.contains_key(m.id.as_str()) || live.roles[m.id.as_str()] {
                    ids.push(m.id.to_string());
                }
            }
            (people, ids)
        });
        let rules = self.d.leave;
        if people == 0 {
            let since = *live.alone_since.get_or_insert(now);
            let (limit, why) = if live.anyone_seen {
                (rules.everyone_left_ms, "everyone else left")
            } else {
                (rules.nobody_came_ms, "nobody came")
            };
            if now >= since + limit {
                tracing::info!(why, "leaving");
                return true;
            }
        } else {
            live.alone_since = None;
            live.anyone_seen = true;
        }
        if let Some(max) = rules.max_duration_ms
            && now >= live.joined_at + max
        {
            tracing::info!(max_ms = max, "leaving: maximum duration");
            return true;
        }
        let lead_here = ids.iter().any(|id| self.is_lead(live, id));
        if lead_here {
            live.lead_seen_at.get_or_insert(now);
        }
        if !live.greeted
            && live.lead_seen_at.is_some_and(|t| now >= t + GREET_AFTER_MS)
            && !live.turns.someone_speaking()
            && live.playing.is_none()
        {
            live.greeted = true;
            let say = live.conv.opening();
            self.speak(live, say, 0, now);
        }
        if let Some(t) = live.speak_pending
            && live.playing.is_none()
            && !live.turns.someone_speaking()
            && (live.awaiting_final.is_empty() || now >= t + FINAL_WAIT_MS)
        {
            live.speak_pending = None;
            tracing::debug!(now, "answering");
            self.answer_turn(live, now);
        }
        if let Some(t) = live.done_at
            && now >= t + 1_500
        {
            return true;
        }
        false
    }

    fn on_frame(&self, live: &mut Live, frame: Frame) {
        let now = self.now_ms();
        let (speaker, event) = match frame {
            Frame::UserStartedSpeaking(e) => {
                let who = e.speaker.clone();
                (e.speaker, TurnEvent::PersonStarted { who })
            }
            Frame::UserStoppedSpeaking(e) => {
                tracing::debug!(now, speaker = %e.speaker, at = e.at_ms, "stopped speaking");
                if self.is_lead(live, &e.speaker) && !live.awaiting_final.contains(&e.speaker) {
                    live.awaiting_final.push(e.speaker.clone());
                }
                let who = e.speaker.clone();
                (e.speaker, TurnEvent::PersonStopped { who })
            }
            Frame::InterimTranscript(t) => {
                if live
                    .turns
                    .echo_of_agent(&t.speaker, &t.text, t.start_ms, t.end_ms)
                {
                    tracing::debug!(now, speaker = %t.speaker, text = %t.text, "echo of the agent's voice ignored");
                    return;
                }
                let who = t.speaker.clone();
                (t.speaker, TurnEvent::Transcript { who, text: t.text })
            }
            Frame::FinalTranscript(t) => {
                tracing::debug!(now, speaker = %t.speaker, end = t.end_ms, text = %t.text, "final");
                live.awaiting_final.retain(|s| *s != t.speaker);
                if live
                    .turns
                    .echo_of_agent(&t.speaker, &t.text, t.start_ms, t.end_ms)
                {
                    // The agent's own voice in the lead's microphone: no answer, no turn.
                    self.stats.echoes.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(now, speaker = %t.speaker, text = %t.text, "echo of the agent's voice ignored");
                    return;
                }
                let text = t.text.trim().to_owned();
                if self.is_lead(live, &t.speaker) && crate::transcription::is_speech(&text) {
                    // Acknowledgements are kept but answer nothing; anything else is an answer,
                    // even said over the agent (if it is three words or more).
                    // A word or two said over the agent is taken the way the turn engine
                    // takes it: an acknowledgement, whatever the transcript made of it.
                    let over_agent = live.turns.said_over_agent(t.start_ms, t.end_ms);
                    let backchannel = live.turns.acknowledges(&text, over_agent);
                    let kind = if backchannel { "backchannel" } else { "answer" };
                    self.record(live, "lead", kind, &text, t.start_ms);
                    if !backchannel {
                        live.conv.hear(&text, t.start_ms);
                        live.score = RuleScorer.score(live.conv.answers(), self.d.meeting_day);
                        {
                            let mut s = self.status.lock().expect("agent status");
                            s.score = score_json(&live.score);
                        }
                        let mut r = self.record.clone();
                        r.score = Some(score_json(&live.score));
                        let _ = live.writes.try_send(Write::Run(r));
                        self.push_to_hosts("running", &live.score);
                    }
                }
                let who = t.speaker.clone();
                (t.speaker, TurnEvent::Transcript { who, text })
            }
            Frame::TranscriptGap(g) => {
                live.awaiting_final.retain(|s| *s != g.speaker);
                return;
            }
            Frame::EndOfTurn(v) => {
                tracing::debug!(now, speaker = %v.speaker, probability = v.probability, "end-of-turn verdict");
                let who = v.speaker.clone();
                (
                    v.speaker,
                    TurnEvent::EndOfTurn {
                        who,
                        probability: v.probability,
                    },
                )
            }
            _ => return,
        };
        if speaker == self.id.as_str() {
            return;
        }
        if let Some(d) = live.turns.on(event, now) {
            // A stop or pause is applied at once; the next audio tick (<= 10 ms) sends nothing.
            self.pending_decision(live, d, now);
        }
    }

    /// Stops sending at once and holds the place (the next audio tick sends nothing).
    fn pause(&self, live: &mut Live, now: u64) {
        let Some(p) = live.playing.as_mut() else {
            return;
        };
        if live.paused {
            return;
        }
        live.paused = true;
        live.pacer = None;
        self.stats.pauses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(now, "voice over the agent: paused");
        if p.announced {
            self.room
                .broadcast(crate::signal::speaking(&self.id, false));
        }
    }

    fn pending_decision(&self, live: &mut Live, d: TurnDecision, now: u64) {
        tracing::debug!(now, decision = ?d, paused = live.paused, playing = live.playing.is_some(), "turn decision");
        match d {
            TurnDecision::Speak if live.playing.is_some() => {
                // A late transcript of a turn already answered: nothing new to say.
                tracing::debug!(now, "turn over while the agent talks; ignored");
            }
            TurnDecision::Speak => {
                tracing::debug!(now, awaiting_final = live.awaiting_final.len(), "turn over");
                live.speak_pending = Some(now);
                // Acknowledge now, as a person would (the words may still be in Whisper),
                // and say the rest once they are in and the next line is synthesized. Also
                // after an interruption: "Okay." is what a person says to one.
                if live.playing.is_none()
                    && live.conv.current().is_some()
                    && !live.conv.finished()
                    && let Some(pcm) = live.ack.clone()
                {
                    live.conv.acknowledged();
                    self.play_clip(live, ACKNOWLEDGEMENT, (*pcm).clone(), now);
                }
            }
            TurnDecision::Resume if live.paused => {
                live.paused = false;
                tracing::debug!(now, "resumed where it paused");
                if let Some(p) = live.playing.as_ref()
                    && p.announced
                {
                    self.room.broadcast(crate::signal::speaking(&self.id, true));
                }
            }
            TurnDecision::Resume => {
                if let Some((say, from)) = live.cut.take() {
                    self.record(live, "agent", "resumed", &say.text, now);
                    self.speak(live, say, from, now);
                }
            }
            TurnDecision::Reprompt if live.conv.answer_words() >= MIN_ANSWER_WORDS => {
                live.speak_pending = Some(now);
            }
            TurnDecision::Reprompt => {
                if let Some(say) = live.conv.reprompt() {
                    self.speak(live, say, 0, now);
                }
            }
            TurnDecision::MoveOn => {
                if let Some(say) = live.conv.move_on(&live.score) {
                    self.speak(live, say, 0, now);
                }
            }
            TurnDecision::Stop => self.cut_off(live, now),
            TurnDecision::Pause => self.pause(live, now),
        }
    }

    fn decide(
        &self,
        live: &mut Live,
        _producer: &crate::room::Producer,
        d: TurnDecision,
        now: u64,
    ) {
        self.pending_decision(live, d, now);
    }

    /// The lead's turn is over and their words are in: say what comes next.
    fn answer_turn(&self, live: &mut Live, now: u64) {
        if live.playing.is_some() {
            return;
        }
        if live.cut.is_some() && !live.conv.has_answer() {
            // Interrupted with words that were not the lead's: finish the question.
            if let Some((say, from)) = live.cut.take() {
                self.speak(live, say, from, now);
            }
            return;
        }
        if !live.conv.has_answer() {
            return;
        }
        live.cut = None;
        if let Some(say) = live.conv.next(&live.score) {
            self.speak(live, say, 0, now);
        }
    }

    /// Starts saying `say` from sentence `from`: synthesis runs on a blocking thread, a few
    /// sentences ahead of playback.
    fn speak(&self, live: &mut Live, say: Say, from: usize, now: u64) {
        let sentences = split_sentences(&say.text);
        // Whatever turn was waiting is answered by this line.
        live.speak_pending = None;
        let (tx, rx) = mpsc::channel(SYNTH_AHEAD);
        let voice = self.voice.clone();
        let todo: Vec<(usize, String)> = sentences.iter().cloned().enumerate().skip(from).collect();
        tokio::task::spawn_blocking(move || {
            for (i, s) in todo {
                let r = voice.synthesize(&s);
                if tx.blocking_send((i, r)).is_err() {
                    return;
                }
            }
        });
        self.stats.utterances.fetch_add(1, Ordering::Relaxed);
        if from == 0 {
            self.record(live, "agent", say.kind.as_str(), &say.text, now);
        }
        if let Some(i) = say.index {
            self.status.lock().expect("agent status").question_index = Some(i);
        }
        live.playing = Some(Playing {
            say,
            sentences,
            rx,
            queue: VecDeque::new(),
            current: None,
            synth_done: false,
            announced: false,
        });
    }

    /// Plays ready-made audio (the acknowledgement).
    fn play_clip(&self, live: &mut Live, text: &str, pcm: Vec<i16>, now: u64) {
        let (_, rx) = mpsc::channel(1);
        self.record(live, "agent", "acknowledgement", text, now);
        live.playing = Some(Playing {
            say: Say {
                text: text.to_owned(),
                kind: SayKind::Question,
                question: false,
                index: None,
            },
            sentences: vec![text.to_owned()],
            rx,
            queue: VecDeque::from([(0, pcm)]),
            current: None,
            synth_done: true,
            announced: false,
        });
    }

    fn cut_off(&self, live: &mut Live, now: u64) {
        live.paused = false;
        let Some(p) = live.playing.take() else {
            return;
        };
        let sentence = p.current.as_ref().map_or(0, |c| c.0);
        self.stats.interruptions.fetch_add(1, Ordering::Relaxed);
        self.record(
            live,
            "agent",
            "interruption",
            &p.sentences[sentence.min(p.sentences.len().saturating_sub(1))],
            now,
        );
        // A cut acknowledgement is not worth resuming.
        live.cut = (p.say.text != ACKNOWLEDGEMENT).then_some((p.say, sentence));
        live.pacer = None;
        if p.announced {
            self.room
                .broadcast(crate::signal::speaking(&self.id, false));
        }
        live.turns.on(TurnEvent::AgentFinished, now);
    }

    fn stop_playing(&self, live: &mut Live, _producer: &crate::room::Producer) {
        live.paused = false;
        if live.playing.take().is_some_and(|p| p.announced) {
            self.room
                .broadcast(crate::signal::speaking(&self.id, false));
        }
    }

    /// Sends the frames due now.
    fn play(&self, live: &mut Live, producer: &crate::room::Producer, now: u64) {
        if live.paused {
            return;
        }
        let Some(p) = live.playing.as_mut() else {
            return;
        };
        loop {
            match p.rx.try_recv() {
                Ok((i, Ok(pcm))) => p.queue.push_back((i, pcm)),
                Ok((i, Err(e))) => {
                    self.stats.voice_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, sentence = %p.sentences[i], "voice failed; sentence skipped");
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    p.synth_done = true;
                    break;
                }
            }
        }
        let have_audio = p.current.is_some() || !p.queue.is_empty();
        if !have_audio {
            if p.synth_done {
                // Everything played.
                let p = live.playing.take().expect("playing");
                if let Ok(Some(pkt)) = live.packetizer.flush() {
                    send(producer, live.ssrc, pkt);
                }
                live.pacer = None;
                if p.announced {
                    self.room
                        .broadcast(crate::signal::speaking(&self.id, false));
                }
                live.turns.on(TurnEvent::AgentFinished, now);
                if p.say.kind == SayKind::Summary {
                    live.done_at = Some(now);
                } else if p.say.question && live.conv.answer_words() >= MIN_ANSWER_WORDS {
                    // The lead answered while the question played (over it, or after a
                    // resumed interruption): that is the answer; no waiting for another.
                    live.speak_pending = Some(now);
                }
            } else {
                // Waiting for the voice: the pause restarts the pacer when audio comes.
                live.pacer = None;
            }
            return;
        }
        let pacer = match &mut live.pacer {
            Some(pc) => pc,
            None => {
                // (Re)start: the RTP clock moves on by the silence since the last packet.
                if let Some(last) = live.last_packet_ms {
                    let gap = now.saturating_sub(last) / 20;
                    if gap > 0 {
                        live.packetizer.pause(gap as u32);
                    }
                }
                live.pacer.insert(Pacer::new(now))
            }
        };
        let mut due = pacer.take_due(now);
        if due > MAX_BURST_FRAMES {
            let skipped = due - MAX_BURST_FRAMES;
            self.stats
                .frames_skipped
                .fetch_add(skipped, Ordering::Relaxed);
            tracing::debug!(skipped, "agent audio late; frames skipped");
            due = MAX_BURST_FRAMES;
        }
        if !p.announced && due > 0 {
            p.announced = true;
            tracing::debug!(now, kind = p.say.kind.as_str(), "agent audio starts");
            let text = p.say.text.clone();
            let question = p.say.question;
            self.room.broadcast(crate::signal::speaking(&self.id, true));
            if let Some(TurnDecision::Stop) = live
                .turns
                .on(TurnEvent::AgentStarted { text, question }, now)
            {
                // Someone is speaking: never over a person.
                self.cut_off(live, now);
                return;
            }
        }
        let p = live.playing.as_mut().expect("playing");
        for _ in 0..due {
            let mut frame = [0i16; FRAME];
            let mut filled = 0;
            while filled < FRAME {
                if p.current.is_none() {
                    match p.queue.pop_front() {
                        Some((i, pcm)) => p.current = Some((i, pcm, 0)),
                        None => break,
                    }
                }
                let (_, pcm, pos) = p.current.as_mut().expect("current");
                let n = (FRAME - filled).min(pcm.len() - *pos);
                frame[filled..filled + n].copy_from_slice(&pcm[*pos..*pos + n]);
                filled += n;
                *pos += n;
                if *pos >= pcm.len() {
                    p.current = None;
                }
            }
            if filled == 0 {
                break;
            }
            match live.packetizer.push(&frame[..filled]) {
                Ok(packets) => {
                    for pkt in packets {
                        send(producer, live.ssrc, pkt);
                        live.last_packet_ms = Some(now);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "agent audio not encoded"),
            }
        }
    }
}

fn send(producer: &crate::room::Producer, ssrc: u32, pkt: conclave_media::packetize::AudioPacket) {
    producer.deliver(rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker: pkt.marker,
            payload_type: 111,
            sequence_number: pkt.seq,
            timestamp: pkt.timestamp,
            ssrc,
            ..Default::default()
        },
        payload: pkt.payload,
    });
}
