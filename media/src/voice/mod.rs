//! The agent's voice: text in, 48 kHz mono PCM out, one sentence at a time so the first words
//! play while the rest are still being made.
//!
//! Engines: a Piper voice run through ONNX Runtime ([`piper`], the default when installed) and
//! the command-line synthesizers flite and espeak-ng ([`CommandVoice`], spawned per sentence,
//! never linked). [`best_available`] picks the best one present.

mod command;
pub mod piper;
pub mod wav;

pub use command::{CommandEngine, CommandVoice};

use std::time::Duration;

/// The sample rate every voice produces.
pub const VOICE_RATE: u32 = 48_000;

/// Why a sentence could not be spoken.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// The engine's program or model is missing.
    #[error("voice not available: {0}")]
    Unavailable(String),
    /// The engine failed on this text.
    #[error("synthesis failed: {0}")]
    Failed(String),
    /// The engine took longer than allowed.
    #[error("synthesis timed out after {0:?}")]
    Timeout(Duration),
}

/// A text-to-speech engine.
pub trait Voice: Send + Sync {
    /// Short name for logs and metrics (`piper`, `flite`, `espeak-ng`).
    fn name(&self) -> &str;
    /// Speaks one sentence: 48 kHz mono samples. Blocking; call it off the async runtime.
    fn synthesize(&self, sentence: &str) -> Result<Vec<i16>, VoiceError>;
}

/// Longest sentence handed to an engine; longer text is split at commas or spaces.
pub const MAX_SENTENCE_CHARS: usize = 240;

/// Splits text into sentences (at `.`, `!`, `?`, `;` followed by a space or the end), so each
/// can be synthesized and played in turn. Over-long sentences are split further.
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        cur.push(c);
        let end = matches!(c, '.' | '!' | '?' | ';')
            && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if end {
            push_sentence(&mut out, &cur);
            cur.clear();
        }
    }
    push_sentence(&mut out, &cur);
    out
}

fn push_sentence(out: &mut Vec<String>, s: &str) {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.is_empty() {
        return;
    }
    let mut rest = s.as_str();
    while rest.chars().count() > MAX_SENTENCE_CHARS {
        let limit = rest
            .char_indices()
            .nth(MAX_SENTENCE_CHARS)
            .map_or(rest.len(), |(i, _)| i);
        let cut = rest[..limit]
            .rfind(", ")
            .map(|i| i + 1)
            .or_else(|| rest[..limit].rfind(' '))
            .unwrap_or(limit);
        out.push(rest[..cut].trim().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
}

/// Resamples mono `samples` at `from` Hz to 48 kHz (rubato's FFT resampler over the whole
/// sentence, its start-up delay trimmed).
pub fn to_48k(samples: &[f32], from: u32) -> Result<Vec<i16>, VoiceError> {
    use rubato::audioadapter_buffers::direct::InterleavedSlice;
    use rubato::{Fft, FixedSync, Resampler};
    let to_i16 = |x: f32| (x.clamp(-1.0, 1.0) * 32767.0) as i16;
    if from == VOICE_RATE {
        return Ok(samples.iter().copied().map(to_i16).collect());
    }
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let mut fft = Fft::<f32>::new(
        from as usize,
        VOICE_RATE as usize,
        1024,
        1,
        FixedSync::Input,
    )
    .map_err(|e| VoiceError::Failed(format!("resampler: {e}")))?;
    let input = InterleavedSlice::new(samples, 1, samples.len())
        .map_err(|e| VoiceError::Failed(format!("resampler input: {e}")))?;
    let out = fft
        .process_all(&input, samples.len(), None)
        .map_err(|e| VoiceError::Failed(format!("resample: {e}")))?;
    let want = (samples.len() as f64 * f64::from(VOICE_RATE) / f64::from(from)).round() as usize;
    let mut data = out.take_data();
    data.truncate(want);
    Ok(data.into_iter().map(to_i16).collect())
}

/// The best engine this machine has: the Piper voice ([`piper::PiperVoice`]) when its files
/// are given and load, then flite, then espeak-ng. `None` when there is none.
pub fn best_available(piper: Option<Box<dyn Voice>>) -> Option<Box<dyn Voice>> {
    if let Some(p) = piper {
        return Some(p);
    }
    for engine in [CommandEngine::Flite, CommandEngine::EspeakNg] {
        if let Ok(v) = CommandVoice::new(engine) {
            return Some(Box::new(v));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_at_ends_not_inside_numbers() {
        assert_eq!(
            split_sentences("Hi Dana. What budget do you have, about $1.5 million? Thanks!"),
            vec![
                "Hi Dana.",
                "What budget do you have, about $1.5 million?",
                "Thanks!"
            ]
        );
        assert_eq!(split_sentences("  \n "), Vec::<String>::new());
        assert_eq!(split_sentences("no end mark"), vec!["no end mark"]);
    }

    #[test]
    fn long_sentences_are_cut_at_commas() {
        let long = format!(
            "{}, {}.",
            "word ".repeat(40).trim(),
            "more ".repeat(30).trim()
        );
        let parts = split_sentences(&long);
        assert!(parts.len() >= 2, "{parts:?}");
        assert!(
            parts
                .iter()
                .all(|p| p.chars().count() <= MAX_SENTENCE_CHARS)
        );
        assert!(parts[0].ends_with(','));
    }

    #[test]
    fn resampling_keeps_length_and_pitch() {
        // One second of 441 Hz at 22.05 kHz: 48,000 samples out, zero crossings of 441 Hz.
        let from = 22_050;
        let x: Vec<f32> = (0..from)
            .map(|i| (2.0 * std::f32::consts::PI * 441.0 * i as f32 / from as f32).sin() * 0.5)
            .collect();
        let y = to_48k(&x, from).unwrap();
        assert_eq!(y.len(), 48_000);
        let crossings = y
            .windows(2)
            .skip(1000)
            .take(46_000)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        // 441 Hz: 882 crossings per second; 46,000 samples is 0.958 s.
        assert!((830..=860).contains(&crossings), "{crossings}");
    }
}
