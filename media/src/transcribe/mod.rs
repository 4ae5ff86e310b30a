//! Speech-to-text behind a trait, so the pipeline can be tested with any engine and the
//! product uses Whisper.

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
}

/// A speech recogniser for 16 kHz mono audio.
pub trait Transcriber: Send + Sync + 'static {
    /// Transcribes `pcm` (16 kHz, mono, f32 in -1.0..=1.0) and returns the text, trimmed.
    /// Blocking and CPU-heavy: call it from a worker thread, never from an async task.
    fn transcribe(&self, pcm: &[f32]) -> Result<String, TranscribeError>;
}
