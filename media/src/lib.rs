//! Conclave's audio pipeline: Opus decode, resampling, voice activity detection, endpointing,
//! transcription and turn-taking. Pure and clock-injected where it can be; it never imports
//! axum or sqlx.
#![deny(missing_docs)]

pub mod frames;
pub mod transcribe;
