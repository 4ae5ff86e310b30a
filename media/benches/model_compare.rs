//! Whisper tiny.en against Whisper base on the same twenty sentences: word error rate and
//! real-time factor with one and two threads.
//!
//! `cargo bench -p conclave-media --bench model_compare` (installs both models into
//! `$CONCLAVE_MODEL_CACHE` or `~/.cache/conclave-models`; needs espeak-ng and sox). Each
//! sentence is transcribed on its own, as the pipeline does with utterances.

use std::time::Instant;

use conclave_media::testing::{MEETING_SENTENCES, model_cache, speak, word_edits, words};
use conclave_media::transcribe::{Transcriber, WhisperTranscriber};
use conclave_model::WhisperModel;

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters the models by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let clips: Vec<Vec<f32>> = MEETING_SENTENCES.iter().map(|s| speak(s, 16_000)).collect();
    let audio_secs: f64 = clips.iter().map(|c| c.len() as f64 / 16_000.0).sum();
    println!(
        "{} sentences, {audio_secs:.1} s of espeak-ng speech",
        clips.len()
    );
    println!(
        "{:<8} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "model", "WER", "RTF 1t", "RTF 2t", "p95 1t", "load"
    );
    for model in [WhisperModel::TinyEn, WhisperModel::Base] {
        if !filter.is_empty() && !filter.iter().any(|f| model.name().contains(f.as_str())) {
            continue;
        }
        let path = conclave_model::install_model(&model_cache(), model).expect("install");
        let mut row = Vec::new();
        let mut wer = 0.0;
        let mut load = 0.0;
        for threads in [1, 2] {
            let started = Instant::now();
            let t = WhisperTranscriber::load(&path, threads).expect("load");
            load = started.elapsed().as_secs_f64();
            // One warm-up run so allocation and page faults are not timed.
            t.transcribe(&clips[0]).unwrap();
            let (mut edits, mut total) = (0, 0);
            let mut times = Vec::new();
            for (clip, text) in clips.iter().zip(MEETING_SENTENCES) {
                let started = Instant::now();
                let got = t.transcribe(clip).unwrap();
                times.push(started.elapsed().as_secs_f64());
                let reference = words(text);
                edits += word_edits(&reference, &words(&got));
                total += reference.len();
                if threads == 1 && word_edits(&reference, &words(&got)) > 0 {
                    eprintln!("  {}: {text:?} -> {got:?}", model.name());
                }
            }
            wer = edits as f64 / total as f64;
            let busy: f64 = times.iter().sum();
            times.sort_by(f64::total_cmp);
            row.push((
                busy / audio_secs,
                times[(times.len() * 95).div_ceil(100) - 1],
            ));
        }
        println!(
            "{:<8} {:>6.1}% {:>9.3} {:>9.3} {:>8.2}s {:>8.2}s",
            model.name(),
            wer * 100.0,
            row[0].0,
            row[1].0,
            row[0].1,
            load
        );
    }
}
