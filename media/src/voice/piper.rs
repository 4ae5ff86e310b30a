//! A Piper voice (VITS, ONNX) run through ONNX Runtime, loaded at run time.
//!
//! Piper reads phoneme ids, not text. The phonemes come from espeak-ng's IPA output
//! (`espeak-ng -q --ipa`), spawned once per sentence and never linked (espeak-ng is GPL-3.0);
//! the text goes through stdin, so nothing in it is read as an option. Each clause of the
//! sentence is one input line, so espeak-ng gives one line of phonemes per clause, and the
//! clause's punctuation (which espeak-ng drops) is put back: Piper voices are trained with
//! `,` `.` `?` `!` `;` `:` in the phoneme string, and use them for pauses and intonation.
//!
//! The ids are Piper's layout: `^`, then each phoneme followed by the pad `_`, then `$`
//! (`^ _ p1 _ p2 _ … pn _ $`). The model's inputs are `input` (int64 `[1, N]`),
//! `input_lengths` (int64 `[1]`) and `scales` (f32 `[noise, length, noise_w]`, from the
//! voice's config); it returns f32 audio at the config's sample rate (22.05 kHz for medium
//! voices), which is peak-normalized as Piper does and resampled to 48 kHz.
//!
//! One ONNX Runtime session per voice, behind a mutex (`Session::run` takes `&mut`): sentences
//! from several threads are synthesized one at a time.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use super::{Voice, VoiceError, to_48k};

/// Longest espeak-ng may take to phonemize a sentence.
const PHONEMIZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Peak level of each sentence after normalization (Piper scales to full scale; a little
/// headroom keeps the resampler's ringing from clipping).
const PEAK: f32 = 0.9;

/// Characters espeak-ng puts between or across phonemes in its other IPA modes (`_`
/// separators, ties, zero-width joiners). `_` is also Piper's pad symbol, so none may pass.
const SEPARATORS: [char; 4] = ['_', '\u{200d}', '\u{0361}', '\u{035c}'];

/// What a Piper voice's `.onnx.json` says that synthesis needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PiperConfig {
    /// Output sample rate (`audio.sample_rate`).
    pub sample_rate: u32,
    /// espeak-ng voice for the phonemes (`espeak.voice`), e.g. `en-us`.
    pub espeak_voice: String,
    /// `phoneme_id_map`: each phoneme (one Unicode scalar) to its ids.
    pub phoneme_ids: HashMap<char, Vec<i64>>,
    /// `inference.noise_scale` (0.667 by default).
    pub noise_scale: f32,
    /// `inference.length_scale` (1.0; larger is slower speech).
    pub length_scale: f32,
    /// `inference.noise_w` (0.8).
    pub noise_w: f32,
    /// `num_speakers`; voices with more than one take a speaker id (we use speaker 0).
    pub num_speakers: u32,
}

impl PiperConfig {
    /// Parses a voice config. The map must have the pad `_`, start `^` and end `$` symbols.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let sample_rate = v["audio"]["sample_rate"]
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .filter(|r| (8_000..=192_000).contains(r))
            .ok_or("audio.sample_rate missing or out of range")?;
        let espeak_voice = v["espeak"]["voice"].as_str().unwrap_or("en-us").to_owned();
        // It goes on espeak-ng's command line: a voice name, never an option or a path.
        if espeak_voice.is_empty()
            || espeak_voice.starts_with('-')
            || !espeak_voice
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '_'))
        {
            return Err(format!("espeak.voice {espeak_voice:?} is not a voice name"));
        }
        if let Some(kind) = v["phoneme_type"].as_str()
            && kind != "espeak"
        {
            return Err(format!(
                "phoneme_type {kind:?}: only espeak voices are supported"
            ));
        }
        let map = v["phoneme_id_map"]
            .as_object()
            .ok_or("phoneme_id_map missing")?;
        let mut phoneme_ids = HashMap::with_capacity(map.len());
        for (phoneme, ids) in map {
            let mut chars = phoneme.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(format!("phoneme {phoneme:?} is not one character"));
            };
            let ids = ids
                .as_array()
                .ok_or_else(|| format!("ids of {phoneme:?} are not a list"))?
                .iter()
                .map(|id| id.as_i64().filter(|&id| id >= 0))
                .collect::<Option<Vec<i64>>>()
                .filter(|ids| !ids.is_empty())
                .ok_or_else(|| format!("ids of {phoneme:?} are not non-negative integers"))?;
            phoneme_ids.insert(c, ids);
        }
        for symbol in ['_', '^', '$'] {
            if !phoneme_ids.contains_key(&symbol) {
                return Err(format!("phoneme_id_map has no {symbol:?}"));
            }
        }
        let scale = |key: &str, default: f32| {
            v["inference"][key]
                .as_f64()
                .map_or(default, |x| x as f32)
                .clamp(0.0, 10.0)
        };
        Ok(Self {
            sample_rate,
            espeak_voice,
            phoneme_ids,
            noise_scale: scale("noise_scale", 0.667),
            length_scale: scale("length_scale", 1.0).max(0.1),
            noise_w: scale("noise_w", 0.8),
            num_speakers: v["num_speakers"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
        })
    }

    /// The model's input for a phoneme string: `^`, each known phoneme followed by the pad,
    /// then `$`. Phonemes the voice does not know are left out.
    pub fn ids(&self, phonemes: &str) -> Vec<i64> {
        let map = &self.phoneme_ids;
        let mut ids = Vec::with_capacity(phonemes.chars().count() * 2 + 3);
        ids.extend_from_slice(&map[&'^']);
        ids.extend_from_slice(&map[&'_']);
        for c in phonemes.chars() {
            if let Some(p) = map.get(&c) {
                ids.extend_from_slice(p);
                ids.extend_from_slice(&map[&'_']);
            }
        }
        ids.extend_from_slice(&map[&'$']);
        ids
    }
}

