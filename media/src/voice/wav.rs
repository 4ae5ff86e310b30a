//! Reading the WAV that synthesizers write: RIFF, 16-bit PCM, mono. Streams written to a pipe
//! carry placeholder sizes, so the data chunk runs to the end of the bytes.

/// Mono samples in -1..1 and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    /// Samples.
    pub samples: Vec<f32>,
    /// Hz.
    pub rate: u32,
}

/// Parses a 16-bit PCM WAV (mono, or the first channel of more).
pub fn parse(bytes: &[u8]) -> Result<Pcm, String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE stream".into());
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut pos = 12;
    let mut format: Option<(u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32_at(pos + 4) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            if body + 16 > bytes.len() {
                return Err("truncated fmt chunk".into());
            }
            format = Some((u16_at(body + 2), u32_at(body + 4), u16_at(body + 14)));
        } else if id == b"data" {
            let (channels, rate, bits) = format.ok_or("data before fmt")?;
            if bits != 16 || channels == 0 {
                return Err(format!(
                    "{bits}-bit {channels}-channel WAV is not supported"
                ));
            }
            let end = body.saturating_add(size).min(bytes.len());
            let frame = 2 * channels as usize;
            let samples = bytes[body..end]
                .chunks_exact(frame)
                .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
                .collect();
            return Ok(Pcm { samples, rate });
        }
        pos = body.saturating_add(size + (size & 1));
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, samples: &[i16], data_size: u32) -> Vec<u8> {
        let mut b = b"RIFF\xff\xff\xff\x7fWAVEfmt ".to_vec();
        b.extend(16u32.to_le_bytes());
        b.extend(1u16.to_le_bytes());
        b.extend(1u16.to_le_bytes());
        b.extend(rate.to_le_bytes());
        b.extend((rate * 2).to_le_bytes());
        b.extend(2u16.to_le_bytes());
        b.extend(16u16.to_le_bytes());
        b.extend(b"data");
        b.extend(data_size.to_le_bytes());
        for s in samples {
            b.extend(s.to_le_bytes());
        }
        b
    }

    #[test]
    fn streamed_wav_with_placeholder_size_reads_to_the_end() {
        let p = parse(&wav(22_050, &[0, 16_384, -32_768], 0x7fff_ffff)).unwrap();
        assert_eq!(p.rate, 22_050);
        assert_eq!(p.samples, vec![0.0, 0.5, -1.0]);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse(b"hello").is_err());
        assert!(parse(b"RIFF\0\0\0\0WAVEdata\0\0\0\0").is_err());
    }
}
