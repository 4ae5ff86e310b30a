//! Real speech for tests: espeak-ng text-to-speech resampled by sox, and word error rate.

use std::path::Path;
use std::process::Command;

/// `text` spoken by espeak-ng, as 48 kHz mono samples in -1..1.
pub fn speak_48k(text: &str, dir: &Path) -> Vec<f32> {
    std::fs::create_dir_all(dir).unwrap();
    let id = conclave::ids::random_id(8);
    let raw = dir.join(format!("{id}-22k.wav"));
    let out = dir.join(format!("{id}-48k.wav"));
    let ok = Command::new("espeak-ng")
        .arg("-w")
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng (scripts/setup.sh installs it)");
    assert!(ok.success(), "espeak-ng failed");
    let ok = Command::new("sox")
        .arg(&raw)
        .args(["-r", "48000", "-c", "1", "-b", "16"])
        .arg(&out)
        .status()
        .expect("sox");
    assert!(ok.success(), "sox failed");
    let mut reader = hound::WavReader::open(&out).unwrap();
    reader
        .samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect()
}

/// Lowercase words without punctuation.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate: word-level edit distance over the reference length.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let r = words(reference);
    let h = words(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut cur = vec![i; h.len() + 1];
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

/// The Whisper model for tests, installed once into `$CONCLAVE_MODEL_CACHE` (default
/// `~/.cache/conclave-models`).
pub fn whisper_model() -> std::path::PathBuf {
    let cache = std::env::var_os("CONCLAVE_MODEL_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/conclave-models")
        });
    conclave_model::install(&cache).expect("Whisper model install")
}
