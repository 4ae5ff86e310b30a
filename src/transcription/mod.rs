//! Live transcription as a follower of rooms.
//!
//! ```text
//! RoomManager ──room opened──▶ room task (one per room)
//!   room events: TrackPublished(audio) ─▶ sink on the producer ─▶ tap ─▶ media pipeline
//!                TrackUnpublished        ─▶ drop the sink (the pipeline flushes and ends)
//!                MemberJoined            ─▶ speaker names (kept after they leave)
//!   room frames (broadcast) ─┬─▶ captions: speaking indicators and captions to members
//!                            └─▶ storage: final lines into the transcript store
//! ```
//!
//! Captions and storage are separate consumers of the room's frames, so a slow database never
//! delays a caption. Neither holds the room alive: storage needs only the room's name, meeting
//! and opening time, and lives until every pipeline of the room has flushed (the frame channel
//! closes when the last sender, the last pipeline, is gone), so a final that arrives after the
//! last person left is still stored under the speaker's name.

mod captions;
mod storage;

use crate::room::{Producer, Room, RoomEvent, RoomManager, SinkHandle, SinkOptions};
use crate::store::Store;
use conclave_media::pipeline::{PipelineConfig, RtpAudio, pipeline_input, spawn_track_pipeline};
use conclave_media::pool::{PipelineStats, PoolConfig, TranscriptionPool};
/// Whether a transcript is speech worth a caption or a stored line (shared with the media
/// crate's own guard, which Whisper's output already went through).
pub(crate) use conclave_media::transcribe::guard::is_speech;
use conclave_media::transcribe::{TranscribeError, Transcriber};
use conclave_signaling::{ParticipantId, TrackId, TrackKind};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use tracing::Instrument;

/// The context Whisper is primed with: "<meeting name>. <name>, <name>." Names are sorted
/// and deduplicated; empty when there is nothing to say.
pub(crate) fn context_prompt(meeting: Option<&str>, names: &Names) -> String {
    let mut people: Vec<String> = names
        .lock()
        .expect("names")
        .values()
        .map(|(_, name)| name.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    people.sort();
    people.dedup();
    let mut prompt = String::new();
    if let Some(m) = meeting.map(str::trim).filter(|m| !m.is_empty()) {
        prompt.push_str(m);
        prompt.push_str(". ");
    }
    if !people.is_empty() {
        prompt.push_str(&people.join(", "));
        prompt.push('.');
    }
    prompt.trim().to_owned()
}

/// What a caption and a stored line say for speech left without a transcript (the pool was
/// full, or Whisper failed): the gap is shown and kept, never silently lost.
pub const GAP_TEXT: &str = "[speech not transcribed]";

/// (identity, display name) per participant id of a room, kept after they leave.
pub(crate) type Names = Arc<Mutex<HashMap<ParticipantId, (String, String)>>>;

/// Counters of the frame consumers (rendered at `/metrics`).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Frames a caption consumer missed because it fell behind.
    pub caption_frames_missed: AtomicU64,
    /// Frames the storage consumer missed because it fell behind (transcript lines may be
    /// among them).
    pub storage_frames_missed: AtomicU64,
    /// Transcript lines stored.
    pub lines_stored: AtomicU64,
    /// Transcript lines the store refused (logged with the error).
    pub lines_failed: AtomicU64,
    /// Room events a room task missed because it fell behind.
    pub room_events_missed: AtomicU64,
    /// Padding-only RTP packets kept from the decoder.
    pub padding_skipped: AtomicU64,
    /// Stretches of speech left without a transcript (stored as gap lines).
    pub gaps: AtomicU64,
}

impl ConsumerStats {
    /// (name, help, value) rows for `/metrics`.
    pub fn rows(&self) -> [(&'static str, &'static str, u64); 7] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "conclave_caption_frames_missed_total",
                "Pipeline frames a caption consumer missed by falling behind.",
                g(&self.caption_frames_missed),
            ),
            (
                "conclave_transcript_frames_missed_total",
                "Pipeline frames the transcript store consumer missed by falling behind.",
                g(&self.storage_frames_missed),
            ),
            (
                "conclave_transcript_lines_stored_total",
                "Transcript lines stored.",
                g(&self.lines_stored),
            ),
            (
                "conclave_transcript_lines_failed_total",
                "Transcript lines the store refused.",
                g(&self.lines_failed),
            ),
            (
                "conclave_transcription_room_events_missed_total",
                "Room events a transcription room task missed by falling behind.",
                g(&self.room_events_missed),
            ),
            (
                "conclave_audio_padding_skipped_total",
                "Padding-only audio packets kept from the decoder.",
                g(&self.padding_skipped),
            ),
            (
                "conclave_transcript_gaps_total",
                "Stretches of speech left without a transcript (shown and stored as gaps).",
                g(&self.gaps),
            ),
        ]
    }
}

