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

use super::{Limits, TranscribeError, Transcriber, guard};

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

/// Tokens any transcription may produce, on top of [`TOKENS_PER_SECOND`].
const MIN_TOKENS: i32 = 12;
/// Tokens per second of audio a transcription may produce (fast speech is ~4-5).
const TOKENS_PER_SECOND: f32 = 7.0;
/// Temperature step of the fallback: 0.0, then one retry at 0.6.
const FALLBACK_STEP: f32 = 0.6;
/// A window whose no-speech probability is above this is not speech.
const NO_SPEECH: f32 = 0.6;

/// whisper.cpp asks this, from its compute loops, whether to stop.
///
/// # Safety
/// `user_data` points to the [`Limits`] of the running call, which outlives it.
unsafe extern "C" fn should_abort(user_data: *mut std::ffi::c_void) -> bool {
    // SAFETY: set in `transcribe_within` to a `Limits` that lives until `full` returns.
    let limits = unsafe { &*(user_data as *const Limits<'_>) };
    limits.stop_reason().is_some()
}

/// Whisper speech-to-text on the CPU, greedy decoding, English.
pub struct WhisperTranscriber {
    context: WhisperContext,
    states: Mutex<Vec<WhisperState>>,
    threads: usize,
    language: String,
    burst: std::sync::Arc<super::burst::Burst>,
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
        Self::load_with_language(path, threads, "en")
    }

    /// Like [`WhisperTranscriber::load`], transcribing `language` (a Whisper code, or `auto`
    /// to detect it; English-only models ignore anything but `en`).
    pub fn load_with_language(
        path: &Path,
        threads: usize,
        language: &str,
    ) -> Result<Self, TranscribeError> {
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
        let language = if context.is_multilingual() {
            language.to_owned()
        } else {
            "en".to_owned()
        };
        Ok(WhisperTranscriber {
            context,
            states: Mutex::new(Vec::new()),
            threads: threads.max(1),
            language,
            burst: super::burst::Burst::start(threads, threads),
        })
    }

    /// Lets a job use up to `max` threads while the rest of the machine is idle (see
    /// [`super::burst`]); the count given at load stays the floor.
    pub fn with_burst(mut self, max: usize) -> Self {
        self.burst = super::burst::Burst::start(self.threads, max);
        self
    }

    fn params<'p>(
        &'p self,
        samples: usize,
        interim: bool,
        threads: usize,
    ) -> FullParams<'p, 'static> {
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        // Bounded work. Speech runs at up to ~6 tokens a second; a decode that produces more
        // is looping (non-speech audio makes tiny models repeat themselves), so it stops.
        let secs = samples as f32 / SAMPLE_RATE as f32;
        params.set_max_tokens(MIN_TOKENS + (secs * TOKENS_PER_SECOND) as i32);
        // At most one retry at a higher temperature for a final (whisper.cpp's default keeps
        // retrying up to 1.0 in steps of 0.2), none for an interim.
        params.set_temperature(0.0);
        params.set_temperature_inc(if interim { 0.0 } else { FALLBACK_STEP });
        params.set_entropy_thold(2.4);
        params.set_logprob_thold(-1.0);
        params.set_no_speech_thold(NO_SPEECH);
        params.set_n_threads(threads as i32);
        params.set_language(Some(&self.language));
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
        self.transcribe_within(pcm, &Limits::none())
    }

    fn transcribe_within(
        &self,
        pcm: &[f32],
        limits: &Limits<'_>,
    ) -> Result<String, TranscribeError> {
        if pcm.is_empty() {
            return Ok(String::new());
        }
        if let Some(why) = limits.stop_reason() {
            return Err(TranscribeError::Aborted(why));
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
        // Only finals burst: they are what the room waits for; interims come every second
        // and would keep a second core busy for little.
        let threads = if limits.interim {
            self.threads
        } else {
            self.burst.threads()
        };
        let _running = self.burst.running();
        let mut params = self.params(audio.len(), limits.interim, threads);
        if let Some(prompt) = limits.prompt {
            params.set_initial_prompt(prompt);
        }
        // SAFETY: the callback only reads `limits`, which outlives this `full` call; the
        // pointer is not kept by whisper.cpp after it returns.
        unsafe {
            params.set_abort_callback(Some(should_abort));
            params.set_abort_callback_user_data(limits as *const Limits<'_> as *mut _);
        }
        let run = state.full(params, audio);
        if let Some(why) = limits.stop_reason() {
            // Whatever came out of an interrupted run is not trusted; the state is dropped.
            return Err(TranscribeError::Aborted(why));
        }
        run.map_err(|e| TranscribeError::Engine(format!("whisper.cpp failed: {e}")))?;
        let mut text = String::new();
        let mut all_silent = true;
        for segment in state.as_iter() {
            all_silent &= segment.no_speech_probability() > NO_SPEECH;
            let piece = segment
                .to_str_lossy()
                .map_err(|e| TranscribeError::Engine(format!("cannot read a segment: {e}")))?;
            text.push_str(&piece);
        }
        if all_silent {
            text.clear();
        }
        // Only a state whose run succeeded goes back to the pool.
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(state);
        Ok(guard::clean(&text))
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
