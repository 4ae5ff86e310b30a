//! whisper.cpp's legacy ggml model file: writer and verifier.
//!
//! Layout (little-endian i32 unless said): magic, eleven hyper-parameters, the mel filterbank
//! (n_mel, n_fft, then n_mel x n_fft f32), the vocabulary (count, then length + raw bytes per
//! token), then tensors until end of file: n_dims, name length, type, the dims innermost first,
//! the name, the data. There is no alignment and no tensor count, which is why a truncated
//! file is only noticed by looking at every tensor.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::ModelError;
use crate::layout::tensor_layout;

/// The first four bytes of a ggml file ("ggml" as a little-endian u32).
pub const GGML_MAGIC: u32 = 0x6767_6d6c;

/// Whisper's hyper-parameters as the ggml header records them, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    /// Vocabulary size including special tokens (51864 for English-only models).
    pub n_vocab: i32,
    /// Encoder positions (1500 = 30 s of audio).
    pub n_audio_ctx: i32,
    /// Encoder width.
    pub n_audio_state: i32,
    /// Encoder attention heads.
    pub n_audio_head: i32,
    /// Encoder blocks.
    pub n_audio_layer: i32,
    /// Decoder positions.
    pub n_text_ctx: i32,
    /// Decoder width.
    pub n_text_state: i32,
    /// Decoder attention heads.
    pub n_text_head: i32,
    /// Decoder blocks.
    pub n_text_layer: i32,
    /// Mel bins of the input spectrogram.
    pub n_mels: i32,
    /// Storage type of the large weights: 0 all f32, 1 f16.
    pub ftype: i32,
}

impl Hparams {
    /// Whisper tiny.en, the model [`install`](crate::install) provides.
    pub const TINY_EN: Hparams = Hparams {
        n_vocab: 51864,
        n_audio_ctx: 1500,
        n_audio_state: 384,
        n_audio_head: 6,
        n_audio_layer: 4,
        n_text_ctx: 448,
        n_text_state: 384,
        n_text_head: 6,
        n_text_layer: 4,
        n_mels: 80,
        ftype: 1,
    };

    fn to_array(self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    fn from_array(a: [i32; 11]) -> Hparams {
        let [
            n_vocab,
            n_audio_ctx,
            n_audio_state,
            n_audio_head,
            n_audio_layer,
            n_text_ctx,
            n_text_state,
            n_text_head,
            n_text_layer,
            n_mels,
            ftype,
        ] = a;
        Hparams {
            n_vocab,
            n_audio_ctx,
            n_audio_state,
            n_audio_head,
            n_audio_layer,
            n_text_ctx,
            n_text_state,
            n_text_head,
            n_text_layer,
            n_mels,
            ftype,
        }
    }

    /// The type of the large matrices for this file's ftype.
    pub(crate) fn weight_type(&self) -> GgmlType {
        if self.ftype == 0 {
            GgmlType::F32
        } else {
            GgmlType::F16
        }
    }
}

/// Element type of a tensor in the file (only the unquantized ones are produced or accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float (type id 0).
    F32,
    /// IEEE half float (type id 1).
    F16,
}

impl GgmlType {
    fn id(self) -> i32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
        }
    }

    fn from_id(id: i32) -> Option<GgmlType> {
        match id {
            0 => Some(GgmlType::F32),
            1 => Some(GgmlType::F16),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
        }
    }
}

/// A tensor found in a verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// whisper.cpp's name, e.g. `encoder.blocks.0.attn.query.weight`.
    pub name: String,
    /// Dimensions outermost first (numpy order), e.g. `[1536, 384]` for `mlp.0.weight`.
    pub dims: Vec<usize>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset of the tensor's data in the file.
    pub data_offset: u64,
}

/// What [`verify`] found in a well-formed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// The header.
    pub hparams: Hparams,
    /// Mel filterbank shape: (mel bins, FFT bins).
    pub mel_shape: (usize, usize),
    /// Vocabulary entries stored in the file (whisper.cpp adds the special tokens itself).
    pub vocab_tokens: usize,
    /// Every tensor, in file order.
    pub tensors: Vec<TensorInfo>,
    /// File size in bytes.
    pub file_bytes: u64,
}

