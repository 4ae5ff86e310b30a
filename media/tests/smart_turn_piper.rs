//! Smart Turn v3.2 on Piper speech, the way the agent meets it: a finished sentence against
//! the same speaker pausing mid-sentence (at a comma, where people stop to think), and what
//! each verdict does to the agent's turn-taking.
//!
//! Each sentence of the set (written before the model was run on it, not tuned to it) has a
//! comma. "Finished" is the whole sentence; "paused" is its audio up to the first silence of
//! 100 ms or more inside it, so the voice stops with the rise or level pitch of an unfinished
//! thought, not espeak-ng's sentence-final fall. Both get 200 ms of silence after the last
//! voice, what the model sees at the pipeline's end of utterance.
//!
//! What the verdicts cost, with the agent's settings (END_OF_TURN 0.4 s without a verdict,
//! 0 s after "complete", 1.5 s after "incomplete", see `turns.rs`):
//! - a paused sentence judged complete is a **false cut-off**: the agent says "Okay." about
//!   0.4 s into the pause (without the model it would at 0.5 s: every such pause is one);
//! - a finished sentence judged incomplete is **added delay**: 1.1 s more, unless its final
//!   transcript ends the sentence first (the words then win, see `turns.rs`).
//!
//! Skips (with a note on stderr) when the model or the voice cannot be installed.

use conclave_media::resample::Downsampler;
use conclave_media::smart_turn::{SAMPLE_RATE, SmartTurn};
use conclave_media::testing::{piper_voice, smart_turn_model};
use conclave_media::voice::Voice;

const SENTENCES: [&str; 10] = [
    "We have about eighty thousand, and most of it is for the first year.",
    "Before we decide, I need to talk to our finance director.",
    "If the pilot goes well, we would roll it out to every office.",
    "Our current tool works, but it drops calls every single day.",
    "Ideally, we would be live by the end of the first quarter.",
    "The budget depends on the number of seats, so I cannot say yet.",
    "When we tried the last vendor, the rollout took almost six months.",
    "Honestly, the biggest problem is that nobody trusts the reports.",
    "To be fair, the old system was fine when we were smaller.",
    "My manager signs off on anything above fifty thousand, and I handle the rest.",
];

const TRAILING_SILENCE_MS: usize = 200;
/// A silence inside a sentence at least this long is where the "paused" version stops.
const PAUSE_MS: usize = 100;

/// Piper's 48 kHz output as 16 kHz samples in -1..1.
fn speak_16k(voice: &dyn Voice, text: &str) -> Vec<f32> {
    let pcm48: Vec<f32> = voice
        .synthesize(text)
        .expect("Piper speaks")
        .iter()
        .map(|&s| f32::from(s) / 32_768.0)
        .collect();
    let mut down = Downsampler::new(pcm48.len() + 5_760).unwrap();
    down.process(&pcm48).unwrap().to_vec()
}

/// 10 ms blocks of 16 kHz audio: louder than -40 dBFS?
fn voiced_blocks(pcm: &[f32]) -> Vec<bool> {
    pcm.chunks(160)
        .map(|b| (b.iter().map(|s| s * s).sum::<f32>() / b.len() as f32).sqrt() > 0.01)
        .collect()
}

/// The audio up to the last voice, and up to the first inner pause of [`PAUSE_MS`] (after at
/// least 0.6 s of speech), each followed by the trailing silence.
fn finished_and_paused(pcm: &[f32]) -> Option<(Vec<f32>, Vec<f32>)> {
    let voiced = voiced_blocks(pcm);
    let first = voiced.iter().position(|v| *v)?;
    let last = voiced.iter().rposition(|v| *v)?;
    let need = PAUSE_MS / 10;
    let mut run = 0;
    let mut cut = None;
    for (i, v) in voiced.iter().enumerate().take(last).skip(first + 60) {
        if *v {
            run = 0;
        } else {
            run += 1;
            if run == need {
                cut = Some(i + 1 - need);
                break;
            }
        }
    }
    let silence = vec![0.0; SAMPLE_RATE as usize * TRAILING_SILENCE_MS / 1000];
    let with_tail = |end_block: usize| {
        let mut a = pcm[..(end_block * 160).min(pcm.len())].to_vec();
        a.extend_from_slice(&silence);
        a
    };
    Some((with_tail(last + 1), with_tail(cut?)))
}

#[test]
fn piper_speech_finished_against_paused_mid_sentence() {
    let (model, voice): (&SmartTurn, _) = match (smart_turn_model(), piper_voice()) {
        (Ok(m), Ok(v)) => (m, v),
        (m, v) => {
            eprintln!(
                "skipping: Smart Turn {:?}, Piper {:?}",
                m.err(),
                v.err().map(|e| e.to_string())
            );
            return;
        }
    };
    let (mut right_finished, mut right_paused, mut n) = (0, 0, 0);
    let (mut mean_finished, mut mean_paused) = (0.0f32, 0.0f32);
    eprintln!("  finished  paused   sentence (paused at)");
    for text in SENTENCES {
        let pcm = speak_16k(voice, text);
        let Some((finished, paused)) = finished_and_paused(&pcm) else {
            eprintln!("  (no inner pause of {PAUSE_MS} ms) {text}");
            continue;
        };
        let p_finished = model.end_of_turn_probability(&finished).unwrap();
        let p_paused = model.end_of_turn_probability(&paused).unwrap();
        n += 1;
        mean_finished += p_finished;
        mean_paused += p_paused;
        right_finished += usize::from(p_finished >= 0.5);
        right_paused += usize::from(p_paused < 0.5);
        eprintln!(
            "  {p_finished:.3}     {p_paused:.3}    {text} ({:.1} s of {:.1} s)",
            (paused.len() as f64 / 16_000.0) - 0.2,
            (finished.len() as f64 / 16_000.0) - 0.2
        );
    }
    assert!(n >= 8, "only {n} sentences had an inner pause");
    mean_finished /= n as f32;
    mean_paused /= n as f32;
    let false_cut_offs = n - right_paused;
    let added_delay = n - right_finished;
    eprintln!(
        "Smart Turn on Piper speech, {n} sentences: finished judged complete {right_finished}/{n}, \
         paused judged incomplete {right_paused}/{n}; false cut-offs {false_cut_offs}/{n} \
         (without the model: {n}/{n}), added delay 1.1 s on {added_delay}/{n} finished turns \
         (before their transcript arrives); mean probability finished {mean_finished:.3}, \
         paused {mean_paused:.3}"
    );
    // Measured in four runs when written (Piper adds noise, so runs differ): finished judged
    // complete 7-9/10, paused judged incomplete only 2-3/10, mean probabilities 0.73-0.80
    // against 0.69-0.72. The model hears most of Piper's comma pauses as finished (TTS commas
    // fall like a full stop; people who stop to think do not), so on this material it removes
    // few false cut-offs. This is a measurement first; the bound only catches the model
    // calling finished sentences unfinished, which is the delay users would feel.
    assert!(
        right_finished * 10 >= n * 6,
        "finished judged complete only {right_finished}/{n}"
    );
}