/// One clause of a sentence: its text (punctuation included) and the punctuation that ends
/// it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    text: String,
    end: Option<char>,
}

/// Splits at `, ; : . ! ?` (a run of them counts once, by its first) followed by a space or
/// the end, as espeak-ng does; numbers like `1.5` and times like `3:30` stay whole. Control
/// characters become spaces, so each clause is one line.
fn clauses(text: &str) -> Vec<Clause> {
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let is_end = |c: char| matches!(c, ',' | ';' | ':' | '.' | '!' | '?');
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        if is_end(chars[i]) {
            let run_start = i;
            while i + 1 < chars.len() && is_end(chars[i + 1]) {
                i += 1;
            }
            if chars.get(i + 1).is_none_or(|c| c.is_whitespace()) {
                let text: String = chars[start..=i].iter().collect();
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if text.chars().any(char::is_alphanumeric) {
                    out.push(Clause {
                        text,
                        end: Some(chars[run_start]),
                    });
                }
                start = i + 1;
            }
        }
        i += 1;
    }
    let rest: String = chars[start.min(chars.len())..].iter().collect();
    let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    if rest.chars().any(char::is_alphanumeric) {
        out.push(Clause {
            text: rest,
            end: None,
        });
    }
    out
}

/// espeak-ng's phonemes for one line, cleaned: separators removed, language-switch marks like
/// `(en)` removed, spaces collapsed.
fn clean_phonemes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if c == '('
            && let Some(close) = rest.find(')')
        {
            let inner = &rest[1..close];
            if !inner.is_empty() && inner.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                rest = &rest[close + 1..];
                continue;
            }
        }
        if !SEPARATORS.contains(&c) {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Joins espeak-ng's output lines (one per clause) with the clauses' punctuation, Piper's
/// way: `hˈaɪ dˈeɪnə, wˌʌt …?`. When espeak-ng split the clauses differently, the lines are
/// joined with spaces and only the last clause's punctuation is kept.
fn join_clauses(clauses: &[Clause], output: &str) -> String {
    let lines: Vec<String> = output
        .lines()
        .map(clean_phonemes)
        .filter(|l| !l.is_empty())
        .collect();
    let mut out = String::new();
    if lines.len() == clauses.len() {
        for (line, clause) in lines.iter().zip(clauses) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(line);
            out.extend(clause.end);
        }
    } else {
        tracing::debug!(
            clauses = clauses.len(),
            lines = lines.len(),
            "espeak-ng split the clauses differently; inner punctuation dropped"
        );
        out = lines.join(" ");
        if !out.is_empty() {
            out.extend(clauses.last().and_then(|c| c.end));
        }
    }
    out
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn environment(runtime: &Path) -> Result<Environment, VoiceError> {
    crate::onnx::environment(runtime).map_err(|message| {
        VoiceError::Unavailable(format!(
            "cannot load ONNX Runtime from {}: {message}",
            runtime.display()
        ))
    })
}

/// A loaded Piper voice. Load it once (a few seconds) and share it.
pub struct PiperVoice {
    session: Mutex<Session>,
    config: PiperConfig,
    espeak: PathBuf,
    speaker_input: bool,
}

impl std::fmt::Debug for PiperVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperVoice")
            .field("sample_rate", &self.config.sample_rate)
            .field("espeak_voice", &self.config.espeak_voice)
            .field("phonemes", &self.config.phoneme_ids.len())
            .finish_non_exhaustive()
    }
}

