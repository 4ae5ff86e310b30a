//! Damaged copies of the real model are refused with an error that says what is wrong.

mod common;

use std::path::Path;

use conclave_model::{ModelError, verify};

fn problem(path: &Path) -> String {
    match verify(path) {
        Err(ModelError::Invalid { problem, .. }) => problem,
        other => panic!("expected an invalid-model error, got {other:?}"),
    }
}

#[test]
fn truncated_copies_name_the_tensor_they_cut() {
    let model = common::model();
    let bytes = std::fs::read(&model).unwrap();
    let summary = verify(&model).unwrap();
    let dir = common::TempDir::new("truncated");

    let victim = summary
        .tensors
        .iter()
        .find(|t| t.name == "encoder.blocks.2.mlp.0.weight")
        .unwrap();
    let cut = dir.0.join("cut.bin");
    std::fs::write(&cut, &bytes[..victim.data_offset as usize + 1000]).unwrap();
    let p = problem(&cut);
    assert!(
        p.starts_with("file truncated in tensor encoder.blocks.2.mlp.0.weight"),
        "{p}"
    );

    // One byte short: the last tensor's data is incomplete.
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let last = &summary.tensors.last().unwrap().name;
    assert!(problem(&cut).starts_with(&format!("file truncated in tensor {last}")));

    // Cut inside the vocabulary.
    std::fs::write(&cut, &bytes[..100_000]).unwrap();
    assert!(problem(&cut).starts_with("file truncated in the vocabulary"));

    // One byte too many is a torn tensor header, not a model.
    let mut long = bytes.clone();
    long.push(0);
    std::fs::write(&cut, &long).unwrap();
    assert!(
        problem(&cut).contains("truncated in the tensor header after"),
        "{}",
        problem(&cut)
    );
}

#[test]
fn bad_magic_and_garbage_are_refused() {
    let model = common::model();
    let head = &std::fs::read(&model).unwrap()[..4096];
    let dir = common::TempDir::new("garbage");

    let bad_magic = dir.0.join("bad-magic.bin");
    let mut bytes = head.to_vec();
    bytes[..4].copy_from_slice(b"GGUF");
    std::fs::write(&bad_magic, &bytes).unwrap();
    assert!(problem(&bad_magic).starts_with("bad magic 0x46554747"));

    // Noise after a valid magic: refused on the header, before any size is trusted.
    let noise = dir.0.join("noise.bin");
    let mut bytes = head[..4].to_vec();
    let mut x = 0x2545_f491_u32;
    bytes.extend((0..4096).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    std::fs::write(&noise, &bytes).unwrap();
    assert!(
        problem(&noise).contains("out of range"),
        "{}",
        problem(&noise)
    );

    let err = verify(&dir.0.join("absent.bin")).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
}
