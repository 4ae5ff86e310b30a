//! Typed frames the pipeline emits: what happened, to whom, when.
//!
//! Times are milliseconds on the pipeline's injected clock (for a live room: milliseconds since
//! the room's pipeline started), so tests can assert exact timing.

/// A speaker's identifier as the pipeline knows it (the SFU passes the participant id).
pub type SpeakerId = String;

/// Something the pipeline observed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Frame {
    /// Voice activity began (after the configured start hysteresis).
    UserStartedSpeaking(SpeechEdge),
    /// Voice activity ended (after the configured trailing silence).
    UserStoppedSpeaking(SpeechEdge),
    /// A provisional transcript of an utterance still in progress.
    InterimTranscript(Transcript),
    /// The transcript of a finished utterance.
    FinalTranscript(Transcript),
    /// Speech that will have no transcript: its final could not be queued, or its
    /// transcription failed. Consumers show and store the gap rather than lose it silently.
    TranscriptGap(Gap),
    /// An end-of-turn model's verdict on the pause after an utterance (only in rooms that
    /// asked for them; after `UserStoppedSpeaking`, usually before the final transcript).
    EndOfTurn(EndOfTurn),
}

/// How likely a speaker's pause is the end of their turn.
#[derive(Debug, Clone, PartialEq)]
pub struct EndOfTurn {
    /// Who paused.
    pub speaker: SpeakerId,
    /// End of the utterance judged, ms on the pipeline clock.
    pub at_ms: u64,
    /// Probability that the turn is complete, 0..1.
    pub probability: f32,
}

/// A stretch of one speaker's speech left without a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Who spoke.
    pub speaker: SpeakerId,
    /// Start of the audio, ms on the pipeline clock.
    pub start_ms: u64,
    /// End of the audio, ms on the pipeline clock.
    pub end_ms: u64,
    /// Why.
    pub reason: GapReason,
}

/// Why speech has no transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapReason {
    /// The transcription pool was full (server or room limit).
    Dropped,
    /// The engine failed, or stopped at the job's deadline.
    Failed,
}

/// A speech start or end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeechEdge {
    /// Who.
    pub speaker: SpeakerId,
    /// When, in ms on the pipeline clock.
    pub at_ms: u64,
}

/// Transcribed text for a stretch of one speaker's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// Who spoke.
    pub speaker: SpeakerId,
    /// Start of the audio, ms on the pipeline clock.
    pub start_ms: u64,
    /// End of the audio, ms on the pipeline clock.
    pub end_ms: u64,
    /// The words.
    pub text: String,
}