impl PiperVoice {
    /// Loads ONNX Runtime from `onnxruntime_lib`, the voice from `model` and its config from
    /// `config` (`<model>.json`), and checks espeak-ng is on `PATH`. Inference uses one
    /// thread; see [`PiperVoice::load_with_threads`].
    pub fn load(onnxruntime_lib: &Path, model: &Path, config: &Path) -> Result<Self, VoiceError> {
        Self::load_with_threads(onnxruntime_lib, model, config, 1)
    }

    /// [`PiperVoice::load`] with `threads` ONNX Runtime threads per sentence (at least 1).
    pub fn load_with_threads(
        onnxruntime_lib: &Path,
        model: &Path,
        config: &Path,
        threads: usize,
    ) -> Result<Self, VoiceError> {
        let unavailable = |what: &Path, e: &dyn std::fmt::Display| {
            VoiceError::Unavailable(format!("piper: {}: {e}", what.display()))
        };
        let json = std::fs::read_to_string(config).map_err(|e| unavailable(config, &e))?;
        let config = PiperConfig::from_json(&json).map_err(|e| unavailable(config, &e))?;
        let espeak = find_program("espeak-ng").ok_or_else(|| {
            VoiceError::Unavailable("piper: espeak-ng (the phonemizer) is not installed".into())
        })?;
        if !model.is_file() {
            return Err(unavailable(model, &"no such file"));
        }
        let env = environment(onnxruntime_lib)?;
        let err = |e: ort::Error| unavailable(model, &e);
        let threads = threads.max(1);
        let session = Session::builder(&env)
            .map_err(err)?
            .with_intra_threads(threads)
            .map_err(|e| err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.into()))?
            // Spinning threads would take CPU from transcription between sentences.
            .with_intra_op_spinning(false)
            .map_err(|e| err(e.into()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.into()))?
            .commit_from_file(model)
            .map_err(err)?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for needed in ["input", "input_lengths", "scales"] {
            if !names.contains(&needed) {
                return Err(unavailable(
                    model,
                    &format!("not a Piper model: no input {needed:?} (inputs {names:?})"),
                ));
            }
        }
        let speaker_input = names.contains(&"sid");
        Ok(Self {
            session: Mutex::new(session),
            config,
            espeak,
            speaker_input,
        })
    }

    /// The voice's config.
    pub fn config(&self) -> &PiperConfig {
        &self.config
    }

    /// The sentence as Piper phonemes (espeak-ng IPA with the clauses' punctuation), e.g.
    /// `wˌʌt ɪz jʊɹ bˈʌdʒɪt fɔːɹ ðɪs jˈɪɹ?`. Empty when there is nothing to say.
    pub fn phonemize(&self, sentence: &str) -> Result<String, VoiceError> {
        let clauses = clauses(sentence);
        if clauses.is_empty() {
            return Ok(String::new());
        }
        let input = clauses
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let output = self.espeak(&input)?;
        Ok(join_clauses(&clauses, &output))
    }

    fn espeak(&self, input: &str) -> Result<String, VoiceError> {
        let mut child = Command::new(&self.espeak)
            // -q: no audio; --ipa: IPA without separators; -b 1: UTF-8 input;
            // -l: every (short) line ends a clause.
            .args(["-q", "--ipa", "-b", "1", "-l", "1000", "-v"])
            .arg(&self.config.espeak_voice)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| VoiceError::Unavailable(format!("espeak-ng: {e}")))?;
        let mut stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).map(|_| buf)
        });
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means espeak-ng exited early; its status says why.
            let _ = stdin.write_all(input.as_bytes());
        }
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() > PHONEMIZE_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(VoiceError::Timeout(PHONEMIZE_TIMEOUT));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(VoiceError::Failed(format!("espeak-ng: {e}"))),
            }
        };
        let bytes = reader
            .join()
            .map_err(|_| VoiceError::Failed("espeak-ng reader thread panicked".into()))?
            .map_err(|e| VoiceError::Failed(format!("espeak-ng: {e}")))?;
        if !status.success() {
            return Err(VoiceError::Failed(format!(
                "espeak-ng exited with {status}"
            )));
        }
        String::from_utf8(bytes)
            .map_err(|_| VoiceError::Failed("espeak-ng wrote invalid UTF-8".into()))
    }

    /// Speaks one sentence at the voice's own rate ([`PiperConfig::sample_rate`]), samples in
    /// -1..1, peak-normalized. Empty when there is nothing to say.
    pub fn synthesize_native(&self, sentence: &str) -> Result<Vec<f32>, VoiceError> {
        let phonemes = self.phonemize(sentence)?;
        if phonemes.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.config.ids(&phonemes);
        let mut audio = self.infer(ids)?;
        let peak = audio.iter().fold(0f32, |m, x| m.max(x.abs()));
        let gain = PEAK / peak.max(0.01);
        for x in &mut audio {
            *x *= gain;
        }
        Ok(audio)
    }

    fn infer(&self, ids: Vec<i64>) -> Result<Vec<f32>, VoiceError> {
        let fail = |e: ort::Error| VoiceError::Failed(format!("piper: {e}"));
        let n = ids.len();
        let input = Tensor::from_array(([1usize, n], ids)).map_err(fail)?;
        let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(fail)?;
        let c = &self.config;
        let scales = Tensor::from_array(([3usize], vec![c.noise_scale, c.length_scale, c.noise_w]))
            .map_err(fail)?;
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = if self.speaker_input {
            let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(fail)?;
            session.run(ort::inputs![
                "input" => input,
                "input_lengths" => lengths,
                "scales" => scales,
                "sid" => sid,
            ])
        } else {
            session.run(ort::inputs![
                "input" => input,
                "input_lengths" => lengths,
                "scales" => scales,
            ])
        }
        .map_err(fail)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
        Ok(audio.to_vec())
    }
}

