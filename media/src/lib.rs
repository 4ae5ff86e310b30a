//! Conclave's audio pipeline: Opus decode, resampling, voice activity detection, endpointing,
//! transcription and turn-taking. Pure and clock-injected where it can be; it never imports
//! axum or sqlx.
#![deny(missing_docs)]

pub mod conversation;
pub mod decode;
pub mod frames;
pub mod lead;
pub mod onnx;
pub mod packetize;
pub mod pipeline;
pub mod pool;
pub mod reorder;
pub mod resample;
pub mod segment;
pub mod silero;
pub mod smart_turn;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod transcribe;
pub mod turns;
pub mod vad;
pub mod voice;
