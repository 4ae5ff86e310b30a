//! Verifier tests on small synthetic files built with the writer.

use super::*;

const SMALL: Hparams = Hparams {
    n_vocab: 20,
    n_audio_ctx: 6,
    n_audio_state: 8,
    n_audio_head: 2,
    n_audio_layer: 2,
    n_text_ctx: 5,
    n_text_state: 8,
    n_text_head: 2,
    n_text_layer: 1,
    n_mels: 4,
    ftype: 1,
};

/// A well-formed file of zeros with SMALL's shapes.
fn small_file() -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    w.header(&SMALL).unwrap();
    w.mel_filters(4, 3, &[0.5; 12]).unwrap();
    w.vocab(&[b"a".to_vec(), b" the".to_vec()]).unwrap();
    for t in tensor_layout(&SMALL) {
        w.tensor_header(&t.name, &t.dims, t.ty).unwrap();
        w.data(&vec![0; t.dims.iter().product::<usize>() * t.ty.size()])
            .unwrap();
    }
    w.into_inner()
}

/// Verifies `bytes` from a file of their own (tests run in parallel, so names are unique).
fn check(name: &str, bytes: &[u8]) -> Result<ModelSummary, ModelError> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "conclave-model-ggml-{}-{n}-{name}.bin",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    let result = verify(&path);
    std::fs::remove_file(&path).unwrap();
    result
}

fn problem(result: Result<ModelSummary, ModelError>) -> String {
    match result {
        Err(ModelError::Invalid { problem, .. }) => problem,
        other => panic!("expected an invalid-model error, got {other:?}"),
    }
}

#[test]
fn well_formed_file_is_summarised() {
    let bytes = small_file();
    let s = check("ok", &bytes).unwrap();
    assert_eq!(s.hparams, SMALL);
    assert_eq!((s.mel_shape, s.vocab_tokens), ((4, 3), 2));
    assert_eq!(s.tensors.len(), tensor_layout(&SMALL).len());
    assert_eq!(s.file_bytes, bytes.len() as u64);
    let conv = s
        .tensors
        .iter()
        .find(|t| t.name == "encoder.conv1.weight")
        .unwrap();
    assert_eq!(
        (conv.dims.as_slice(), conv.ty),
        (&[8, 4, 3][..], GgmlType::F16)
    );
}

#[test]
fn header_fields_are_written_in_order() {
    let bytes = small_file();
    let field = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!(field(0) as u32, GGML_MAGIC);
    assert_eq!((1..=11).map(field).collect::<Vec<_>>(), SMALL.to_array());
    assert_eq!(&bytes[..4], b"lmgg");
}

#[test]
fn bad_magic_and_empty_files_are_refused() {
    let mut bytes = small_file();
    bytes[..4].copy_from_slice(b"GGUF");
    assert!(problem(check("magic", &bytes)).starts_with("bad magic 0x46554747"));
    assert!(problem(check("empty", &[])).contains("file truncated in the header"));
}

#[test]
fn truncation_names_the_tensor_it_cut() {
    let bytes = small_file();
    let s = check("full", &bytes).unwrap();
    let victim = &s.tensors[9];
    let cut = &bytes[..victim.data_offset as usize + 3];
    let p = problem(check("cut", cut));
    assert!(
        p.starts_with(&format!("file truncated in tensor {}", victim.name)),
        "{p}"
    );
    let cut = &bytes[..victim.data_offset as usize - 2];
    let p = problem(check("cut-header", cut));
    assert!(
        p.contains(&format!("the tensor header after {}", s.tensors[8].name)),
        "{p}"
    );
}

#[test]
fn missing_extra_and_misshapen_tensors_are_refused() {
    let bytes = small_file();
    let s = check("full", &bytes).unwrap();
    let last = s.tensors.last().unwrap();
    // Chop the whole last tensor (header included): 3 ints, 1 dim, its name.
    let header_len = 4 * (3 + last.dims.len()) + last.name.len();
    let short = &bytes[..last.data_offset as usize - header_len];
    assert!(problem(check("missing", short)).contains(&format!("missing {}", last.name)));

    let mut extra = bytes.clone();
    let mut w = Writer::new(&mut extra);
    w.tensor_header("decoder.proj.weight", &[2], GgmlType::F32)
        .unwrap();
    w.data(&[0; 8]).unwrap();
    assert_eq!(
        problem(check("extra", &extra)),
        "unexpected tensor decoder.proj.weight"
    );

    let mut wrong = bytes.clone();
    let first = &s.tensors[0]; // encoder.positional_embedding [6, 8]
    let dim_at = first.data_offset as usize - first.name.len() - 8;
    wrong[dim_at..dim_at + 4].copy_from_slice(&7i32.to_le_bytes());
    let p = problem(check("shape", &wrong));
    assert_eq!(
        p,
        "tensor encoder.positional_embedding has shape [6, 7], expected [6, 8]"
    );
}

#[test]
fn absurd_header_is_refused_before_anything_is_trusted() {
    let mut bytes = small_file();
    bytes[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
    assert!(problem(check("absurd", &bytes)).contains("n_audio_ctx"));
}
