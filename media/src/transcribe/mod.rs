//! Speech-to-text behind a trait, so the pipeline can be tested with any engine and the
//! product uses Whisper.

pub mod burst;
pub mod guard;
pub mod whisper;

pub use whisper::WhisperTranscriber;

/// Why a transcription failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    /// The model file is missing, unreadable or not a Whisper ggml model.
    #[error("cannot load the speech model {path}: {reason}")]
    Model {
        /// The model path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The engine failed on this audio.
    #[error("transcription failed: {0}")]
    Engine(String),
    /// Stopped before the end: past its deadline, or nobody waits for the result any more.
    #[error("transcription stopped: {0}")]
    Aborted(&'static str),
}

/// Bounds on one transcription, checked by the engine while it works.
pub struct Limits<'a> {
    /// Give up after this instant.
    pub deadline: Option<std::time::Instant>,
    /// A provisional transcript: no temperature fallback, the cheapest decode.
    pub interim: bool,
    /// Whether the result is no longer wanted (its utterance was superseded, its reader
    /// went away).
    pub abandoned: &'a (dyn Fn() -> bool + Sync),
    /// Words that set the scene (the meeting's name, the participants' names), given to the
    /// engine as context so it spells them as written here.
    pub prompt: Option<&'a str>,
}

impl std::fmt::Debug for Limits<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("deadline", &self.deadline)
            .field("interim", &self.interim)
            .finish_non_exhaustive()
    }
}

impl Limits<'_> {
    /// No deadline, never abandoned.
    pub fn none() -> Limits<'static> {
        Limits {
            deadline: None,
            interim: false,
            abandoned: &|| false,
            prompt: None,
        }
    }

    /// Why to stop now, if at all.
    pub fn stop_reason(&self) -> Option<&'static str> {
        if (self.abandoned)() {
            return Some("nobody waits for the result");
        }
        match self.deadline {
            Some(d) if std::time::Instant::now() >= d => Some("past its deadline"),
            _ => None,
        }
    }
}

/// A speech recogniser for 16 kHz mono audio.
pub trait Transcriber: Send + Sync + 'static {
    /// Transcribes `pcm` (16 kHz, mono, f32 in -1.0..=1.0) and returns the text, trimmed.
    /// Blocking and CPU-heavy: call it from a worker thread, never from an async task.
    fn transcribe(&self, pcm: &[f32]) -> Result<String, TranscribeError>;

    /// Like [`Transcriber::transcribe`], within `limits`. Engines that can stop midway
    /// (Whisper) check them as they work; the default checks them once before starting.
    fn transcribe_within(
        &self,
        pcm: &[f32],
        limits: &Limits<'_>,
    ) -> Result<String, TranscribeError> {
        if let Some(why) = limits.stop_reason() {
            return Err(TranscribeError::Aborted(why));
        }
        self.transcribe(pcm)
    }
}
