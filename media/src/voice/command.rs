//! Voices that are programs: flite and espeak-ng, spawned once per sentence (both are small and
//! start in milliseconds). Spawning keeps their licences out of the binary (espeak-ng is
//! GPL-3.0). The text goes through a file or stdin, never the command line, so nothing in it is
//! read as an option.

use super::{Voice, VoiceError, to_48k, wav};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a sentence may take to synthesize.
const SYNTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Which program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandEngine {
    /// CMU flite (Debian `flite`, BSD-style licence), voice `slt`.
    Flite,
    /// espeak-ng (Debian `espeak-ng`, GPL-3.0, spawned), voice `en-us`.
    EspeakNg,
}

impl CommandEngine {
    fn program(self) -> &'static str {
        match self {
            CommandEngine::Flite => "flite",
            CommandEngine::EspeakNg => "espeak-ng",
        }
    }
}

/// A spawned synthesizer.
#[derive(Debug, Clone)]
pub struct CommandVoice {
    engine: CommandEngine,
    program: std::path::PathBuf,
}

fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl CommandVoice {
    /// The engine, if its program is on `PATH`.
    pub fn new(engine: CommandEngine) -> Result<Self, VoiceError> {
        let program = find_program(engine.program()).ok_or_else(|| {
            VoiceError::Unavailable(format!("{} is not installed", engine.program()))
        })?;
        Ok(Self { engine, program })
    }

    fn run(&self, sentence: &str) -> Result<Vec<u8>, VoiceError> {
        let mut cmd = Command::new(&self.program);
        // flite seeks back to fill in the WAV sizes, so it writes a file, not a pipe.
        let mut files = None;
        match self.engine {
            CommandEngine::Flite => {
                let text = TempFile::with(sentence, "txt")?;
                let out = TempFile::with("", "wav")?;
                cmd.arg("-voice")
                    .arg("slt")
                    .arg("-f")
                    .arg(&text.0)
                    .arg("-o")
                    .arg(&out.0);
                files = Some((text, out));
            }
            CommandEngine::EspeakNg => {
                cmd.args(["--stdout", "-v", "en-us", "-s", "165"]);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| VoiceError::Unavailable(format!("{}: {e}", self.engine.program())))?;
        if let Some(mut stdin) = child.stdin.take()
            && self.engine == CommandEngine::EspeakNg
        {
            // A write error means the program exited early; its status says why.
            let _ = stdin.write_all(sentence.as_bytes());
        }
        let mut stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).map(|_| buf)
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() > SYNTH_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(VoiceError::Timeout(SYNTH_TIMEOUT));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(VoiceError::Failed(e.to_string())),
            }
        };
        let piped = reader
            .join()
            .map_err(|_| VoiceError::Failed("reader thread panicked".into()))?
            .map_err(|e| VoiceError::Failed(e.to_string()))?;
        if !status.success() {
            return Err(VoiceError::Failed(format!(
                "{} exited with {status}",
                self.engine.program()
            )));
        }
        match files {
            Some((_, out)) => std::fs::read(&out.0).map_err(|e| VoiceError::Failed(e.to_string())),
            None => Ok(piped),
        }
    }
}

/// A file of our own in the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn with(text: &str, ext: &str) -> Result<Self, VoiceError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "conclave-voice-{}-{}.{ext}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).map_err(|e| VoiceError::Failed(format!("temp file: {e}")))?;
        Ok(Self(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Voice for CommandVoice {
    fn name(&self) -> &str {
        self.engine.program()
    }

    fn synthesize(&self, sentence: &str) -> Result<Vec<i16>, VoiceError> {
        let bytes = self.run(sentence)?;
        let pcm = wav::parse(&bytes).map_err(VoiceError::Failed)?;
        to_48k(&pcm.samples, pcm.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both engines speak a sentence of plausible length with real signal in it. Skipped (with
    /// a message) where the program is missing; scripts/setup.sh installs both.
    #[test]
    fn installed_engines_speak() {
        for engine in [CommandEngine::Flite, CommandEngine::EspeakNg] {
            let Ok(v) = CommandVoice::new(engine) else {
                eprintln!("{} not installed; skipped", engine.program());
                continue;
            };
            let pcm = v
                .synthesize("-v What is your budget for this year?")
                .unwrap();
            let secs = pcm.len() as f64 / 48_000.0;
            assert!((1.0..5.0).contains(&secs), "{}: {secs} s", v.name());
            let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(peak > 3_000, "{}: peak {peak}", v.name());
        }
    }
}
