//! The Piper voice on real sentences: length and level, several threads at once, and
//! intelligibility measured by Whisper tiny.en's word error rate on what it says.
//!
//! The voice is installed into `$CONCLAVE_MODEL_CACHE` (else `~/.cache/conclave-models`) the
//! first time, or read from `$CONCLAVE_TEST_VOICE_DIR`; the tests skip, with a message, when
//! it cannot be had. espeak-ng (the phonemizer) must be installed (scripts/setup.sh).
//!
//! ONNX Runtime allows one environment per process: this binary loads only the voice.

use std::time::Instant;

use conclave_media::resample::Downsampler;
use conclave_media::testing::{piper_voice, whisper_model, word_edits, words};
use conclave_media::transcribe::{Transcriber, WhisperTranscriber};
use conclave_media::voice::Voice;
use conclave_media::voice::piper::PiperVoice;

/// Meeting-style questions the agent asks.
const QUESTIONS: [&str; 4] = [
    "What is your budget for this year?",
    "Could you walk me through your current approval process?",
    "When would you like the new system to be up and running?",
    "How many people on your team would use it every day?",
];

fn voice() -> Option<&'static PiperVoice> {
    match piper_voice() {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("Piper voice not available ({e}); skipped");
            None
        }
    }
}

fn peak(pcm: &[i16]) -> u16 {
    pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
}

#[test]
fn piper_speaks_a_question_from_several_threads() {
    let started = Instant::now();
    let Some(voice) = voice() else { return };
    eprintln!("voice ready in {:.2} s", started.elapsed().as_secs_f64());
    let sentence = QUESTIONS[0];
    let started = Instant::now();
    let phonemes = voice.phonemize(sentence).unwrap();
    eprintln!(
        "phonemes in {:.0} ms: {phonemes}",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        phonemes.ends_with('?') && !phonemes.contains('_'),
        "{phonemes}"
    );
    let started = Instant::now();
    let pcm = voice.synthesize(sentence).unwrap();
    let took = started.elapsed();
    let secs = pcm.len() as f64 / 48_000.0;
    eprintln!(
        "piper: {secs:.2} s of speech in {:.0} ms, peak {}",
        took.as_secs_f64() * 1e3,
        peak(&pcm)
    );
    assert_eq!(voice.name(), "piper");
    assert!((1.0..5.0).contains(&secs), "{secs} s");
    assert!(peak(&pcm) > 3_000, "peak {}", peak(&pcm));

    // Shared between threads: each gets a whole sentence, the session is taken in turn.
    let lengths: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = QUESTIONS[1..3]
            .iter()
            .map(|q| s.spawn(move || voice.synthesize(q).unwrap().len()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (q, n) in QUESTIONS[1..3].iter().zip(lengths) {
        let secs = n as f64 / 48_000.0;
        assert!((1.0..6.0).contains(&secs), "{q}: {secs} s");
    }

    // Nothing to say is no audio, not an error.
    assert!(voice.synthesize(" ... ").unwrap().is_empty());
}

#[test]
fn whisper_understands_piper_within_a_20_percent_word_error_rate() {
    let Some(voice) = voice() else { return };
    let whisper = WhisperTranscriber::load(&whisper_model(), 2).unwrap();
    let (mut edits, mut total, mut synth_s, mut audio_s) = (0, 0, 0.0, 0.0);
    for sentence in QUESTIONS {
        let started = Instant::now();
        let pcm = voice.synthesize(sentence).unwrap();
        let took = started.elapsed().as_secs_f64();
        let secs = pcm.len() as f64 / 48_000.0;
        synth_s += took;
        audio_s += secs;
        // As the pipeline hands Whisper an utterance: with the silence around it (300 ms
        // before, 500 ms after). Cut flush at the last sample, Whisper tiny.en sometimes
        // repeats the sentence until its window is full.
        let pcm: Vec<f32> = std::iter::repeat_n(0.0, 14_400)
            .chain(pcm.iter().map(|&s| f32::from(s) / 32_768.0))
            .chain(std::iter::repeat_n(0.0, 24_000))
            .collect();
        let mut down = Downsampler::new(pcm.len()).unwrap();
        let pcm16 = down.process(&pcm).unwrap().to_vec();
        let heard = whisper.transcribe(&pcm16).unwrap();
        let (reference, hypothesis) = (words(sentence), words(&heard));
        let e = word_edits(&reference, &hypothesis);
        eprintln!(
            "synth {:.0} ms for {secs:.2} s (RTF {:.2}) | {e} edits / {} words | said: {sentence} | heard: {heard}",
            took * 1e3,
            took / secs,
            reference.len()
        );
        edits += e;
        total += reference.len();
    }
    let wer = edits as f64 / total as f64;
    eprintln!(
        "piper: WER {:.1}% ({edits}/{total}); synthesis {:.0} ms per sentence, RTF {:.2}",
        100.0 * wer,
        synth_s * 1e3 / QUESTIONS.len() as f64,
        synth_s / audio_s
    );
    assert!(wer <= 0.20, "word error rate {:.1}%", 100.0 * wer);
}
