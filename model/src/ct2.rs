//! Reader for CTranslate2's `model.bin`, binary format version 6.
//!
//! Layout (little-endian): u32 version, string spec name, u32 spec revision, u32 variable
//! count, the variables, u32 alias count, the aliases. A string is a u16 length that counts a
//! trailing NUL, then the bytes. A variable is its name, u8 rank, u32 per dimension, u8 dtype
//! id, u32 byte count and the raw data. The reader borrows the data from the caller's buffer:
//! the model is converted tensor by tensor, so copying it would only double peak memory.

use std::collections::HashMap;

use crate::ModelError;

/// The only binary version whose layout we know.
const BINARY_VERSION: u32 = 6;

/// Element type of a CTranslate2 variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_id(id: u8) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            _ => return None,
        })
    }

    #[cfg(test)]
    pub(crate) fn id(self) -> u8 {
        match self {
            DType::F32 => 0,
            DType::I8 => 1,
            DType::I16 => 2,
            DType::I32 => 3,
            DType::F16 => 4,
            DType::BF16 => 5,
        }
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One named array of the model.
#[derive(Debug)]
pub(crate) struct Variable<'a> {
    /// Dimensions, outermost first (numpy order). Empty for a scalar.
    pub dims: Vec<usize>,
    pub dtype: DType,
    pub data: &'a [u8],
}

impl Variable<'_> {
    /// The value of an integer scalar (CTranslate2 stores config such as head counts this way).
    fn as_int(&self) -> Option<i64> {
        if !self.dims.is_empty() {
            return None;
        }
        let d = self.data;
        Some(match self.dtype {
            DType::I8 => i64::from(d[0] as i8),
            DType::I16 => i64::from(i16::from_le_bytes([d[0], d[1]])),
            DType::I32 => i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]])),
            _ => return None,
        })
    }
}

/// A parsed `model.bin`.
#[derive(Debug)]
pub(crate) struct Ct2Model<'a> {
    pub spec: String,
    pub revision: u32,
    variables: HashMap<String, Variable<'a>>,
    aliases: HashMap<String, String>,
}

impl<'a> Ct2Model<'a> {
    /// Parses the whole file; every size is checked against the buffer, so a truncated or
    /// foreign file yields an error naming where it broke, never a panic.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Ct2Model<'a>, ModelError> {
        let mut r = Cursor { bytes, pos: 0 };
        let version = r.u32("binary version")?;
        if version != BINARY_VERSION {
            return Err(source_err(format!(
                "model.bin has binary version {version}; only version {BINARY_VERSION} is supported"
            )));
        }
        let spec = r.string("spec name")?;
        let revision = r.u32("spec revision")?;
        let count = r.u32("variable count")? as usize;
        let mut variables = HashMap::with_capacity(count.min(4096));
        for index in 0..count {
            let name = r.string(&format!("name of variable #{index}"))?;
            let rank = r.u8(&name)?;
            let dims = (0..rank)
                .map(|_| r.u32(&name).map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let id = r.u8(&name)?;
            let dtype = DType::from_id(id)
                .ok_or_else(|| source_err(format!("variable {name} has unknown dtype id {id}")))?;
            let byte_len = r.u32(&name)? as usize;
            let elements = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if elements.and_then(|n| n.checked_mul(dtype.size())) != Some(byte_len) {
                return Err(source_err(format!(
                    "variable {name} claims {byte_len} bytes for shape {dims:?} of {dtype:?}"
                )));
            }
            let data = r.take(byte_len, &name)?;
            variables.insert(name, Variable { dims, dtype, data });
        }
        let alias_count = r.u32("alias count")? as usize;
        let mut aliases = HashMap::new();
        for index in 0..alias_count {
            let alias = r.string(&format!("alias #{index}"))?;
            let target = r.string(&alias)?;
            aliases.insert(alias, target);
        }
        if r.pos != bytes.len() {
            return Err(source_err(format!(
                "model.bin has {} unexpected trailing bytes",
                bytes.len() - r.pos
            )));
        }
        Ok(Ct2Model {
            spec,
            revision,
            variables,
            aliases,
        })
    }

