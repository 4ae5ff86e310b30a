//! Smart Turn v3.2 on espeak-ng speech: finished sentences against ones cut off mid-clause.
//!
//! The set was written before the model was first run and is not tuned to it. Each utterance
//! is followed by 200 ms of silence, what the model sees when it runs at Pipecat's VAD stop.
//! Skips (with a note on stderr) when the model or ONNX Runtime cannot be installed.
//!
//! The audio is made here rather than with `testing::speak` because sox dithers by default
//! when it writes 16 bits, with fresh noise each run, and the model is sensitive to that
//! noise in espeak's digitally silent gaps: one sentence scored 0.24 to 0.77 over six runs.
//! `-D` turns dither off, so every run sees the same samples.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use conclave_media::smart_turn::{SAMPLE_RATE, SmartTurn, WINDOW_SAMPLES};
use conclave_media::testing::{scratch_dir, smart_turn_model};

const COMPLETE: [&str; 8] = [
    "We have about eighty thousand for the first year.",
    "Could you send me the contract by Friday?",
    "That sounds good to me.",
    "I think the main problem is that our team is too small.",
    "Let me check with my manager and get back to you tomorrow.",
    "Yes, we can start next month.",
    "Thank you, that was really helpful.",
    "How long does the rollout usually take?",
];

const UNFINISHED: [&str; 8] = [
    "We have about eighty thousand and",
    "I think the main problem is that",
    "Could you send me the",
    "Let me check with my manager and",
    "The reason we switched was because",
    "So what I would like to do is",
    "If we decide to go ahead with the",
    "We need approval from the finance director before we",
];

const TRAILING_SILENCE_MS: usize = 200;

fn model() -> Option<&'static SmartTurn> {
    match smart_turn_model() {
        Ok(model) => Some(model),
        Err(e) => {
            eprintln!("skipping: Smart Turn unavailable: {e}");
            None
        }
    }
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .expect("espeak-ng and sox (scripts/setup.sh)");
    assert!(status.success(), "{command:?}: {status}");
}

/// `text` from espeak-ng, resampled by sox to 16 kHz mono 16-bit without dither, in -1..1.
fn speak_undithered(text: &str, dir: &Path) -> Vec<f32> {
    let (raw, wav) = (dir.join("raw.wav"), dir.join("16k.wav"));
    run(Command::new("espeak-ng").arg("-w").arg(&raw).arg(text));
    run(Command::new("sox")
        .arg("-D")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1", "-b", "16"])
        .arg(&wav));
    let mut reader = hound::WavReader::open(&wav).expect("sox wrote a WAV file");
    assert_eq!(reader.spec().sample_rate, SAMPLE_RATE);
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32_768.0)
        .collect()
}

fn utterance(text: &str) -> Vec<f32> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch_dir(&format!("smart-turn-{n}"));
    let mut audio = speak_undithered(text, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    audio.resize(
        audio.len() + SAMPLE_RATE as usize * TRAILING_SILENCE_MS / 1000,
        0.0,
    );
    audio
}

/// Probabilities of the complete and the unfinished set, printed with the time per call.
struct Scores {
    complete: Vec<f32>,
    unfinished: Vec<f32>,
}

impl Scores {
    fn measure(model: &SmartTurn) -> Scores {
        let mut times = Vec::new();
        let mut score = |text: &str| {
            let audio = utterance(text);
            let start = Instant::now();
            let p = model.end_of_turn_probability(&audio).unwrap();
            times.push(start.elapsed());
            assert!((0.0..=1.0).contains(&p), "{p}");
            eprintln!(
                "  {p:.3}  {:>4.1} s  {text}",
                audio.len() as f64 / f64::from(SAMPLE_RATE)
            );
            p
        };
        eprintln!("complete:");
        let complete = COMPLETE.iter().map(|t| score(t)).collect();
        eprintln!("unfinished:");
        let unfinished = UNFINISHED.iter().map(|t| score(t)).collect();
        let this = Scores {
            complete,
            unfinished,
        };
        let (right, total) = this.right();
        eprintln!(
            "accuracy at 0.5: {right}/{total} ({:.0}%); mean probability complete {:.3}, \
             unfinished {:.3}; {}",
            this.accuracy() * 100.0,
            mean(&this.complete),
            mean(&this.unfinished),
            summary(&times),
        );
        this
    }

