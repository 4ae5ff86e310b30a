//! Smart Turn v3.2: the probability that a person has finished their turn, from the sound of
//! their last words (intonation, a trailing "and", a hanging clause), not from a transcript.
//!
//! The model (BSD-2-Clause, Daily; installed by [`conclave_model::install_smart_turn`]) is a
//! Whisper-encoder classifier. It sees the last 8 s of 16 kHz mono audio, left-padded with
//! zeros when shorter (as it was trained), as 80 × 800 Whisper log-mel features, and returns
//! one sigmoid probability. Features are computed as Pipecat's own extractor does, which
//! mirrors `transformers.WhisperFeatureExtractor` with `do_normalize=True`:
//!
//! 1. the 8 s window is normalised to zero mean and unit variance (variance + 1e-7),
//!    including the zero padding;
//! 2. it is reflect-padded by 200 samples at each end and cut into 400-sample frames every
//!    160 samples under a periodic Hann window (801 frames; the last is dropped);
//! 3. each frame's power spectrum goes through the 80 Slaney mel filters, is floored at
//!    1e-10 and taken as log10;
//! 4. values below the maximum minus 8 are raised to it, and the result is mapped by
//!    `(x + 4) / 4`.
//!
//! A call costs ~100 ms of one core, so it is meant for pauses, not every frame. Buffers are
//! reused between calls (behind a mutex), so a call allocates almost nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Tensor, TensorElementType, ValueType};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Sample rate the model expects.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples the model sees: the last 8 s.
pub const WINDOW_SAMPLES: usize = 8 * SAMPLE_RATE as usize;

const N_FFT: usize = 400;
const HOP: usize = 160;
const N_MELS: usize = 80;
const N_BINS: usize = N_FFT / 2 + 1;
const FRAMES: usize = WINDOW_SAMPLES / HOP; // 800: 801 centred frames, the last dropped.
const PAD: usize = N_FFT / 2;
const MEL_FLOOR: f64 = 1e-10;
const VARIANCE_EPS: f64 = 1e-7;

/// Why Smart Turn could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum SmartTurnError {
    /// The ONNX Runtime library is missing or is not loadable.
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Runtime {
        /// The library tried.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The model file is missing, unreadable or not Smart Turn.
    #[error("cannot load Smart Turn from {path}: {message}")]
    Model {
        /// The model tried.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The session failed to run.
    #[error("Smart Turn inference failed: {0}")]
    Inference(String),
}

// ONNX Runtime allows one environment per process, shared with Silero and Piper.
fn environment(runtime: &Path) -> Result<Environment, SmartTurnError> {
    crate::onnx::environment(runtime).map_err(|message| SmartTurnError::Runtime {
        path: runtime.to_path_buf(),
        message,
    })
}

/// The loaded model. `Send + Sync`: calls from several threads take turns.
pub struct SmartTurn {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SmartTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartTurn").finish_non_exhaustive()
    }
}

struct Inner {
    session: Session,
    /// `[1, 80, 800]`, rewritten in place by every call.
    input: Tensor<f32>,
    output: String,
    features: Features,
}

impl SmartTurn {
    /// Loads ONNX Runtime from `onnxruntime_lib` (once per process, shared with the other
    /// models: the first path wins) and the model from `model`, checks its input is
    /// `[batch, 80, 800]` floats, and runs it once on silence. Inference uses one thread, as
    /// Pipecat's default does.
    pub fn load(onnxruntime_lib: &Path, model: &Path) -> Result<SmartTurn, SmartTurnError> {
        Self::load_with_threads(onnxruntime_lib, model, 1)
    }

