//! Real speech for tests: espeak-ng text-to-speech resampled by sox, and word error rate.

use std::path::Path;

#[allow(unused_imports)]
pub use conclave_media::testing::{whisper_model, word_error_rate, words};

/// Silero VAD and ONNX Runtime from the shared model cache, installed once per process.
pub fn vad_files() -> conclave_model::VadFiles {
    static FILES: std::sync::OnceLock<conclave_model::VadFiles> = std::sync::OnceLock::new();
    FILES
        .get_or_init(|| {
            conclave_model::install_vad(&conclave_media::testing::model_cache())
                .expect("Silero VAD install")
        })
        .clone()
}

/// `text` spoken by espeak-ng, as 48 kHz mono samples in -1..1 (`_dir` is kept for callers;
/// scratch files go to the temp directory).
pub fn speak_48k(text: &str, _dir: &Path) -> Vec<f32> {
    conclave_media::testing::speak(text, 48_000)
}

/// The Piper voice model from the shared model cache, installed once per process.
pub fn piper_model() -> std::path::PathBuf {
    static FILES: std::sync::OnceLock<conclave_model::VoiceFiles> = std::sync::OnceLock::new();
    FILES
        .get_or_init(|| {
            conclave_model::install_voice(&conclave_media::testing::model_cache())
                .expect("Piper voice install")
        })
        .model
        .clone()
}

/// The Smart Turn model from the shared model cache, installed once per process.
#[allow(dead_code)]
pub fn smart_turn_model() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        conclave_model::install_smart_turn(&conclave_media::testing::model_cache())
            .expect("Smart Turn install")
    })
    .clone()
}
