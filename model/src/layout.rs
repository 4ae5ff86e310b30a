//! The tensor table whisper.cpp expects in a ggml file, derived from the hyper-parameters.
//!
//! The converter writes exactly this table and the verifier demands exactly this table, so a
//! file that passes `verify` is one whisper.cpp will load tensor for tensor.

use crate::ggml::{GgmlType, Hparams};

/// One tensor whisper.cpp looks up by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorSpec {
    pub name: String,
    /// Outermost first (numpy order); the file stores them reversed.
    pub dims: Vec<usize>,
    pub ty: GgmlType,
}

/// Every tensor of a Whisper model, encoder first, in a stable order.
pub(crate) fn tensor_layout(h: &Hparams) -> Vec<TensorSpec> {
    let weight = h.weight_type();
    let n_mels = h.n_mels as usize;
    let audio = h.n_audio_state as usize;
    let text = h.n_text_state as usize;
    let mut out = Vec::new();
    let mut push = |name: String, dims: &[usize], ty: GgmlType| {
        out.push(TensorSpec {
            name,
            dims: dims.to_vec(),
            ty,
        });
    };

    // whisper.cpp adds the positional embeddings and conv biases in f32 whatever the file's
    // ftype, and it refuses a tensor whose byte size does not match the type it expects.
    push(
        "encoder.positional_embedding".into(),
        &[h.n_audio_ctx as usize, audio],
        GgmlType::F32,
    );
    push("encoder.conv1.weight".into(), &[audio, n_mels, 3], weight);
    push("encoder.conv1.bias".into(), &[audio, 1], GgmlType::F32);
    push("encoder.conv2.weight".into(), &[audio, audio, 3], weight);
    push("encoder.conv2.bias".into(), &[audio, 1], GgmlType::F32);
    push("encoder.ln_post.weight".into(), &[audio], GgmlType::F32);
    push("encoder.ln_post.bias".into(), &[audio], GgmlType::F32);
    for i in 0..h.n_audio_layer as usize {
        let p = format!("encoder.blocks.{i}");
        block(&mut push, &p, "attn", audio, weight);
        mlp(&mut push, &p, audio, weight);
    }

    push(
        "decoder.positional_embedding".into(),
        &[h.n_text_ctx as usize, text],
        GgmlType::F32,
    );
    push(
        "decoder.token_embedding.weight".into(),
        &[h.n_vocab as usize, text],
        weight,
    );
    push("decoder.ln.weight".into(), &[text], GgmlType::F32);
    push("decoder.ln.bias".into(), &[text], GgmlType::F32);
    for i in 0..h.n_text_layer as usize {
        let p = format!("decoder.blocks.{i}");
        block(&mut push, &p, "attn", text, weight);
        block(&mut push, &p, "cross_attn", text, weight);
        mlp(&mut push, &p, text, weight);
    }
    out
}

/// An attention block: its layer norm, query/key/value/out projections. The key projection
/// has no bias in Whisper.
fn block(
    push: &mut impl FnMut(String, &[usize], GgmlType),
    prefix: &str,
    kind: &str,
    state: usize,
    weight: GgmlType,
) {
    push(
        format!("{prefix}.{kind}_ln.weight"),
        &[state],
        GgmlType::F32,
    );
    push(format!("{prefix}.{kind}_ln.bias"), &[state], GgmlType::F32);
    for proj in ["query", "key", "value", "out"] {
        push(
            format!("{prefix}.{kind}.{proj}.weight"),
            &[state, state],
            weight,
        );
        if proj != "key" {
            push(
                format!("{prefix}.{kind}.{proj}.bias"),
                &[state],
                GgmlType::F32,
            );
        }
    }
}

fn mlp(
    push: &mut impl FnMut(String, &[usize], GgmlType),
    prefix: &str,
    state: usize,
    weight: GgmlType,
) {
    let hidden = 4 * state;
    push(format!("{prefix}.mlp_ln.weight"), &[state], GgmlType::F32);
    push(format!("{prefix}.mlp_ln.bias"), &[state], GgmlType::F32);
    push(format!("{prefix}.mlp.0.weight"), &[hidden, state], weight);
    push(format!("{prefix}.mlp.0.bias"), &[hidden], GgmlType::F32);
    push(format!("{prefix}.mlp.2.weight"), &[state, hidden], weight);
    push(format!("{prefix}.mlp.2.bias"), &[state], GgmlType::F32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_en_has_167_tensors_with_unique_names() {
        let layout = tensor_layout(&Hparams::TINY_EN);
        assert_eq!(layout.len(), 167);
        let mut names: Vec<_> = layout.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 167);
        let key = layout
            .iter()
            .find(|t| t.name == "decoder.blocks.3.cross_attn.key.weight");
        assert_eq!(key.unwrap().dims, [384, 384]);
        assert!(!layout.iter().any(|t| t.name.ends_with("key.bias")));
    }
}
