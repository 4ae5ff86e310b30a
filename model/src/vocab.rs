//! Whisper's vocabulary: from CTranslate2's `vocabulary.txt` to the raw token bytes ggml
//! stores.
//!
//! `vocabulary.txt` holds one token per line in GPT-2's byte-level form, where every byte is
//! shown as a printable character (a space is `Ġ`, a newline `Ċ`). whisper.cpp wants the raw
//! bytes, and only the ordinary BPE tokens: it appends `<|endoftext|>` and the other special
//! tokens itself, numbering them from the count we write.

use crate::ModelError;

/// The first special token; everything before it is ordinary BPE.
const END_OF_TEXT: &[u8] = b"<|endoftext|>";

/// Decodes the BPE tokens of `vocabulary_txt` to raw bytes.
pub(crate) fn whisper_tokens(vocabulary_txt: &[u8]) -> Result<Vec<Vec<u8>>, ModelError> {
    let decode = byte_decoder();
    // Split on '\n' alone: the byte-level alphabet has no raw control characters, but
    // generic line splitting would also break at Unicode separators such as U+0085.
    let lines = vocabulary_txt.split(|&b| b == b'\n');
    let mut tokens = Vec::with_capacity(51_864);
    for (index, line) in lines.enumerate() {
        if line == END_OF_TEXT {
            return Ok(tokens);
        }
        let text = std::str::from_utf8(line).map_err(|_| {
            ModelError::Source(format!("vocabulary.txt line {} is not UTF-8", index + 1))
        })?;
        let bytes = text
            .chars()
            .map(|c| decode(c).ok_or(c))
            .collect::<Result<Vec<u8>, char>>()
            .map_err(|c| {
                ModelError::Source(format!(
                    "vocabulary.txt line {} has U+{:04X}, outside GPT-2's byte alphabet",
                    index + 1,
                    u32::from(c)
                ))
            })?;
        tokens.push(bytes);
    }
    Err(ModelError::Source(
        "vocabulary.txt has no <|endoftext|> token".into(),
    ))
}

/// The inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves,
/// the remaining 68 bytes (controls, space, DEL, NBSP, soft hyphen...) were moved, in byte
/// order, to U+0100 onwards.
fn byte_decoder() -> impl Fn(char) -> Option<u8> {
    let mut table = [0u8; 256 + 68];
    let mut valid = [false; 256 + 68];
    let mut shifted = 0;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            usize::from(byte)
        } else {
            shifted += 1;
            255 + shifted
        };
        table[code] = byte;
        valid[code] = true;
    }
    move |c| {
        let code = c as usize;
        (code < table.len() && valid[code]).then(|| table[code])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let decode = byte_decoder();
        let mut seen = [false; 256];
        for code in 0..0x200u32 {
            if let Some(b) = char::from_u32(code).and_then(&decode) {
                assert!(!seen[usize::from(b)], "byte {b} decoded twice");
                seen[usize::from(b)] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(decode('Ġ'), Some(b' '));
        assert_eq!(decode('Ċ'), Some(b'\n'));
        assert_eq!(decode('Ā'), Some(0));
        assert_eq!(decode('Ń'), Some(0xAD)); // the last moved byte, soft hyphen, is U+0143
        assert_eq!(decode('ń'), None);
    }

    #[test]
    fn decodes_tokens_until_end_of_text() {
        let text = "!\nĠthe\nÃ©\nĊ\n<|endoftext|>\n<|startoftranscript|>\n";
        let tokens = whisper_tokens(text.as_bytes()).unwrap();
        let expected: [&[u8]; 4] = [b"!", b" the", "é".as_bytes(), b"\n"];
        assert_eq!(tokens, expected.map(<[u8]>::to_vec));
    }

    #[test]
    fn foreign_characters_and_missing_end_are_errors() {
        let err = whisper_tokens("ok\nĠ€\n<|endoftext|>".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 2 has U+20AC"), "{err}");
        let err = whisper_tokens(b"a\nb\n").unwrap_err();
        assert!(err.to_string().contains("no <|endoftext|>"), "{err}");
    }
}
