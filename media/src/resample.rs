//! 48 kHz to 16 kHz, streaming, in 10 ms blocks.
//!
//! rubato's synchronous FFT resampler with both sides fixed turns each 480-sample block into
//! exactly 160 samples, which is also the VAD's frame. Input of any length is accepted: samples
//! short of a whole block wait for the next call. All buffers are allocated up front.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// Input block: 10 ms at 48 kHz.
pub const BLOCK_IN: usize = 480;
/// Output block: 10 ms at 16 kHz.
pub const BLOCK_OUT: usize = 160;
/// Output rate.
pub const OUTPUT_RATE: usize = 16_000;

/// Why the resampler could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// rubato refused the settings.
    #[error("cannot create the resampler: {0}")]
    Create(#[from] rubato::ResamplerConstructionError),
    /// rubato failed on a block.
    #[error("resampling failed: {0}")]
    Process(#[from] rubato::ResampleError),
}

/// Streams 48 kHz mono into 16 kHz mono.
pub struct Downsampler {
    fft: Fft<f32>,
    pending: Vec<f32>,
    out: Vec<f32>,
}

impl std::fmt::Debug for Downsampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downsampler")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Downsampler {
    /// A resampler sized for inputs up to `max_input` samples per call without reallocating.
    pub fn new(max_input: usize) -> Result<Self, ResampleError> {
        let fft = Fft::new(48_000, OUTPUT_RATE, BLOCK_IN, 1, FixedSync::Both)?;
        debug_assert_eq!(
            (fft.input_frames_next(), fft.output_frames_next()),
            (BLOCK_IN, BLOCK_OUT)
        );
        let blocks = max_input / BLOCK_IN + 2;
        Ok(Self {
            fft,
            pending: Vec::with_capacity(BLOCK_IN),
            out: Vec::with_capacity(blocks * BLOCK_OUT),
        })
    }

    /// The resampler's delay in output samples (the filter's group delay).
    pub fn delay(&self) -> usize {
        self.fft.output_delay()
    }

    /// Input samples waiting for a whole block.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds 48 kHz samples; returns the 16 kHz samples now ready, always whole 160-sample
    /// blocks.
    pub fn process(&mut self, mut input: &[f32]) -> Result<&[f32], ResampleError> {
        self.out.clear();
        if !self.pending.is_empty() {
            let take = (BLOCK_IN - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == BLOCK_IN {
                let block = std::mem::take(&mut self.pending);
                let done = self.block(&block);
                self.pending = block;
                self.pending.clear();
                done?;
            }
        }
        while input.len() >= BLOCK_IN {
            self.block(&input[..BLOCK_IN])?;
            input = &input[BLOCK_IN..];
        }
        self.pending.extend_from_slice(input);
        Ok(&self.out)
    }

    /// Drops any partial block (for a discontinuity in the input).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    fn block(&mut self, block: &[f32]) -> Result<(), ResampleError> {
        let start = self.out.len();
        self.out.resize(start + BLOCK_OUT, 0.0);
        let input = InterleavedSlice::new(block, 1, BLOCK_IN).expect("block length checked");
        let mut output =
            InterleavedSlice::new_mut(&mut self.out[start..], 1, BLOCK_OUT).expect("sized above");
        self.fft.process_into_buffer(&input, &mut output, None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, rate: f32, len: usize, amp: f32) -> Vec<f32> {
        (0..len)
            .map(|n| amp * (2.0 * std::f32::consts::PI * freq * n as f32 / rate).sin())
            .collect()
    }

    fn rms(pcm: &[f32]) -> f32 {
        (pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len().max(1) as f32).sqrt()
    }

    #[test]
    fn twenty_ms_in_gives_twenty_ms_out() {
        let mut rs = Downsampler::new(960).unwrap();
        let input = sine(440.0, 48_000.0, 960, 0.5);
        assert_eq!(rs.process(&input).unwrap().len(), 320);
        assert_eq!(rs.pending(), 0);
    }

    #[test]
    fn odd_sized_input_is_carried_over() {
        let mut rs = Downsampler::new(960).unwrap();
        let input = sine(440.0, 48_000.0, 1000, 0.5);
        assert_eq!(rs.process(&input[..300]).unwrap().len(), 0);
        assert_eq!(rs.process(&input[300..]).unwrap().len(), 320);
        assert_eq!(rs.pending(), 40);
    }

    #[test]
    fn a_speech_band_tone_keeps_its_level() {
        let mut rs = Downsampler::new(960).unwrap();
        let input = sine(1000.0, 48_000.0, 48_000, 0.5);
        let mut out = Vec::new();
        for chunk in input.chunks(960) {
            out.extend_from_slice(rs.process(chunk).unwrap());
        }
        assert_eq!(out.len(), 16_000);
        // Skip the start-up delay; a 0.5 sine has RMS 0.354.
        let level = rms(&out[1600..]);
        assert!((level - 0.354).abs() < 0.01, "rms {level}");
        // Still a 1 kHz tone: 16 samples a period, so zero crossings every 8 samples.
        let crossings = out[1600..]
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        assert!((899..=901).contains(&crossings), "crossings {crossings}");
    }

    #[test]
    fn content_above_8_khz_is_filtered_out() {
        let mut rs = Downsampler::new(960).unwrap();
        let input = sine(12_000.0, 48_000.0, 48_000, 0.5);
        let mut out = Vec::new();
        for chunk in input.chunks(960) {
            out.extend_from_slice(rs.process(chunk).unwrap());
        }
        assert!(
            rms(&out[1600..]) < 0.005,
            "aliasing rms {}",
            rms(&out[1600..])
        );
    }

    #[test]
    fn silence_stays_silent() {
        let mut rs = Downsampler::new(960).unwrap();
        let out = rs.process(&[0.0; 960]).unwrap();
        assert!(out.iter().all(|&s| s == 0.0));
    }
}