    fn right(&self) -> (usize, usize) {
        let right = self.complete.iter().filter(|p| **p > 0.5).count()
            + self.unfinished.iter().filter(|p| **p <= 0.5).count();
        (right, self.complete.len() + self.unfinished.len())
    }

    fn accuracy(&self) -> f64 {
        let (right, total) = self.right();
        right as f64 / total as f64
    }
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

/// "ms per call: mean, median, min, max" of `times`.
fn summary(times: &[Duration]) -> String {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    format!(
        "ms per call: mean {:.1}, median {:.1}, min {:.1}, max {:.1} ({} calls)",
        ms.iter().sum::<f64>() / ms.len() as f64,
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    )
}

#[test]
fn finished_sentences_score_higher_than_cut_off_ones() {
    let Some(model) = model() else { return };
    let scores = Scores::measure(model);
    let (c, u) = (mean(&scores.complete), mean(&scores.unfinished));
    assert!(c > u, "complete {c} vs unfinished {u}");
}

/// The accuracy the model would need to decide turns alone. On espeak-ng speech it gets 9 of
/// 16 (56%): espeak ends every input with a sentence-final fall, and the model reads the cut-off
/// ones as finished (6 of 8 above 0.5), so this is measured but not enforced.
#[test]
#[ignore = "espeak-ng speech: 9/16 right (56%), below 75%"]
fn tells_finished_sentences_from_cut_off_ones() {
    let Some(model) = model() else { return };
    let accuracy = Scores::measure(model).accuracy();
    assert!(accuracy >= 0.75, "accuracy {accuracy}");
}

/// Time per call on one 2.8 s utterance, one intra-op thread (the default) against two.
#[test]
fn time_per_call() {
    let Some(model) = model() else { return };
    let runtime = conclave_model::vad_paths(&conclave_media::testing::model_cache()).runtime;
    let path = conclave_model::smart_turn_path(&conclave_media::testing::model_cache());
    let two = SmartTurn::load_with_threads(&runtime, &path, 2).unwrap();
    let audio = utterance(COMPLETE[0]);
    for (name, model) in [("1 thread", model), ("2 threads", &two)] {
        model.end_of_turn_probability(&audio).unwrap();
        let times: Vec<Duration> = (0..10)
            .map(|_| {
                let start = Instant::now();
                model.end_of_turn_probability(&audio).unwrap();
                start.elapsed()
            })
            .collect();
        eprintln!("{name}: {}", summary(&times));
    }
}

#[test]
fn silence_and_odd_lengths_do_not_panic() {
    let Some(model) = model() else { return };
    let cases: [(&str, Vec<f32>); 6] = [
        ("empty", vec![]),
        ("one sample", vec![0.0]),
        ("100 ms of silence", vec![0.0; 1_600]),
        ("8 s of silence", vec![0.0; WINDOW_SAMPLES]),
        ("20 s of silence", vec![0.0; 20 * SAMPLE_RATE as usize]),
        ("NaN and infinity", vec![f32::NAN, f32::INFINITY, 0.5, -0.5]),
    ];
    for (name, audio) in cases {
        let p = model.end_of_turn_probability(&audio).unwrap();
        eprintln!("  {p:.3}  {name}");
        assert!((0.0..=1.0).contains(&p), "{name}: {p}");
    }
}

#[test]
fn the_last_eight_seconds_decide() {
    let Some(model) = model() else { return };
    // Ten seconds of a finished sentence before a cut-off one change nothing once they are
    // more than 8 s back.
    let tail = utterance("I think the main problem is that");
    let mut long = vec![0.0f32; 10 * SAMPLE_RATE as usize];
    let head = utterance("We have about eighty thousand for the first year.");
    long[..head.len()].copy_from_slice(&head);
    long.extend_from_slice(&tail);
    let mut window = vec![0.0f32; WINDOW_SAMPLES - tail.len()];
    window.extend_from_slice(&tail);
    let a = model.end_of_turn_probability(&long).unwrap();
    let b = model.end_of_turn_probability(&window).unwrap();
    let c = model.end_of_turn_probability(&tail).unwrap();
    assert_eq!(a, b);
    assert_eq!(b, c, "left padding is zeros");
}

#[test]
fn shares_onnx_runtime_with_silero() {
    let Some(model) = model() else { return };
    // ONNX Runtime allows one environment per process; both models must get it.
    let vad = conclave_media::testing::silero_model();
    let mut detector = vad.detector().unwrap();
    detector.probability(&[0.0; 512]).unwrap();
    model.end_of_turn_probability(&[0.0; 1_600]).unwrap();
}
