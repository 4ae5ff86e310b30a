//! CTranslate2 Whisper (spec revision 3) to whisper.cpp ggml.
//!
//! The two formats hold the same numbers under different names. CTranslate2 fuses the
//! self-attention query/key/value projections into one matrix (rows stacked Q, K, V) and the
//! cross-attention key/value into another; whisper.cpp wants them apart. Its key projections
//! have no bias, which loses nothing: a key bias adds q·b to every logit of a query, the same
//! constant for every key, and softmax ignores constants (CTranslate2 stores zeros anyway).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use half::{bf16, f16};

use crate::ModelError;
use crate::ct2::{Ct2Model, DType, Variable};
use crate::ggml::{GgmlType, Hparams, Writer};
use crate::layout::tensor_layout;
use crate::mel::slaney_mel_filters;
use crate::vocab::whisper_tokens;

/// Whisper's fixed front end: 16 kHz audio, 25 ms FFT windows.
const SAMPLE_RATE: u32 = 16_000;
const N_FFT: usize = 400;

/// Converts a CTranslate2 Whisper model, given the bytes of its `model.bin` and
/// `vocabulary.txt`, into a ggml file at `out_path` (created or overwritten, synced to disk).
/// Returns the model's hyper-parameters.
pub fn convert_ct2(
    model_bin: &[u8],
    vocabulary_txt: &[u8],
    out_path: &Path,
) -> Result<Hparams, ModelError> {
    let model = Ct2Model::parse(model_bin)?;
    if model.spec != "WhisperSpec" || model.revision != 3 {
        return Err(ModelError::Source(format!(
            "model.bin holds {} revision {}, not WhisperSpec revision 3",
            model.spec, model.revision
        )));
    }
    let h = hparams(&model)?;
    let tokens = whisper_tokens(vocabulary_txt)?;
    if tokens.len() >= h.n_vocab as usize {
        return Err(ModelError::Source(format!(
            "vocabulary.txt has {} ordinary tokens but the model only {} embeddings",
            tokens.len(),
            h.n_vocab
        )));
    }
    let n_mels = h.n_mels as usize;
    let filters = slaney_mel_filters(SAMPLE_RATE, N_FFT, n_mels);

    let io = |e| ModelError::Io {
        path: out_path.to_path_buf(),
        source: e,
    };
    let file = File::create(out_path).map_err(io)?;
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, file));
    w.header(&h).map_err(io)?;
    w.mel_filters(n_mels, N_FFT / 2 + 1, &filters).map_err(io)?;
    w.vocab(&tokens).map_err(io)?;
    let mut scratch = Vec::new();
    for spec in tensor_layout(&h) {
        let source = source_of(&spec.name).ok_or_else(|| {
            ModelError::Source(format!("no CTranslate2 source known for {}", spec.name))
        })?;
        let var = model.get(&source.var)?;
        let (data, dims) = rows_of(var, source.part).map_err(|problem| {
            ModelError::Source(format!("{} for {}: {problem}", source.var, spec.name))
        })?;
        if trim_ones(&dims) != trim_ones(&spec.dims) {
            return Err(ModelError::Source(format!(
                "{} has shape {dims:?}, cannot become {} {:?}",
                source.var, spec.name, spec.dims
            )));
        }
        w.tensor_header(&spec.name, &spec.dims, spec.ty)
            .map_err(io)?;
        let bytes = recode(data, var.dtype, spec.ty, &mut scratch).ok_or_else(|| {
            ModelError::Source(format!("{} has integer type {:?}", source.var, var.dtype))
        })?;
        w.data(bytes).map_err(io)?;
    }
    let file = w
        .into_inner()
        .into_inner()
        .map_err(|e| io(e.into_error()))?;
    // The caller renames this file into place; without a sync a crash could leave a
    // complete-looking name over incomplete data.
    file.sync_all().map_err(io)?;
    Ok(h)
}

/// Reads the hyper-parameters off the shapes of the model's variables.
fn hparams(model: &Ct2Model) -> Result<Hparams, ModelError> {
    let matrix = |name: &str| -> Result<(usize, usize), ModelError> {
        match model.get(name)?.dims[..] {
            [rows, cols] => Ok((rows, cols)),
            ref dims => Err(ModelError::Source(format!(
                "{name} has shape {dims:?}, expected 2-D"
            ))),
        }
    };
    let (n_vocab, n_text_state) = matrix("decoder/embeddings/weight")?;
    let (n_audio_ctx, n_audio_state) = matrix("encoder/position_encodings/encodings")?;
    let (n_text_ctx, text_state) = matrix("decoder/position_encodings/encodings")?;
    if text_state != n_text_state {
        return Err(ModelError::Source(
            "decoder embedding widths disagree".into(),
        ));
    }
    let n_mels = match model.get("encoder/conv1/weight")?.dims[..] {
        [_, n_mels, 3] => n_mels,
        ref dims => {
            return Err(ModelError::Source(format!(
                "encoder/conv1/weight has shape {dims:?}"
            )));
        }
    };
    let int = |v: usize| {
        i32::try_from(v).map_err(|_| ModelError::Source(format!("dimension {v} is too large")))
    };
    let head = |name: &str| {
        let v = model.int(name)?;
        i32::try_from(v).map_err(|_| ModelError::Source(format!("{name} = {v} is out of range")))
    };
    Ok(Hparams {
        n_vocab: int(n_vocab)?,
        n_audio_ctx: int(n_audio_ctx)?,
        n_audio_state: int(n_audio_state)?,
        n_audio_head: head("encoder/num_heads")?,
        n_audio_layer: int(model.layer_count("encoder")?)?,
        n_text_ctx: int(n_text_ctx)?,
        n_text_state: int(n_text_state)?,
        n_text_head: head("decoder/num_heads")?,
        n_text_layer: int(model.layer_count("decoder")?)?,
        n_mels: int(n_mels)?,
        ftype: 1,
    })
}

