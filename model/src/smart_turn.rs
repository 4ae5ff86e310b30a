//! Installing Smart Turn v3.2, Pipecat's end-of-turn audio model, from a PyPI wheel.
//!
//! The model (`smart-turn-v3.2-cpu.onnx`, 8,679,182 bytes, an int8 Whisper-encoder
//! classifier) is bundled inside `pipecat-ai==1.14.0`, which is licensed BSD-2-Clause
//! (Copyright (c) 2024-2026, Daily); redistributing it means keeping that notice. We fetch
//! the pinned wheel with pip (no dependencies), check its SHA-256 and copy that one member to
//! `<data_dir>/turn/`. Running it needs the ONNX Runtime library [`crate::install_vad`]
//! installs.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::ModelError;
use crate::install::{Scratch, check_sha256, download};

/// File name of the Smart Turn model inside `<data_dir>/turn/`.
pub const SMART_TURN_FILE_NAME: &str = "smart-turn-v3.2-cpu.onnx";

const REQUIREMENT: &str = "pipecat-ai==1.14.0";
// `pipecat_ai-1.14.0-py3-none-any.whl` (12,109,725 bytes).
const WHEEL_SHA256: &str = "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44";
const MEMBER: &str = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx";
const MODEL_BYTES: u64 = 8_679_182;

/// Where [`install_smart_turn`] puts the model under `data_dir`, whether or not it exists yet.
pub fn smart_turn_path(data_dir: &Path) -> PathBuf {
    data_dir.join("turn").join(SMART_TURN_FILE_NAME)
}

/// Makes sure `<data_dir>/turn/smart-turn-v3.2-cpu.onnx` exists, downloading `pipecat-ai`
/// with pip if not, and returns its path. Idempotent and safe to run concurrently: the file
/// appears only by the atomic rename of a complete extraction from a checksummed wheel.
pub fn install_smart_turn(data_dir: &Path) -> Result<PathBuf, ModelError> {
    install_smart_turn_with(data_dir, Path::new("python3"))
}

/// [`install_smart_turn`] with an explicit Python interpreter.
pub fn install_smart_turn_with(data_dir: &Path, python: &Path) -> Result<PathBuf, ModelError> {
    let target = smart_turn_path(data_dir);
    if fs::metadata(&target).is_ok_and(|m| m.len() == MODEL_BYTES) {
        return Ok(target);
    }
    let dir = data_dir.join("turn");
    fs::create_dir_all(&dir).map_err(ModelError::io(&dir))?;
    let scratch = Scratch::new(&dir)?;
    let wheel = download(python, &scratch.0, REQUIREMENT, &[])?;
    check_sha256(&wheel, WHEEL_SHA256)?;

    let archive_err =
        |e: zip::result::ZipError| ModelError::Archive(format!("{}: {e}", wheel.display()));
    let file = File::open(&wheel).map_err(ModelError::io(&wheel))?;
    let mut zip = zip::ZipArchive::new(file).map_err(archive_err)?;
    let mut entry = zip.by_name(MEMBER).map_err(archive_err)?;
    if entry.size() != MODEL_BYTES {
        return Err(ModelError::Archive(format!(
            "{MEMBER} is {} bytes, expected {MODEL_BYTES}",
            entry.size()
        )));
    }
    let mut bytes = Vec::with_capacity(MODEL_BYTES as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| ModelError::Archive(format!("{}: reading {MEMBER}: {e}", wheel.display())))?;
    if bytes.len() as u64 != MODEL_BYTES {
        return Err(ModelError::Archive(format!(
            "{MEMBER} unpacked to {} bytes, expected {MODEL_BYTES}",
            bytes.len()
        )));
    }
    let part = scratch.0.join("part");
    fs::write(&part, &bytes).map_err(ModelError::io(&part))?;
    fs::rename(&part, &target).map_err(ModelError::io(&target))?;
    if let Ok(dir) = File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_is_under_turn() {
        assert_eq!(
            smart_turn_path(Path::new("/data")),
            Path::new("/data/turn/smart-turn-v3.2-cpu.onnx")
        );
    }
}