/// Tasks that may still produce or store transcript lines; shutdown waits for them.
#[derive(Debug, Default)]
struct Busy {
    count: AtomicUsize,
    idle: Notify,
}

/// Marks one busy task until dropped.
struct BusyGuard(Arc<Busy>);

impl BusyGuard {
    fn new(busy: &Arc<Busy>) -> Self {
        busy.count.fetch_add(1, Ordering::SeqCst);
        BusyGuard(busy.clone())
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Transcription for the whole server.
pub struct Transcription {
    pool: Arc<TranscriptionPool>,
    stats: Arc<PipelineStats>,
    consumers: Arc<ConsumerStats>,
    config: PipelineConfig,
    store: Store,
    busy: Arc<Busy>,
}

impl Transcription {
    /// Loads a Whisper model and starts the worker pool; `whisper_threads` is (threads per
    /// job, threads while the machine is otherwise idle).
    pub fn load(
        model: &Path,
        whisper_threads: (usize, usize),
        language: &str,
        pool: PoolConfig,
        config: PipelineConfig,
        store: Store,
    ) -> Result<Arc<Self>, TranscribeError> {
        let whisper = conclave_media::transcribe::whisper::WhisperTranscriber::load_with_language(
            model,
            whisper_threads.0,
            language,
        )?
        .with_burst(whisper_threads.1);
        Ok(Self::with_transcriber(
            Arc::new(whisper),
            pool,
            config,
            store,
        ))
    }

    /// Uses any [`Transcriber`] (the server always passes Whisper).
    pub fn with_transcriber(
        transcriber: Arc<dyn Transcriber>,
        pool: PoolConfig,
        config: PipelineConfig,
        store: Store,
    ) -> Arc<Self> {
        let stats = Arc::new(PipelineStats::default());
        let pool = Arc::new(TranscriptionPool::new(transcriber, pool, stats.clone()));
        Arc::new(Transcription {
            pool,
            stats,
            consumers: Arc::default(),
            config,
            store,
            busy: Arc::default(),
        })
    }

    /// Whether pipelines can judge pauses with an end-of-turn model (for agents).
    pub fn judges_turns(&self) -> bool {
        self.config.turn_analysis.is_some()
    }

    /// Pipeline counters (for `/metrics`).
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    /// Caption and storage consumer counters (for `/metrics`).
    pub fn consumer_stats(&self) -> &Arc<ConsumerStats> {
        &self.consumers
    }

    /// Follows every room of `rooms`: each one that opens gets a room task.
    pub fn follow(self: &Arc<Self>, rooms: &RoomManager) {
        let mut openings = rooms.watch_openings();
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(room) = openings.recv().await {
                let Some(t) = this.upgrade() else { return };
                let span = tracing::info_span!("transcription", room = %room.name);
                tokio::spawn(t.clone().run_room(room).instrument(span));
            }
        });
    }

