//! Silero VAD (v6, ONNX) through ONNX Runtime, loaded at run time.
//!
//! webrtc-vad calls steady tones, beeps and loud noise speech; Silero does not. It sees
//! 32 ms windows (512 samples at 16 kHz, with the previous 64 samples as context) and keeps a
//! recurrent state, so each pipeline owns its own session. The decision has hysteresis:
//! speech starts at `threshold` and ends below `threshold - 0.15`, as Silero's own
//! iterator does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

/// Samples per Silero window at 16 kHz.
pub const WINDOW: usize = 512;
const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;

/// Why Silero could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SileroError {
    /// The ONNX Runtime library is missing or is not loadable.
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Runtime {
        /// The library tried.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The model file is missing, unreadable or not a Silero model.
    #[error("cannot load Silero VAD from {path}: {message}")]
    Model {
        /// The model tried.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A session could not be created or run.
    #[error("Silero VAD inference failed: {0}")]
    Inference(String),
}

fn environment(runtime: &Path) -> Result<Environment, SileroError> {
    crate::onnx::environment(runtime).map_err(|message| SileroError::Runtime {
        path: runtime.to_path_buf(),
        message,
    })
}

/// The model bytes and runtime, shared by every pipeline; [`SileroModel::detector`] makes one
/// stateful detector per audio track.
pub struct SileroModel {
    env: Environment,
    model: Vec<u8>,
    threshold: f32,
}

impl std::fmt::Debug for SileroModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroModel")
            .field("model_bytes", &self.model.len())
            .field("threshold", &self.threshold)
            .finish()
    }
}

// Two models are the same when they hold the same bytes and threshold (configs compare).
impl PartialEq for SileroModel {
    fn eq(&self, other: &Self) -> bool {
        self.threshold == other.threshold && self.model == other.model
    }
}
impl Eq for SileroModel {}

impl SileroModel {
    /// Loads ONNX Runtime from `runtime` and the model from `model`, and checks one detector
    /// can be built and run. `threshold` is the speech probability that starts speech (0.5
    /// is Silero's default).
    pub fn load(runtime: &Path, model: &Path, threshold: f32) -> Result<Arc<Self>, SileroError> {
        let env = environment(runtime)?;
        let bytes = std::fs::read(model).map_err(|e| SileroError::Model {
            path: model.to_path_buf(),
            message: e.to_string(),
        })?;
        let this = Arc::new(Self {
            env,
            model: bytes,
            threshold: threshold.clamp(0.05, 0.95),
        });
        let mut probe = this.detector().map_err(|e| SileroError::Model {
            path: model.to_path_buf(),
            message: e.to_string(),
        })?;
        probe.probability(&[0.0; WINDOW])?;
        Ok(this)
    }

    /// A fresh detector (its own session and recurrent state).
    pub fn detector(self: &Arc<Self>) -> Result<SileroVad, SileroError> {
        let err = |e: ort::Error| SileroError::Inference(e.to_string());
        let session = Session::builder(&self.env)
            .map_err(err)?
            // One thread: the pipeline thread calls it every 32 ms for ~0.3 ms.
            .with_intra_threads(1)
            .map_err(|e| err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.into()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.into()))?
            .commit_from_memory(&self.model)
            .map_err(err)?;
        let input = Tensor::from_array(([1usize, CONTEXT + WINDOW], vec![0f32; CONTEXT + WINDOW]))
            .map_err(err)?;
        let state = Tensor::from_array(([2usize, 1, 128], vec![0f32; STATE])).map_err(err)?;
        let sr = Tensor::from_array((Vec::<usize>::new(), vec![16_000i64])).map_err(err)?;
        Ok(SileroVad {
            session,
            input,
            state,
            sr,
            pending: [0.0; WINDOW],
            filled: 0,
            speaking: false,
            threshold: self.threshold,
            last_probability: 0.0,
        })
    }
}

/// One track's Silero detector, fed 10 ms frames.
pub struct SileroVad {
    session: Session,
    input: Tensor<f32>,
    state: Tensor<f32>,
    sr: Tensor<i64>,
    pending: [f32; WINDOW],
    filled: usize,
    speaking: bool,
    threshold: f32,
    last_probability: f32,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad")
            .field("speaking", &self.speaking)
            .field("last_probability", &self.last_probability)
            .finish()
    }
}

impl SileroVad {
    /// Feeds samples (16 kHz mono, any length; the pipeline sends 10 ms) and returns whether
    /// speech is on, as of the last complete 32 ms window.
    pub fn push(&mut self, samples: &[f32]) -> Result<bool, SileroError> {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (WINDOW - self.filled).min(rest.len());
            self.pending[self.filled..self.filled + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            rest = &rest[take..];
            if self.filled == WINDOW {
                self.filled = 0;
                let window = self.pending;
                let p = self.probability(&window)?;
                self.speaking = if self.speaking {
                    p >= self.threshold - 0.15
                } else {
                    p >= self.threshold
                };
            }
        }
        Ok(self.speaking)
    }

    /// The last window's speech probability.
    pub fn last_probability(&self) -> f32 {
        self.last_probability
    }

    /// Runs one 512-sample window, advancing the recurrent state and the context.
    pub fn probability(&mut self, window: &[f32; WINDOW]) -> Result<f32, SileroError> {
        let err = |e: ort::Error| SileroError::Inference(e.to_string());
        {
            let (_, input) = self.input.extract_tensor_mut();
            // Context: the last 64 samples of the previous window.
            input.copy_within(WINDOW.., 0);
            input[CONTEXT..].copy_from_slice(window);
        }
        let outputs = self
            .session
            .run(ort::inputs![
                "input" => &self.input,
                "state" => &self.state,
                "sr" => &self.sr,
            ])
            .map_err(err)?;
        let (_, p) = outputs["output"].try_extract_tensor::<f32>().map_err(err)?;
        let p = p.first().copied().unwrap_or(0.0);
        let (_, next) = outputs["stateN"].try_extract_tensor::<f32>().map_err(err)?;
        if next.len() != STATE {
            return Err(SileroError::Inference(format!(
                "state of {} values, expected {STATE}",
                next.len()
            )));
        }
        let mut copy = [0f32; STATE];
        copy.copy_from_slice(next);
        drop(outputs);
        self.state.extract_tensor_mut().1.copy_from_slice(&copy);
        self.last_probability = p;
        Ok(p)
    }
}
