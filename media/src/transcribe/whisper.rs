//! Local speech-to-text with whisper.cpp (through whisper-rs).
//!
//! One loaded model serves every room: the context holds the read-only weights, and each
//! transcription runs in a `WhisperState` (KV caches and scratch buffers, tens of MB for
//! tiny.en). States are pooled rather than made per call or kept behind a single lock, so
//! concurrent utterances from different rooms run in parallel and steady-state calls allocate
//! nothing new.

use std::path::Path;
use std::sync::{Mutex, Once};

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use super::{TranscribeError, Transcriber};

/// Whisper's input rate.
const SAMPLE_RATE: usize = 16_000;

/// whisper.cpp returns nothing at all for input under one second; speech that short (a
/// "yes", a name) is padded with silence, which is what Whisper does to every window anyway.
const MIN_SAMPLES: usize = SAMPLE_RATE * 11 / 10;

/// Encoder positions beyond the audio itself, so the model still sees some trailing
/// padding as it did in training (too tight a window makes tiny models repeat themselves).
const AUDIO_CTX_MARGIN: usize = 64;
/// The smallest encoder window used (about 10 s): below it, tiny.en loses short words such as
/// a lone "yes".
const AUDIO_CTX_MIN: usize = 512;
/// One decoding window. Up to this length timestamp tokens buy nothing; beyond it whisper.cpp
/// needs them to decide where the next window starts.
const WINDOW_SAMPLES: usize = SAMPLE_RATE * 30;

/// Whisper speech-to-text on the CPU, greedy decoding, English.
pub struct WhisperTranscriber {
    context: WhisperContext,
    states: Mutex<Vec<WhisperState>>,
    threads: usize,
}

impl std::fmt::Debug for WhisperTranscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperTranscriber")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl WhisperTranscriber {
    /// Loads a whisper.cpp ggml model (such as the one `conclave_model::install` provides),
    /// using `threads` CPU threads per transcription (at least one).
    ///
    /// The file is verified first: whisper.cpp aborts the process on some malformed files
    /// rather than returning an error, so a missing, truncated or foreign file must be
    /// refused before it gets there.
    pub fn load(path: &Path, threads: usize) -> Result<Self, TranscribeError> {
        let model_error = |reason: String| TranscribeError::Model {
            path: path.display().to_string(),
            reason,
        };
        conclave_model::verify(path).map_err(|e| {
            model_error(match e {
                conclave_model::ModelError::Invalid { problem, .. } => problem,
                conclave_model::ModelError::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            })
        })?;
        silence_whisper_logs();
        let context = WhisperContext::new_with_params(path, WhisperContextParameters::default())
            .map_err(|e| model_error(format!("whisper.cpp refused it: {e}")))?;
        Ok(WhisperTranscriber {
            context,
            states: Mutex::new(Vec::new()),
            threads: threads.max(1),
        })
    }

    fn params(&self, samples: usize) -> FullParams<'static, 'static> {
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.threads as i32);
        params.set_language(Some("en"));
        params.set_translate(false);
        // Each utterance stands alone: a pooled state must not carry the previous speaker's
        // words into the next prompt.
        params.set_no_context(true);
        params.set_no_timestamps(samples <= WINDOW_SAMPLES);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        if samples < WINDOW_SAMPLES {
            // The encoder otherwise attends over a full 30 s window (1500 positions) however
            // short the utterance; sizing it to the audio (one position per 20 ms, plus a
            // margin) makes a 5 s utterance several times faster, which is most of the
            // end-of-speech-to-caption latency.
            let ctx = (samples / 320 + AUDIO_CTX_MARGIN).clamp(AUDIO_CTX_MIN, 1500);
            params.set_audio_ctx(ctx as i32);
        }
        params
    }

    fn take_state(&self) -> Result<WhisperState, TranscribeError> {
        let pooled = self.states.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(state) => Ok(state),
            None => self.context.create_state().map_err(|e| {
                TranscribeError::Engine(format!("cannot create a decoder state: {e}"))
            }),
        }
    }
}

impl Transcriber for WhisperTranscriber {
    fn transcribe(&self, pcm: &[f32]) -> Result<String, TranscribeError> {
        if pcm.is_empty() {
            return Ok(String::new());
        }
        let padded;
        let audio = if pcm.len() < MIN_SAMPLES {
            let mut v = Vec::with_capacity(MIN_SAMPLES);
            v.extend_from_slice(pcm);
            v.resize(MIN_SAMPLES, 0.0);
            padded = v;
            &padded[..]
        } else {
            pcm
        };

        let mut state = self.take_state()?;
        state
            .full(self.params(audio.len()), audio)
            .map_err(|e| TranscribeError::Engine(format!("whisper.cpp failed: {e}")))?;
        let mut text = String::new();
        for segment in state.as_iter() {
            let piece = segment
                .to_str_lossy()
                .map_err(|e| TranscribeError::Engine(format!("cannot read a segment: {e}")))?;
            text.push_str(&piece);
        }
        // Only a state whose run succeeded goes back to the pool.
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(state);
        Ok(text.trim().to_string())
    }
}

/// whisper.cpp prints its model and timing reports to stderr; routing them through
/// whisper-rs's hooks (no log backend enabled) keeps a server's stderr for our own logs.
fn silence_whisper_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(whisper_rs::install_logging_hooks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcriber_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<WhisperTranscriber>();
    }

    #[test]
    fn missing_model_is_a_model_error() {
        let err =
            WhisperTranscriber::load(Path::new("/nonexistent/ggml-tiny.en.bin"), 1).unwrap_err();
        assert!(matches!(err, TranscribeError::Model { .. }), "{err:?}");
        assert!(err.to_string().contains("No such file"), "{err}");
    }
}