    /// The variable called `name`, following an alias if it is one.
    pub(crate) fn get(&self, name: &str) -> Result<&Variable<'a>, ModelError> {
        let target = self.aliases.get(name).map_or(name, String::as_str);
        self.variables
            .get(target)
            .ok_or_else(|| source_err(format!("model.bin has no variable {name}")))
    }

    /// An integer scalar such as `encoder/num_heads`.
    pub(crate) fn int(&self, name: &str) -> Result<i64, ModelError> {
        self.get(name)?
            .as_int()
            .ok_or_else(|| source_err(format!("variable {name} is not an integer scalar")))
    }

    /// How many `<prefix>/layer_<n>/...` blocks exist, checking they are numbered 0..n.
    pub(crate) fn layer_count(&self, prefix: &str) -> Result<usize, ModelError> {
        let start = format!("{prefix}/layer_");
        let mut seen: Vec<usize> = self
            .variables
            .keys()
            .filter_map(|name| name.strip_prefix(&start)?.split('/').next()?.parse().ok())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.iter().enumerate().any(|(i, &n)| i != n) {
            return Err(source_err(format!(
                "{prefix} layers are not numbered 0..n: {seen:?}"
            )));
        }
        Ok(seen.len())
    }
}

fn source_err(reason: String) -> ModelError {
    ModelError::Source(reason)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ModelError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| {
            source_err(format!(
                "model.bin is truncated in {what} (at byte {})",
                self.pos
            ))
        })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ModelError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, ModelError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String, ModelError> {
        let b = self.take(2, what)?;
        let len = usize::from(u16::from_le_bytes([b[0], b[1]]));
        let raw = self.take(len, what)?;
        let text = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(text.to_vec())
            .map_err(|_| source_err(format!("{what} is not UTF-8 (at byte {})", self.pos)))
    }
}

/// Builds a `model.bin` in memory, for tests of this reader and of the converter.
#[cfg(test)]
pub(crate) fn encode(
    spec: &str,
    variables: &[(&str, &[usize], DType, Vec<u8>)],
    aliases: &[(&str, &str)],
) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = BINARY_VERSION.to_le_bytes().to_vec();
    string(&mut out, spec);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(variables.len() as u32).to_le_bytes());
    for (name, dims, dtype, data) in variables {
        string(&mut out, name);
        out.push(dims.len() as u8);
        for d in dims.iter() {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        out.push(dtype.id());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (alias, target) in aliases {
        string(&mut out, alias);
        string(&mut out, target);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(
            "WhisperSpec",
            &[
                (
                    "encoder/num_heads",
                    &[],
                    DType::I16,
                    6i16.to_le_bytes().to_vec(),
                ),
                ("w", &[2, 3], DType::F32, vec![0; 24]),
                ("decoder/layer_0/x", &[1], DType::I8, vec![7]),
                ("decoder/layer_1/x", &[1], DType::I8, vec![8]),
            ],
            &[("alias/w", "w")],
        )
    }

    #[test]
    fn parses_variables_scalars_and_aliases() {
        let bytes = sample();
        let model = Ct2Model::parse(&bytes).unwrap();
        assert_eq!(model.spec, "WhisperSpec");
        assert_eq!(model.revision, 3);
        assert_eq!(model.int("encoder/num_heads").unwrap(), 6);
        let w = model.get("alias/w").unwrap();
        assert_eq!(
            (w.dims.as_slice(), w.dtype, w.data.len()),
            (&[2, 3][..], DType::F32, 24)
        );
        assert_eq!(model.layer_count("decoder").unwrap(), 2);
        assert_eq!(model.layer_count("encoder").unwrap(), 0);
        assert!(
            model
                .get("nope")
                .unwrap_err()
                .to_string()
                .contains("no variable nope")
        );
    }

    #[test]
    fn truncation_names_the_variable() {
        let bytes = sample();
        let err = Ct2Model::parse(&bytes[..60]).unwrap_err().to_string();
        assert!(err.contains("truncated in w"), "{err}");
    }

    #[test]
    fn wrong_version_and_inconsistent_sizes_are_refused() {
        let mut bytes = sample();
        bytes[0] = 5;
        let err = Ct2Model::parse(&bytes).unwrap_err().to_string();
        assert!(err.contains("binary version 5"), "{err}");

        let bad = encode(
            "WhisperSpec",
            &[("w", &[2, 3], DType::F16, vec![0; 10])],
            &[],
        );
        let err = Ct2Model::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("claims 10 bytes"), "{err}");
    }
}
