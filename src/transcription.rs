//! Wiring of the audio pipeline (`conclave-media`) into rooms: one pipeline per published
//! audio track, fed by the producer's read loop through a bounded queue it never waits on,
//! and one consumer per room that turns frames into captions, speaking indicators and stored
//! transcript lines.

use crate::sfu::room::Room;
use crate::store::{Store, TranscriptLine};
use conclave_media::frames::{Frame, Transcript};
use conclave_media::pipeline::{
    PipelineConfig, PipelineInput, pipeline_input, spawn_track_pipeline,
};
use conclave_media::pool::{PipelineStats, PoolConfig, TranscriptionPool};
use conclave_media::transcribe::{TranscribeError, Transcriber};
use conclave_signaling::{ParticipantId, ServerMessage};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use tokio::sync::broadcast;

/// Frames buffered per room for slow consumers before they start missing some.
pub const ROOM_FRAME_BUFFER: usize = 256;

/// Transcription for the whole server.
pub struct Transcription {
    pool: Arc<TranscriptionPool>,
    stats: Arc<PipelineStats>,
    config: PipelineConfig,
    store: Store,
}

impl Transcription {
    /// Loads a Whisper model and starts the worker pool.
    pub fn load(
        model: &Path,
        whisper_threads: usize,
        pool: PoolConfig,
        config: PipelineConfig,
        store: Store,
    ) -> Result<Arc<Self>, TranscribeError> {
        let whisper =
            conclave_media::transcribe::whisper::WhisperTranscriber::load(model, whisper_threads)?;
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
            config,
            store,
        })
    }

    /// Pipeline counters (for `/metrics`).
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    /// Starts a pipeline for one audio track of `speaker` in `room` and returns its input.
    pub fn attach(&self, room: &Room, speaker: &ParticipantId) -> Option<PipelineInput> {
        let (input, rx) = pipeline_input(self.config.input_capacity, self.stats.clone());
        match spawn_track_pipeline(
            speaker.0.clone(),
            room.name.0.as_str().into(),
            rx,
            self.pool.clone(),
            room.frames(),
            self.config.clone(),
        ) {
            Ok(_) => Some(input),
            Err(e) => {
                tracing::error!(error = %e, "audio pipeline not started");
                None
            }
        }
    }

    /// Starts the room's frame consumer: captions and speaking indicators to everyone in the
    /// room, final lines to the store.
    pub fn start_room(&self, room: &Arc<Room>) {
        let rx = room.frames().subscribe();
        tokio::spawn(consume(Arc::downgrade(room), rx, self.store.clone()));
    }
}

/// Whisper marks non-speech as `[BLANK_AUDIO]`, `(music)` and the like, and tiny models say a
/// lone "you" for tones and noise; such lines are not captions.
fn is_speech(text: &str) -> bool {
    let t = text.trim();
    let bare: String = t
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    !bare.is_empty()
        && bare != "you"
        && !((t.starts_with('[') && t.ends_with(']')) || (t.starts_with('(') && t.ends_with(')')))
}

async fn consume(room: Weak<Room>, mut rx: broadcast::Receiver<Frame>, store: Store) {
    // Speakers who already left still get their name on late finals.
    let mut names: HashMap<String, (String, String)> = HashMap::new();
    loop {
        let frame = match rx.recv().await {
            Ok(f) => f,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "caption consumer fell behind");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(room) = room.upgrade() else { return };
        let mut who = |speaker: &str| -> (String, String) {
            if let Some(found) = room.member(&ParticipantId(speaker.to_owned())) {
                names.insert(speaker.to_owned(), found.clone());
                return found;
            }
            names
                .get(speaker)
                .cloned()
                .unwrap_or_else(|| (speaker.to_owned(), speaker.to_owned()))
        };
        match frame {
            Frame::UserStartedSpeaking(e) => {
                room.broadcast(ServerMessage::Speaking {
                    participant_id: ParticipantId(e.speaker),
                    speaking: true,
                });
            }
            Frame::UserStoppedSpeaking(e) => {
                room.broadcast(ServerMessage::Speaking {
                    participant_id: ParticipantId(e.speaker),
                    speaking: false,
                });
            }
            Frame::InterimTranscript(t) if is_speech(&t.text) => {
                let (_, name) = who(&t.speaker);
                room.broadcast(caption(&t, name, false));
            }
            Frame::FinalTranscript(t) if !is_speech(&t.text) => {
                // Clears the speaker's interim line on clients; nothing is stored.
                let (_, name) = who(&t.speaker);
                let mut empty = t;
                empty.text.clear();
                room.broadcast(caption(&empty, name, true));
            }
            Frame::FinalTranscript(t) => {
                let (identity, name) = who(&t.speaker);
                room.broadcast(caption(&t, name.clone(), true));
                let line = TranscriptLine {
                    id: 0,
                    room: room.name.to_string(),
                    meeting_code: room.meeting_code(),
                    speaker_identity: identity,
                    speaker_name: name,
                    start_ms: room.opened_unix_ms() + t.start_ms as i64,
                    end_ms: room.opened_unix_ms() + t.end_ms as i64,
                    text: t.text.trim().to_owned(),
                };
                if let Err(e) = store.insert_transcript(&line).await {
                    tracing::error!(room = %room.name, error = %e, "transcript line not stored");
                }
            }
            _ => {}
        }
    }
}

fn caption(t: &Transcript, name: String, is_final: bool) -> ServerMessage {
    ServerMessage::Caption {
        participant_id: ParticipantId(t.speaker.clone()),
        name,
        text: t.text.trim().to_owned(),
        is_final,
        start_ms: t.start_ms,
        end_ms: t.end_ms,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_speech_markers_are_not_captions() {
        for noise in ["", "  ", "[BLANK_AUDIO]", "(music)", " you", "You.", "..."] {
            assert!(!super::is_speech(noise), "{noise:?}");
        }
        for speech in ["Thank you.", "You need to see this.", "Yes."] {
            assert!(super::is_speech(speech), "{speech:?}");
        }
    }
}
