//! Real-time factor of Whisper tiny.en on a 10 s espeak-ng clip, greedy, two threads.
//!
//! `cargo bench -p conclave-media --bench whisper_rtf -- whisper` (needs espeak-ng and sox;
//! the model is installed into `$CONCLAVE_MODEL_CACHE` or `~/.cache/conclave-models`).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conclave_media::transcribe::{Transcriber, WhisperTranscriber};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};

const CLIP_SECONDS: usize = 10;
const THREADS: usize = 2;

/// About 8.2 s of espeak-ng speech, padded with silence to the 10 s clip: cutting speech
/// mid-word would make Whisper retry at higher temperatures and time the retries instead.
const SCRIPT: &str = "Good morning everyone, thank you for joining the weekly planning meeting. \
    Today we will review the release schedule and discuss the open support tickets.";

fn cache_dir() -> PathBuf {
    conclave_media::testing::model_cache()
}

/// Exactly CLIP_SECONDS of 16 kHz mono audio: espeak-ng speech, padded.
fn ten_second_clip() -> Vec<f32> {
    let mut pcm = conclave_media::testing::speak(SCRIPT, 16_000);
    assert!(
        pcm.len() <= CLIP_SECONDS * 16_000,
        "speech longer than the clip"
    );
    pcm.resize(CLIP_SECONDS * 16_000, 0.0);
    pcm
}

fn whisper_rtf(c: &mut Criterion) {
    let model = conclave_model::install(&cache_dir()).expect("install tiny.en");
    let transcriber = WhisperTranscriber::load(&model, THREADS).expect("load tiny.en");
    let clip = ten_second_clip();
    eprintln!("transcript: {}", transcriber.transcribe(&clip).unwrap());

    let runs = Mutex::new(Vec::new());
    let mut group = c.benchmark_group("whisper");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("tiny_en_greedy_10s_2_threads", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(transcriber.transcribe(&clip).unwrap());
            }
            let elapsed = started.elapsed();
            runs.lock()
                .unwrap()
                .push(elapsed.as_secs_f64() / iters as f64);
            elapsed
        });
    });
    group.finish();

    let mut runs = runs.into_inner().unwrap();
    runs.sort_by(f64::total_cmp);
    let median = runs[runs.len() / 2];
    eprintln!(
        "real-time factor: {:.3} (median {:.3} s per {CLIP_SECONDS} s clip, {THREADS} threads, {} runs)",
        median / CLIP_SECONDS as f64,
        median,
        runs.len()
    );
}

criterion_group!(benches, whisper_rtf);
criterion_main!(benches);