    /// Waits until every room task, pipeline and store consumer has finished, or `timeout`.
    pub async fn wait_flushed(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.busy.idle.notified();
                if self.busy.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// One room: attaches pipelines to its audio tracks and runs its two frame consumers
    /// until the room closes and its pipelines have flushed.
    async fn run_room(self: Arc<Self>, room: Arc<Room>) {
        let _busy = BusyGuard::new(&self.busy);
        let (snapshot, mut events) = room.subscribe();
        let names: Names = Arc::default();
        {
            let mut n = names.lock().expect("names");
            for m in &snapshot.members {
                n.insert(m.id.clone(), (m.identity.clone(), m.name.clone()));
            }
        }
        let Some(frames) = room.frames() else {
            return; // retired before we got to it
        };
        tokio::spawn(
            captions::run(
                Arc::downgrade(&room),
                frames.subscribe(),
                names.clone(),
                self.consumers.clone(),
            )
            .in_current_span(),
        );
        let meta = storage::RoomMeta {
            room: room.name.to_string(),
            meeting_code: room.meeting_code(),
            opened_unix_ms: room.opened_unix_ms(),
        };
        tokio::spawn(
            storage::run(
                meta,
                frames.subscribe(),
                names.clone(),
                self.store.clone(),
                self.consumers.clone(),
                BusyGuard::new(&self.busy),
            )
            .in_current_span(),
        );
        // Whisper spells names it has been shown: the meeting's name and the participants'.
        let room_key: conclave_media::pool::RoomKey = room.name.as_str().into();
        let meeting_name = match room.meeting_code() {
            Some(code) => self.meeting_name(&code).await,
            None => None,
        };
        let update_prompt = |names: &Names| {
            let prompt = context_prompt(meeting_name.as_deref(), names);
            self.pool.set_prompt(&room_key, Some(&prompt));
        };
        update_prompt(&names);
        let mut taps: HashMap<TrackId, SinkHandle> = HashMap::new();
        let mut closed = snapshot.closed;
        for p in &snapshot.producers {
            self.attach(&room, p, &frames, &mut taps);
        }
        while !closed {
            match events.recv().await {
                Ok(RoomEvent::MemberJoined(m)) => {
                    names
                        .lock()
                        .expect("names")
                        .insert(m.id.clone(), (m.identity.clone(), m.name.clone()));
                    update_prompt(&names);
                }
                Ok(RoomEvent::TrackPublished(p)) => self.attach(&room, &p, &frames, &mut taps),
                Ok(RoomEvent::TrackUnpublished { track, .. }) => {
                    // The sink goes; the tap's queue ends; the pipeline flushes its last
                    // utterance and ends.
                    taps.remove(&track);
                }
                Ok(RoomEvent::Closed) | Err(broadcast::error::RecvError::Closed) => closed = true,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "transcription fell behind the room's events");
                    self.consumers
                        .room_events_missed
                        .fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        // Dropping the taps, the room and our frame sender leaves the pipelines as the
        // frame channel's last senders: storage ends once they have flushed. The prompt
        // stays for their last finals, and goes with the next opening of a room of this name
        // or, at the latest, when the pool is dropped.
    }

    async fn meeting_name(&self, code: &str) -> Option<String> {
        let code = crate::meetings::model::MeetingCode::parse(code)?;
        match self.store.meeting(&code).await {
            Ok(m) => m.map(|m| m.name),
            Err(e) => {
                tracing::debug!(error = %e, "no meeting name for the transcription prompt");
                None
            }
        }
    }

    fn attach(
        &self,
        room: &Room,
        p: &Arc<Producer>,
        frames: &broadcast::Sender<conclave_media::frames::Frame>,
        taps: &mut HashMap<TrackId, SinkHandle>,
    ) {
        if p.kind != TrackKind::Audio || !p.transcribe || taps.contains_key(&p.id) {
            return;
        }
        let (input, audio_rx) = pipeline_input(self.config.input_capacity, self.stats.clone());
        let mut config = self.config.clone();
        if let Some(t) = &mut config.turn_analysis {
            t.wanted = room.turn_verdicts().clone();
        }
        let pipeline = match spawn_track_pipeline(
            p.publisher.0.clone(),
            room.name.as_str().into(),
            audio_rx,
            self.pool.clone(),
            frames.clone(),
            config,
        ) {
            Ok(task) => task,
            Err(e) => {
                return tracing::error!(track = %p.id, error = %e, "audio pipeline not started");
            }
        };
        let (sink, mut packets) = p.add_sink(SinkOptions {
            capacity: self.config.input_capacity,
            keyframe_gate: false,
        });
        let epoch = p.epoch();
        let consumers = self.consumers.clone();
        let busy = BusyGuard::new(&self.busy);
        tokio::spawn(
            async move {
                let _busy = busy;
                let mut pushed = 0u64;
                while let Some(packet) = packets.recv().await {
                    // Padding-only packets repeat the previous timestamp and carry no audio.
                    if packet.payload.is_empty() {
                        consumers.padding_skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Muted tracks still send (comfort noise); the VAD treats it as silence.
                    let outcome = input.try_push(RtpAudio {
                        seq: packet.header.sequence_number,
                        timestamp: packet.header.timestamp,
                        payload: packet.payload,
                        arrival_ms: epoch.elapsed().as_millis() as u64,
                    });
                    if outcome == conclave_media::pipeline::PushOutcome::Closed {
                        tracing::error!("audio pipeline ended before its track");
                        break;
                    }
                    pushed += 1;
                }
                drop(input);
                tracing::debug!(pushed, "audio tap ended; flushing the pipeline");
                // The pipeline finishes its utterance and publishes outstanding finals.
                let _ = pipeline.await;
            }
            .in_current_span(),
        );
        tracing::debug!(track = %p.id, speaker = %p.publisher, "transcribing");
        taps.insert(p.id.clone(), sink);
    }
}

#[cfg(test)]
mod prompt_tests {
    use super::*;

    #[test]
    fn prompt_names_the_meeting_and_everyone_once() {
        let names: Names = Arc::default();
        assert_eq!(context_prompt(None, &names), "");
        assert_eq!(context_prompt(Some("  "), &names), "");
        {
            let mut n = names.lock().unwrap();
            n.insert(
                ParticipantId::from("PA_b".to_string()),
                ("b".into(), "Bjørn Ødegård".into()),
            );
            n.insert(
                ParticipantId::from("PA_a".to_string()),
                ("a".into(), "Ada Lovelace".into()),
            );
            n.insert(
                ParticipantId::from("PA_c".to_string()),
                ("c".into(), "Ada Lovelace".into()),
            );
            n.insert(
                ParticipantId::from("PA_d".to_string()),
                ("d".into(), "  ".into()),
            );
        }
        assert_eq!(
            context_prompt(Some("Acme renewal call"), &names),
            "Acme renewal call. Ada Lovelace, Bjørn Ødegård."
        );
        assert_eq!(context_prompt(None, &names), "Ada Lovelace, Bjørn Ødegård.");
    }
}
