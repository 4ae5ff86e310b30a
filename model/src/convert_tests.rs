//! Converter tests on a small synthetic CTranslate2 Whisper model whose values encode where
//! they came from, so a wrong split or mapping shows up as a wrong number.

use super::*;
use crate::ct2::encode;
use crate::ggml::verify;

const D: usize = 8;
const VOCAB: usize = 12;

/// Every element of a matrix holds its row index; every element of a vector its index.
fn values(dims: &[usize]) -> Vec<f32> {
    match dims {
        [n] => (0..*n).map(|i| i as f32).collect(),
        [rows, rest @ ..] => {
            let width: usize = rest.iter().product();
            (0..rows * width).map(|i| (i / width) as f32).collect()
        }
        [] => unreachable!(),
    }
}

fn f16_bytes(dims: &[usize]) -> Vec<u8> {
    values(dims)
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect()
}

fn synthetic_model() -> Vec<u8> {
    let mut vars: Vec<(String, Vec<usize>, DType, Vec<u8>)> = Vec::new();
    let mut tensor = |name: String, dims: &[usize]| {
        vars.push((name, dims.to_vec(), DType::F16, f16_bytes(dims)));
    };
    tensor("encoder/conv1/weight".into(), &[D, 4, 3]);
    tensor("encoder/conv1/bias".into(), &[D]);
    tensor("encoder/conv2/weight".into(), &[D, D, 3]);
    tensor("encoder/conv2/bias".into(), &[D]);
    tensor("encoder/position_encodings/encodings".into(), &[6, D]);
    tensor("decoder/position_encodings/encodings".into(), &[5, D]);
    tensor("decoder/embeddings/weight".into(), &[VOCAB, D]);
    for side in ["encoder", "decoder"] {
        for norm in ["gamma", "beta"] {
            tensor(format!("{side}/layer_norm/{norm}"), &[D]);
        }
        let layers = if side == "encoder" { 2 } else { 1 };
        for i in 0..layers {
            let p = format!("{side}/layer_{i}");
            let mut attention = vec![("self_attention", 0, 3 * D), ("self_attention", 1, D)];
            if side == "decoder" {
                attention.extend([
                    ("attention", 0, D),
                    ("attention", 1, 2 * D),
                    ("attention", 2, D),
                ]);
            }
            for (kind, linear, rows) in attention {
                tensor(format!("{p}/{kind}/linear_{linear}/weight"), &[rows, D]);
                tensor(format!("{p}/{kind}/linear_{linear}/bias"), &[rows]);
            }
            for kind in ["self_attention", "attention", "ffn"] {
                if kind != "attention" || side == "decoder" {
                    tensor(format!("{p}/{kind}/layer_norm/gamma"), &[D]);
                    tensor(format!("{p}/{kind}/layer_norm/beta"), &[D]);
                }
            }
            tensor(format!("{p}/ffn/linear_0/weight"), &[4 * D, D]);
            tensor(format!("{p}/ffn/linear_0/bias"), &[4 * D]);
            tensor(format!("{p}/ffn/linear_1/weight"), &[D, 4 * D]);
            tensor(format!("{p}/ffn/linear_1/bias"), &[D]);
        }
    }
    for side in ["encoder", "decoder"] {
        vars.push((
            format!("{side}/num_heads"),
            vec![],
            DType::I16,
            2i16.to_le_bytes().to_vec(),
        ));
    }
    vars.push(("decoder/activation".into(), vec![], DType::I8, vec![1]));
    let borrowed: Vec<_> = vars
        .iter()
        .map(|(n, d, t, b)| (n.as_str(), d.as_slice(), *t, b.clone()))
        .collect();
    encode(
        "WhisperSpec",
        &borrowed,
        &[("decoder/projection/weight", "decoder/embeddings/weight")],
    )
}

const VOCABULARY: &str = "a\nĠb\nÃ©\n<|endoftext|>\n<|startoftranscript|>\n";

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "conclave-model-convert-{}-{name}.bin",
        std::process::id()
    ))
}

