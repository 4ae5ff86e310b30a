//! The process's one ONNX Runtime environment, shared by Silero VAD, Smart Turn and the Piper
//! voice: ONNX Runtime allows a single environment per process, so the first library path to
//! load wins and later callers get the same environment.

use ort::environment::Environment;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static ENVIRONMENT: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

/// The environment, loading ONNX Runtime from `runtime` the first time.
pub fn environment(runtime: &Path) -> Result<Environment, String> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let env = ort::init_from(runtime)
            .map_err(|e| e.to_string())?
            .with_name("conclave")
            .build()
            .map_err(|e| e.to_string())?;
        Ok((runtime.to_path_buf(), env))
    });
    match loaded {
        Ok((first, env)) => {
            if first != runtime {
                tracing::debug!(first = %first.display(), asked = %runtime.display(),
                    "ONNX Runtime already loaded; the first library is used");
            }
            Ok(env.clone())
        }
        Err(message) => Err(message.clone()),
    }
}
