//! What Whisper says when there is nothing to say: bracketed non-speech markers
//! (`[BLANK_AUDIO]`, `(music)`), filler alone ("um", "mm-hmm", a lone "you" that tiny models
//! produce for tones and noise), and runaway repetition. Such text is not a transcript.

/// Words that alone make no transcript line.
const FILLER: &[&str] = &[
    "uh", "um", "umm", "uhm", "hmm", "hm", "mm", "mmm", "mhm", "mmhmm", "ah", "oh", "er", "erm",
    "you", "beep", "beeping", "beeps",
];

/// Whether `text` is speech worth a caption or a stored line.
pub fn is_speech(text: &str) -> bool {
    let t = text.trim();
    if (t.starts_with('[') && t.ends_with(']')) || (t.starts_with('(') && t.ends_with(')')) {
        return false;
    }
    let words = words(t);
    !words.is_empty()
        && !words.iter().all(|w| FILLER.contains(&w.as_str()))
        && !is_repetitive(&words)
}

/// `text` if it is speech, else empty.
pub fn clean(text: &str) -> String {
    if is_speech(text) {
        text.trim().to_owned()
    } else {
        String::new()
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| w.replace(['-', '\''], "").to_lowercase())
        .collect()
}

/// A decoder stuck in a loop: the same word or short phrase four or more times in a row, or
/// a long text made of very few distinct words.
fn is_repetitive(words: &[String]) -> bool {
    for n in 1..=4 {
        let mut run = 1;
        let mut i = n;
        while i + n <= words.len() {
            if words[i..i + n] == words[i - n..i] {
                run += 1;
                if run >= 4 {
                    return true;
                }
                i += n;
            } else {
                run = 1;
                i += 1;
            }
        }
    }
    if words.len() >= 12 {
        let mut distinct: Vec<&String> = words.iter().collect();
        distinct.sort();
        distinct.dedup();
        return distinct.len() * 4 < words.len();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_filler_and_loops_are_not_speech() {
        for noise in [
            "",
            "  ",
            "[BLANK_AUDIO]",
            "(music)",
            " you",
            "You.",
            "...",
            "Um, uh.",
            "Mm-hmm.",
            "Beep",
            "Beep. Beep.",
            "the the the the",
            "Thank you. Thank you. Thank you. Thank you.",
            "I'm going to go to the next one. I'm going to go to the next one. I'm going to go to the next one. I'm going to go to the next one.",
        ] {
            assert!(!is_speech(noise), "{noise:?}");
        }
        for speech in [
            "Thank you.",
            "You need to see this.",
            "Yes.",
            "Um, I think the budget is fine.",
            "No, no, no.",
            "We need it by March, and the team will ship the update on Tuesday.",
        ] {
            assert!(is_speech(speech), "{speech:?}");
        }
        assert_eq!(clean(" Yes. "), "Yes.");
        assert_eq!(clean("[BLANK_AUDIO]"), "");
    }
}
