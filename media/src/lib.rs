//! Conclave's audio pipeline: Opus decode, resampling, voice activity detection, endpointing,
//! transcription and turn-taking. Pure and clock-injected where it can be; it never imports
//! axum or sqlx. (Filled in by the audio-pipeline issue; the SFU's `Fanout` sinks are where it
//! will attach as a tap.)
#![deny(missing_docs)]
