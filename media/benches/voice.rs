//! Time to first audio: how long each voice takes to synthesize one typical sentence (the
//! agent plays a reply sentence by sentence, so this is the wait before it starts talking).
//! Engines that are not installed are skipped with a message.
//!
//! `cargo bench -p conclave-media --bench voice` (Piper is installed into
//! `$CONCLAVE_MODEL_CACHE` or `~/.cache/conclave-models` the first time; flite and espeak-ng
//! come from scripts/setup.sh).

use std::time::Duration;

use conclave_media::voice::piper::PiperVoice;
use conclave_media::voice::{CommandEngine, CommandVoice, Voice};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};

/// A typical agent question: about 3 s of speech.
const SENTENCE: &str = "Could you walk me through your current approval process?";

fn voices() -> Vec<&'static dyn Voice> {
    let mut out: Vec<&'static dyn Voice> = Vec::new();
    match conclave_media::testing::piper_voice() {
        Ok(v) => out.push(v),
        Err(e) => eprintln!("piper not available ({e}); skipped"),
    }
    for engine in [CommandEngine::Flite, CommandEngine::EspeakNg] {
        match CommandVoice::new(engine) {
            Ok(v) => out.push(Box::leak(Box::new(v))),
            Err(e) => eprintln!("{e}; skipped"),
        }
    }
    out
}

fn first_audio(c: &mut Criterion) {
    let mut group = c.benchmark_group("voice_first_audio");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for voice in voices() {
        let pcm = voice.synthesize(SENTENCE).expect("synthesis");
        eprintln!(
            "{}: {:.2} s of speech for {SENTENCE:?}",
            voice.name(),
            pcm.len() as f64 / 48_000.0
        );
        group.bench_function(voice.name(), |b| {
            b.iter(|| std::hint::black_box(voice.synthesize(SENTENCE).unwrap().len()))
        });
    }
    group.finish();

    // Where Piper's time goes: espeak-ng's phonemes, and the same voice on two threads.
    let Ok(piper) = conclave_media::testing::piper_voice() else {
        return;
    };
    let mut group = c.benchmark_group("piper_parts");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("phonemize", |b| {
        b.iter(|| std::hint::black_box(piper.phonemize(SENTENCE).unwrap()))
    });
    group.bench_function("synthesize_native_22k", |b| {
        b.iter(|| std::hint::black_box(piper.synthesize_native(SENTENCE).unwrap().len()))
    });
    let files = conclave_model::voice_paths(&conclave_media::testing::model_cache());
    match PiperVoice::load_with_threads(&files.runtime, &files.model, &files.config, 2) {
        Ok(two) => {
            group.bench_function("synthesize_2_threads", |b| {
                b.iter(|| std::hint::black_box(two.synthesize(SENTENCE).unwrap().len()))
            });
        }
        Err(e) => eprintln!("two-thread Piper session: {e}; skipped"),
    }
    group.finish();
}

criterion_group!(benches, first_audio);
criterion_main!(benches);
