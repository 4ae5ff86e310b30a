//! Smart Turn v3.2 on espeak-ng speech: finished sentences against ones cut off mid-clause.
//!
//! The set was written before the model was first run and is not tuned to it. Each utterance
//! is followed by 200 ms of silence, what the model sees when it runs at Pipecat's VAD stop.
//! Skips (with a note on stderr) when the model or ONNX Runtime cannot be installed.

use std::time::{Duration, Instant};

use conclave_media::smart_turn::{SAMPLE_RATE, SmartTurn, WINDOW_SAMPLES};
use conclave_media::testing::{smart_turn_model, speak};

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

fn utterance(text: &str) -> Vec<f32> {
    let mut audio = speak(text, SAMPLE_RATE);
    audio.resize(
        audio.len() + SAMPLE_RATE as usize * TRAILING_SILENCE_MS / 1000,
        0.0,
    );
    audio
}

#[test]
fn tells_finished_sentences_from_cut_off_ones() {
    let Some(model) = model() else { return };
    let mut times = Vec::new();
    let mut run = |text: &str| {
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
    let complete: Vec<f32> = COMPLETE.iter().map(|t| run(t)).collect();
    eprintln!("unfinished:");
    let unfinished: Vec<f32> = UNFINISHED.iter().map(|t| run(t)).collect();

    let right = complete.iter().filter(|p| **p > 0.5).count()
        + unfinished.iter().filter(|p| **p <= 0.5).count();
    let total = complete.len() + unfinished.len();
    let accuracy = right as f64 / total as f64;
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (mc, mu) = (mean(&complete), mean(&unfinished));
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let mut sorted: Vec<f64> = times.iter().map(ms).collect();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "accuracy at 0.5: {right}/{total} ({:.0}%); mean probability complete {mc:.3}, \
         unfinished {mu:.3}; ms per call: mean {:.1}, median {:.1}, min {:.1}, max {:.1}",
        accuracy * 100.0,
        sorted.iter().sum::<f64>() / sorted.len() as f64,
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    );
    assert!(accuracy >= 0.75, "accuracy {accuracy}");
    assert!(mc > mu, "complete {mc} vs unfinished {mu}");
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