/// Where a ggml tensor comes from: a CTranslate2 variable, or one of `parts` equal row
/// blocks of a fused one.
#[derive(Debug, PartialEq, Eq)]
struct Source {
    var: String,
    part: Option<(usize, usize)>,
}

fn whole(var: String) -> Source {
    Source { var, part: None }
}

fn part(var: String, index: usize, parts: usize) -> Source {
    Source {
        var,
        part: Some((index, parts)),
    }
}

/// Maps a whisper.cpp tensor name to its CTranslate2 source.
fn source_of(name: &str) -> Option<Source> {
    let fixed = match name {
        "encoder.positional_embedding" => "encoder/position_encodings/encodings",
        "encoder.conv1.weight" => "encoder/conv1/weight",
        "encoder.conv1.bias" => "encoder/conv1/bias",
        "encoder.conv2.weight" => "encoder/conv2/weight",
        "encoder.conv2.bias" => "encoder/conv2/bias",
        "encoder.ln_post.weight" => "encoder/layer_norm/gamma",
        "encoder.ln_post.bias" => "encoder/layer_norm/beta",
        "decoder.positional_embedding" => "decoder/position_encodings/encodings",
        "decoder.token_embedding.weight" => "decoder/embeddings/weight",
        "decoder.ln.weight" => "decoder/layer_norm/gamma",
        "decoder.ln.bias" => "decoder/layer_norm/beta",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(whole(fixed.to_string()));
    }
    let (side, rest) = name.split_once(".blocks.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, param) = rest.rsplit_once('.')?;
    let norm = match param {
        "weight" => "gamma",
        "bias" => "beta",
        _ => return None,
    };
    let p = format!("{side}/layer_{layer}");
    Some(match module {
        "attn_ln" => whole(format!("{p}/self_attention/layer_norm/{norm}")),
        "attn.query" => part(format!("{p}/self_attention/linear_0/{param}"), 0, 3),
        "attn.key" => part(format!("{p}/self_attention/linear_0/{param}"), 1, 3),
        "attn.value" => part(format!("{p}/self_attention/linear_0/{param}"), 2, 3),
        "attn.out" => whole(format!("{p}/self_attention/linear_1/{param}")),
        "cross_attn_ln" => whole(format!("{p}/attention/layer_norm/{norm}")),
        "cross_attn.query" => whole(format!("{p}/attention/linear_0/{param}")),
        "cross_attn.key" => part(format!("{p}/attention/linear_1/{param}"), 0, 2),
        "cross_attn.value" => part(format!("{p}/attention/linear_1/{param}"), 1, 2),
        "cross_attn.out" => whole(format!("{p}/attention/linear_2/{param}")),
        "mlp_ln" => whole(format!("{p}/ffn/layer_norm/{norm}")),
        "mlp.0" => whole(format!("{p}/ffn/linear_0/{param}")),
        "mlp.2" => whole(format!("{p}/ffn/linear_1/{param}")),
        _ => return None,
    })
}

/// The bytes and shape of a variable, or of one row block of it.
fn rows_of<'a>(
    var: &Variable<'a>,
    part: Option<(usize, usize)>,
) -> Result<(&'a [u8], Vec<usize>), String> {
    let Some((index, parts)) = part else {
        return Ok((var.data, var.dims.clone()));
    };
    let rows = *var.dims.first().ok_or("a scalar cannot be split")?;
    if rows % parts != 0 {
        return Err(format!("{rows} rows do not split into {parts} equal parts"));
    }
    let block = var.data.len() / parts;
    let mut dims = var.dims.clone();
    dims[0] = rows / parts;
    Ok((&var.data[index * block..(index + 1) * block], dims))
}

/// Shapes compare equal up to trailing unit dimensions (the conv biases gain one).
fn trim_ones(dims: &[usize]) -> &[usize] {
    let keep = dims.iter().rposition(|&d| d != 1).map_or(0, |i| i + 1);
    &dims[..keep]
}

/// Re-encodes little-endian float data as `to`; `None` for integer data.
fn recode<'a>(
    data: &'a [u8],
    from: DType,
    to: GgmlType,
    scratch: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    let decode: fn(&[u8]) -> f32 = match from {
        DType::F32 if to == GgmlType::F32 => return Some(data),
        DType::F16 if to == GgmlType::F16 => return Some(data),
        DType::F32 => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        DType::F16 => |b| f16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::BF16 => |b| bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::I8 | DType::I16 | DType::I32 => return None,
    };
    scratch.clear();
    scratch.reserve(data.len() / from.size() * to.size());
    for element in data.chunks_exact(from.size()) {
        let v = decode(element);
        match to {
            GgmlType::F32 => scratch.extend_from_slice(&v.to_le_bytes()),
            GgmlType::F16 => scratch.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
        }
    }
    Some(scratch)
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