/// Writes a ggml file front to back; the caller supplies tensors in any order.
pub(crate) struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub(crate) fn new(out: W) -> Self {
        Writer { out }
    }

    pub(crate) fn header(&mut self, h: &Hparams) -> std::io::Result<()> {
        self.out.write_all(&GGML_MAGIC.to_le_bytes())?;
        h.to_array().iter().try_for_each(|v| self.i32(*v))
    }

    /// `filters` is n_mel rows of n_fft values.
    pub(crate) fn mel_filters(
        &mut self,
        n_mel: usize,
        n_fft: usize,
        filters: &[f32],
    ) -> std::io::Result<()> {
        assert_eq!(filters.len(), n_mel * n_fft, "mel filterbank shape");
        self.i32(n_mel as i32)?;
        self.i32(n_fft as i32)?;
        filters
            .iter()
            .try_for_each(|v| self.out.write_all(&v.to_le_bytes()))
    }

    pub(crate) fn vocab(&mut self, tokens: &[Vec<u8>]) -> std::io::Result<()> {
        self.i32(tokens.len() as i32)?;
        for token in tokens {
            self.i32(token.len() as i32)?;
            self.out.write_all(token)?;
        }
        Ok(())
    }

    /// The tensor header; the caller then writes exactly the tensor's data with [`Self::data`].
    pub(crate) fn tensor_header(
        &mut self,
        name: &str,
        dims: &[usize],
        ty: GgmlType,
    ) -> std::io::Result<()> {
        self.i32(dims.len() as i32)?;
        self.i32(name.len() as i32)?;
        self.i32(ty.id())?;
        dims.iter().rev().try_for_each(|d| self.i32(*d as i32))?;
        self.out.write_all(name.as_bytes())
    }

    pub(crate) fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)
    }

    pub(crate) fn into_inner(self) -> W {
        self.out
    }

    fn i32(&mut self, v: i32) -> std::io::Result<()> {
        self.out.write_all(&v.to_le_bytes())
    }
}