    /// [`SmartTurn::load`] with `threads` intra-op threads (at least 1).
    pub fn load_with_threads(
        onnxruntime_lib: &Path,
        model: &Path,
        threads: usize,
    ) -> Result<SmartTurn, SmartTurnError> {
        let env = environment(onnxruntime_lib)?;
        let model_err = |message: String| SmartTurnError::Model {
            path: model.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(model).map_err(|e| model_err(e.to_string()))?;
        let session = Session::builder(&env)
            .map_err(|e| model_err(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| model_err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| model_err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| model_err(e.to_string()))?
            .commit_from_memory(&bytes)
            .map_err(|e| model_err(e.to_string()))?;

        let [input] = session.inputs() else {
            return Err(model_err(format!(
                "{} inputs, expected 1",
                session.inputs().len()
            )));
        };
        match input.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 3
                && matches!(shape[0], -1 | 1)
                && shape[1] == N_MELS as i64
                && shape[2] == FRAMES as i64 => {}
            other => {
                return Err(model_err(format!(
                    "input `{}` is {other}, expected float32 [batch, {N_MELS}, {FRAMES}]",
                    input.name()
                )));
            }
        }
        let output = match session.outputs() {
            [output] => output.name().to_owned(),
            outputs => return Err(model_err(format!("{} outputs, expected 1", outputs.len()))),
        };
        let input = Tensor::from_array(([1usize, N_MELS, FRAMES], vec![0f32; N_MELS * FRAMES]))
            .map_err(|e| model_err(e.to_string()))?;
        let this = SmartTurn {
            inner: Mutex::new(Inner {
                session,
                input,
                output,
                features: Features::new(),
            }),
        };
        let p = this
            .end_of_turn_probability(&[])
            .map_err(|e| model_err(e.to_string()))?;
        if !(0.0..=1.0).contains(&p) {
            return Err(model_err(format!("probability {p} on silence")));
        }
        Ok(this)
    }

    /// The probability (0..1) that the speaker has finished their turn, given their audio up
    /// to now: 16 kHz mono samples in -1..1, of any length (only the last 8 s are used;
    /// shorter audio is left-padded with silence). Non-finite samples count as silence.
    pub fn end_of_turn_probability(&self, audio_16k: &[f32]) -> Result<f32, SmartTurnError> {
        let err = |e: ort::Error| SmartTurnError::Inference(e.to_string());
        // A panic elsewhere while holding the lock leaves nothing half-written that the next
        // call does not overwrite, so a poisoned lock is still usable.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        inner
            .features
            .compute(audio_16k, inner.input.extract_tensor_mut().1);
        let outputs = inner.session.run(ort::inputs![&inner.input]).map_err(err)?;
        let (_, p) = outputs[inner.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        match p {
            [p] => Ok(*p),
            _ => Err(SmartTurnError::Inference(format!(
                "{} output values, expected 1",
                p.len()
            ))),
        }
    }
}

/// Whisper log-mel feature extraction with its buffers.
struct Features {
    fft: Arc<dyn RealToComplex<f64>>,
    /// Periodic Hann window of `N_FFT`.
    hann: Vec<f64>,
    /// Each mel filter's first non-zero bin and its non-zero weights.
    filters: Vec<(usize, Vec<f64>)>,
    /// The normalised 8 s window with `PAD` reflected samples at each end.
    padded: Vec<f64>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    /// log10 mel energies, mel-major (`[mel][frame]`).
    log_mel: Vec<f64>,
}

impl Features {
    fn new() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let hann = (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos())
            .collect();
        let weights = conclave_model::slaney_mel_filters(SAMPLE_RATE, N_FFT, N_MELS);
        let filters = weights
            .chunks_exact(N_BINS)
            .map(|row| {
                let first = row.iter().position(|w| *w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|w| *w != 0.0).unwrap_or(0);
                let taps = row[first..=last.max(first)]
                    .iter()
                    .map(|w| f64::from(*w))
                    .collect();
                (first, taps)
            })
            .collect();
        Self {
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            hann,
            filters,
            padded: vec![0.0; WINDOW_SAMPLES + 2 * PAD],
            frame: vec![0.0; N_FFT],
            log_mel: vec![0.0; N_MELS * FRAMES],
        }
    }

    /// Writes the `[80][800]` features of the last 8 s of `audio` into `out`.
    fn compute(&mut self, audio: &[f32], out: &mut [f32]) {
        debug_assert_eq!(out.len(), N_MELS * FRAMES);
        // The window: zeros, then the last (up to) 8 s.
        let used = audio.len().min(WINDOW_SAMPLES);
        let lead = WINDOW_SAMPLES - used;
        let body = &mut self.padded[PAD..PAD + WINDOW_SAMPLES];
        body[..lead].fill(0.0);
        for (x, &s) in body[lead..].iter_mut().zip(&audio[audio.len() - used..]) {
            *x = if s.is_finite() { f64::from(s) } else { 0.0 };
        }

        // Zero mean, unit variance over the whole window; the reference keeps the result in
        // f32, so round to it too.
        let n = WINDOW_SAMPLES as f64;
        let mean = body.iter().sum::<f64>() / n;
        let variance = body.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let scale = 1.0 / (variance + VARIANCE_EPS).sqrt();
        for x in body.iter_mut() {
            *x = f64::from(((*x - mean) * scale) as f32);
        }

        // Reflect padding (numpy's "reflect": the edge sample is not repeated).
        let last = PAD + WINDOW_SAMPLES - 1;
        for j in 1..=PAD {
            self.padded[PAD - j] = self.padded[PAD + j];
            self.padded[last + j] = self.padded[last - j];
        }

        let mut max = f64::NEG_INFINITY;
        for t in 0..FRAMES {
            let start = t * HOP;
            for ((f, x), w) in self
                .frame
                .iter_mut()
                .zip(&self.padded[start..start + N_FFT])
                .zip(&self.hann)
            {
                *f = x * w;
            }
            // Lengths come from the plan itself, so this cannot fail.
            self.fft
                .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
                .expect("FFT buffers sized by the plan");
            for (m, (first, taps)) in self.filters.iter().enumerate() {
                let energy: f64 = taps
                    .iter()
                    .zip(&self.spectrum[*first..])
                    .map(|(w, c)| w * c.norm_sqr())
                    .sum();
                let v = energy.max(MEL_FLOOR).log10();
                max = max.max(v);
                self.log_mel[m * FRAMES + t] = v;
            }
        }
        let floor = max - 8.0;
        for (o, &v) in out.iter_mut().zip(&self.log_mel) {
            *o = ((v.max(floor) + 4.0) / 4.0) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(audio: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; N_MELS * FRAMES];
        Features::new().compute(audio, &mut out);
        out
    }

    #[test]
    fn silence_gives_the_floor_everywhere() {
        // All zeros: every energy floors at 1e-10, log10 -10, so (−10 + 4) / 4 = −1.5.
        for v in features(&[]) {
            assert!((v + 1.5).abs() < 1e-6, "{v}");
        }
    }

    #[test]
    fn a_tone_lands_in_its_mel_band_and_on_the_right() {
        // 1 kHz for the last second, after 7 s of padding.
        let tone: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 1_000.0 * i as f32 / 16_000.0).sin() * 0.5)
            .collect();
        let f = features(&tone);
        let at = |m: usize, t: usize| f[m * FRAMES + t];
        // The loudest mel bin in a late frame is the one whose filter covers 1 kHz (Slaney: 15
        // mel at 1 kHz; 82 points over 45.25 mel puts it near filter 26).
        let t = 780;
        let loudest = (0..N_MELS)
            .max_by(|&a, &b| at(a, t).total_cmp(&at(b, t)))
            .unwrap();
        assert!((25..=27).contains(&loudest), "{loudest}");
        // The global maximum maps to (max + 4) / 4 and the floor to 8 / 4 = 2 below it.
        let max = f.iter().copied().fold(f32::MIN, f32::max);
        let min = f.iter().copied().fold(f32::MAX, f32::min);
        assert!((max - min - 2.0).abs() < 1e-5, "{max} {min}");
        // Padding frames far from the tone sit at the floor.
        assert!((at(loudest, 100) - min).abs() < 1e-6);
    }

    #[test]
    fn only_the_last_eight_seconds_count() {
        let mut long = vec![0.3f32; 4 * WINDOW_SAMPLES];
        let tail: Vec<f32> = (0..WINDOW_SAMPLES)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        long.extend_from_slice(&tail);
        assert_eq!(features(&long), features(&tail));
    }

    #[test]
    fn non_finite_samples_are_silence() {
        let mut a = vec![0.1f32; 1000];
        a[10] = f32::NAN;
        a[20] = f32::INFINITY;
        let f = features(&a);
        assert!(f.iter().all(|v| v.is_finite()));
    }
}