/// Reads a tensor's data back as f32, whatever its stored type.
fn tensor_values(file: &[u8], info: &crate::TensorInfo) -> Vec<f32> {
    let n: usize = info.dims.iter().product();
    let start = info.data_offset as usize;
    let data = &file[start..start + n * info.ty.size()];
    match info.ty {
        GgmlType::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        GgmlType::F16 => data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

#[test]
fn converts_a_synthetic_model_that_verifies() {
    let path = temp_path("ok");
    let h = convert_ct2(&synthetic_model(), VOCABULARY.as_bytes(), &path).unwrap();
    let summary = verify(&path).unwrap();
    let file = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    assert_eq!(summary.hparams, h);
    let expected = Hparams {
        n_vocab: VOCAB as i32,
        n_audio_ctx: 6,
        n_audio_state: D as i32,
        n_audio_head: 2,
        n_audio_layer: 2,
        n_text_ctx: 5,
        n_text_state: D as i32,
        n_text_head: 2,
        n_text_layer: 1,
        n_mels: 4,
        ftype: 1,
    };
    assert_eq!(h, expected);
    assert_eq!(summary.vocab_tokens, 3);
    assert_eq!(summary.mel_shape, (4, 201));
    assert!(
        !summary
            .tensors
            .iter()
            .any(|t| t.name.contains("projection"))
    );

    let get = |name: &str| {
        let info = summary.tensors.iter().find(|t| t.name == name).unwrap();
        (info.ty, tensor_values(&file, info))
    };
    // Fused QKV rows 0..8 / 8..16 / 16..24 land in query / key / value.
    for (name, first_row) in [("query", 0.0), ("key", 8.0), ("value", 16.0)] {
        let (ty, w) = get(&format!("encoder.blocks.1.attn.{name}.weight"));
        assert_eq!(ty, GgmlType::F16);
        assert_eq!((w[0], w[D * D - 1]), (first_row, first_row + 7.0), "{name}");
    }
    let (ty, bias) = get("decoder.blocks.0.attn.value.bias");
    assert_eq!(
        (ty, bias),
        (GgmlType::F32, (16..24).map(|v| v as f32).collect())
    );
    // Cross-attention KV rows 0..8 / 8..16 land in key / value.
    assert_eq!(get("decoder.blocks.0.cross_attn.value.weight").1[0], 8.0);
    assert_eq!(get("decoder.blocks.0.cross_attn.value.bias").1[0], 8.0);
    assert_eq!(
        get("decoder.blocks.0.cross_attn.key.weight").1[D * D - 1],
        7.0
    );
    // Conv biases become f32 [D, 1]; positional embeddings f32.
    let (ty, conv_bias) = get("encoder.conv2.bias");
    assert_eq!((ty, conv_bias[7]), (GgmlType::F32, 7.0));
    assert_eq!(get("decoder.positional_embedding").0, GgmlType::F32);
    assert_eq!(get("decoder.positional_embedding").1[D * 4], 4.0);
}

#[test]
fn every_layout_name_has_a_source() {
    for spec in tensor_layout(&Hparams::TINY_EN) {
        assert!(source_of(&spec.name).is_some(), "{}", spec.name);
    }
    assert_eq!(
        source_of("decoder.blocks.3.cross_attn.key.weight"),
        Some(part(
            "decoder/layer_3/attention/linear_1/weight".into(),
            0,
            2
        ))
    );
    assert_eq!(
        source_of("encoder.blocks.0.mlp_ln.bias"),
        Some(whole("encoder/layer_0/ffn/layer_norm/beta".into()))
    );
}

#[test]
fn missing_variables_and_bad_vocabularies_are_reported() {
    let model = synthetic_model();
    let path = temp_path("bad");
    let err = convert_ct2(&model, b"a\nb\n", &path).unwrap_err();
    assert!(err.to_string().contains("no <|endoftext|>"), "{err}");
    let err = convert_ct2(&model[..model.len() / 2], VOCABULARY.as_bytes(), &path).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let _ = std::fs::remove_file(&path);
}