/// Checks that `path` is a complete Whisper ggml model whisper.cpp will accept: magic,
/// plausible header, mel filterbank and vocabulary sizes, and exactly the expected tensors
/// with the expected shapes and types, each with all of its data present. It reads headers
/// only (a few hundred KB), so it is cheap enough to run before every load.
pub fn verify(path: &Path) -> Result<ModelSummary, ModelError> {
    let file = File::open(path).map_err(ModelError::io(path))?;
    let file_bytes = file.metadata().map_err(ModelError::io(path))?.len();
    let mut r = Reader {
        inner: BufReader::new(file),
        pos: 0,
        len: file_bytes,
        path,
    };
    let invalid = |problem: String| ModelError::Invalid {
        path: path.to_path_buf(),
        problem,
    };

    let magic = r.i32("the header")? as u32;
    if magic != GGML_MAGIC {
        return Err(invalid(format!(
            "bad magic 0x{magic:08x} (a ggml file starts with 0x{GGML_MAGIC:08x})"
        )));
    }
    let mut fields = [0i32; 11];
    for f in &mut fields {
        *f = r.i32("the header")?;
    }
    let h = Hparams::from_array(fields);
    check_hparams(&h).map_err(invalid)?;

    let n_mel = r.i32("the mel filterbank")?;
    let n_fft = r.i32("the mel filterbank")?;
    if n_mel != h.n_mels || !(1..=8192).contains(&n_fft) {
        return Err(invalid(format!(
            "mel filterbank is {n_mel} x {n_fft}, expected {} bins",
            h.n_mels
        )));
    }
    r.skip(n_mel as u64 * n_fft as u64 * 4, "the mel filterbank")?;

    let n_tokens = r.i32("the vocabulary")?;
    if !(1..=h.n_vocab).contains(&n_tokens) {
        return Err(invalid(format!(
            "vocabulary has {n_tokens} tokens, n_vocab is {}",
            h.n_vocab
        )));
    }
    for i in 0..n_tokens {
        let len = r.i32("the vocabulary")?;
        if !(0..=1024).contains(&len) {
            return Err(invalid(format!("vocabulary token {i} claims {len} bytes")));
        }
        r.skip(len as u64, "the vocabulary")?;
    }

    let expected: HashMap<String, (Vec<usize>, GgmlType)> = tensor_layout(&h)
        .into_iter()
        .map(|t| (t.name, (t.dims, t.ty)))
        .collect();
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(expected.len());
    while r.pos < r.len {
        let what = match tensors.last() {
            Some(prev) => format!("the tensor header after {}", prev.name),
            None => "the first tensor header".to_string(),
        };
        let n_dims = r.i32(&what)?;
        let name_len = r.i32(&what)?;
        let type_id = r.i32(&what)?;
        if !(1..=4).contains(&n_dims) || !(1..=256).contains(&name_len) {
            return Err(invalid(format!(
                "{what} is garbage ({n_dims} dims, {name_len}-byte name)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.i32(&what)?);
        }
        let name = String::from_utf8(r.bytes(name_len as usize, &what)?)
            .map_err(|_| invalid(format!("{what} has a name that is not UTF-8")))?;
        let Some((want_dims, want_ty)) = expected.get(&name) else {
            return Err(invalid(format!("unexpected tensor {name}")));
        };
        if tensors.iter().any(|t| t.name == name) {
            return Err(invalid(format!("tensor {name} appears twice")));
        }
        // The file stores dims innermost first; report them in numpy order like the layout.
        let dims: Vec<usize> = dims.iter().rev().map(|&d| d.max(0) as usize).collect();
        if &dims != want_dims {
            return Err(invalid(format!(
                "tensor {name} has shape {dims:?}, expected {want_dims:?}"
            )));
        }
        let ty = GgmlType::from_id(type_id)
            .filter(|t| t == want_ty)
            .ok_or_else(|| {
                invalid(format!(
                    "tensor {name} has type id {type_id}, expected {want_ty:?}"
                ))
            })?;
        let data_offset = r.pos;
        let data_len = dims.iter().product::<usize>() as u64 * ty.size() as u64;
        r.skip(data_len, &format!("tensor {name}"))?;
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            data_offset,
        });
    }
    if tensors.len() != expected.len() {
        let missing = tensor_layout(&h)
            .into_iter()
            .find(|t| !tensors.iter().any(|have| have.name == t.name))
            .map(|t| t.name)
            .unwrap_or_default();
        return Err(invalid(format!(
            "has {} tensors, expected {} (missing {missing} and maybe more)",
            tensors.len(),
            expected.len()
        )));
    }
    Ok(ModelSummary {
        hparams: h,
        mel_shape: (n_mel as usize, n_fft as usize),
        vocab_tokens: n_tokens as usize,
        tensors,
        file_bytes,
    })
}

/// Bounds that every Whisper size satisfies; anything outside is a corrupt header, and
/// trusting it would make whisper.cpp try absurd allocations.
fn check_hparams(h: &Hparams) -> Result<(), String> {
    let a = h.to_array();
    const NAMES: [&str; 10] = [
        "n_vocab",
        "n_audio_ctx",
        "n_audio_state",
        "n_audio_head",
        "n_audio_layer",
        "n_text_ctx",
        "n_text_state",
        "n_text_head",
        "n_text_layer",
        "n_mels",
    ];
    for (name, v) in NAMES.iter().zip(a) {
        if !(1..=1 << 20).contains(&v) {
            return Err(format!("header field {name} = {v} is out of range"));
        }
    }
    if h.n_audio_state % h.n_audio_head != 0 || h.n_text_state % h.n_text_head != 0 {
        return Err("header has a state width not divisible by its head count".into());
    }
    if !(0..=1).contains(&h.ftype) {
        return Err(format!(
            "ftype {} (quantized) is not supported, only 0 (f32) and 1 (f16)",
            h.ftype
        ));
    }
    Ok(())
}

/// A position-tracking reader whose every short read becomes "file truncated in <what>".
struct Reader<'p> {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
    path: &'p Path,
}

impl Reader<'_> {
    fn truncated(&self, what: &str) -> ModelError {
        ModelError::Invalid {
            path: PathBuf::from(self.path),
            problem: format!("file truncated in {what} ({} bytes long)", self.len),
        }
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<Vec<u8>, ModelError> {
        if self.pos + n as u64 > self.len {
            return Err(self.truncated(what));
        }
        let mut buf = vec![0; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(ModelError::io(self.path))?;
        self.pos += n as u64;
        Ok(buf)
    }

    fn i32(&mut self, what: &str) -> Result<i32, ModelError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), ModelError> {
        if self.pos.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(self.truncated(what));
        }
        self.inner
            .seek_relative(n as i64)
            .map_err(ModelError::io(self.path))?;
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
#[path = "ggml_tests.rs"]
mod tests;