impl Voice for PiperVoice {
    fn name(&self) -> &str {
        "piper"
    }

    fn synthesize(&self, sentence: &str) -> Result<Vec<i16>, VoiceError> {
        let audio = self.synthesize_native(sentence)?;
        to_48k(&audio, self.config.sample_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PiperConfig {
        PiperConfig::from_json(
            r#"{"audio":{"sample_rate":22050},"espeak":{"voice":"en-us"},
                "inference":{"noise_scale":0.5,"length_scale":1.1,"noise_w":0.7},
                "phoneme_type":"espeak","num_speakers":1,
                "phoneme_id_map":{"_":[0],"^":[1],"$":[2]," ":[3],",":[8],"?":[13],
                                  "a":[14],"b":[15],"ˈ":[120]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn config_is_read() {
        let c = config();
        assert_eq!(c.sample_rate, 22_050);
        assert_eq!(c.espeak_voice, "en-us");
        assert_eq!((c.noise_scale, c.length_scale, c.noise_w), (0.5, 1.1, 0.7));
        assert_eq!(c.phoneme_ids[&'ˈ'], vec![120]);
        assert!(PiperConfig::from_json(r#"{"audio":{"sample_rate":22050}}"#).is_err());
        let bad_voice = r#"{"audio":{"sample_rate":22050},"espeak":{"voice":"--path=/x"},
            "phoneme_id_map":{"_":[0],"^":[1],"$":[2]}}"#;
        assert!(PiperConfig::from_json(bad_voice).is_err());
    }

    #[test]
    fn ids_pad_every_phoneme_between_start_and_end() {
        // Unknown phonemes ('z') are dropped.
        assert_eq!(
            config().ids("ˈab z,"),
            vec![1, 0, 120, 0, 14, 0, 15, 0, 3, 0, 8, 0, 2]
        );
        assert_eq!(config().ids(""), vec![1, 0, 2]);
    }

    #[test]
    fn clauses_split_at_punctuation_before_spaces() {
        let c = clauses("Hi Dana, what is $1.5 at 3:30?! Thanks");
        let texts: Vec<(&str, Option<char>)> = c.iter().map(|c| (c.text.as_str(), c.end)).collect();
        assert_eq!(
            texts,
            vec![
                ("Hi Dana,", Some(',')),
                ("what is $1.5 at 3:30?!", Some('?')),
                ("Thanks", None)
            ]
        );
        assert!(clauses(" ... , ").is_empty());
        assert_eq!(clauses("a\nb.")[0].text, "a b.");
    }

    #[test]
    fn espeak_output_gets_the_punctuation_back() {
        let c = clauses("Hi Dana, what budget?");
        assert_eq!(
            join_clauses(&c, "hˈaɪ dˈeɪnə\nwˌʌt bˈʌdʒɪt\n"),
            "hˈaɪ dˈeɪnə, wˌʌt bˈʌdʒɪt?"
        );
        // Separators, ties and language marks go; a different split keeps the last mark.
        assert_eq!(
            join_clauses(&c, "h_ˈaɪ d\u{200d}ˈeɪnə (en)wˌʌt\u{0361}\n\n"),
            "hˈaɪ dˈeɪnə wˌʌt?"
        );
    }
}
