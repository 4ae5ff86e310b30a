//! The Slaney-style mel filterbank Whisper was trained with.
//!
//! Whisper's reference code loads `librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)` from
//! a file, and whisper.cpp reads the same numbers from the ggml header. We compute them
//! instead, reproducing librosa's arithmetic step for step (f64 throughout, the triangle
//! stored to an f32 array before the f64 area normalisation is applied and rounded again), so
//! the result is bit-identical rather than merely close.

/// Returns `n_mels` rows of `n_fft / 2 + 1` weights, row-major, for audio at `sample_rate`,
/// spanning 0 Hz to Nyquist with Slaney's mel scale and area normalisation.
pub fn slaney_mel_filters(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let sr = f64::from(sample_rate);
    let n_bins = n_fft / 2 + 1;

    // numpy's rfftfreq: bin index times 1 / (n * d), with d = 1 / sr.
    let bin_step = 1.0 / (n_fft as f64 * (1.0 / sr));
    let fft_freqs: Vec<f64> = (0..n_bins).map(|j| j as f64 * bin_step).collect();

    // n_mels + 2 points evenly spaced on the mel scale (numpy's linspace: i * step + start,
    // with the last point pinned to the stop value), mapped back to Hz.
    let (min_mel, max_mel) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let points = n_mels + 2;
    let step = (max_mel - min_mel) / (points - 1) as f64;
    let mel_f: Vec<f64> = (0..points)
        .map(|i| {
            if i == points - 1 {
                max_mel
            } else {
                i as f64 * step + min_mel
            }
        })
        .map(mel_to_hz)
        .collect();

    let mut weights = vec![0f32; n_mels * n_bins];
    for (i, row) in weights.chunks_exact_mut(n_bins).enumerate() {
        let (lo, centre, hi) = (mel_f[i], mel_f[i + 1], mel_f[i + 2]);
        let enorm = 2.0 / (hi - lo);
        for (w, &f) in row.iter_mut().zip(&fft_freqs) {
            let rising = -(lo - f) / (centre - lo);
            let falling = (hi - f) / (hi - centre);
            let triangle = simd_max(0.0, simd_min(rising, falling)) as f32;
            *w = (f64::from(triangle) * enorm) as f32;
        }
    }
    weights
}

/// numpy's minimum/maximum compile to x86 MINPD/MAXPD, which return the second operand when
/// the two compare equal. That only matters for signed zeros: librosa's first weight is -0.0.
fn simd_min(a: f64, b: f64) -> f64 {
    if a < b { a } else { b }
}

fn simd_max(a: f64, b: f64) -> f64 {
    if a > b { a } else { b }
}

/// Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    let min_log_mel = MIN_LOG_HZ / F_SP;
    if hz >= MIN_LOG_HZ {
        min_log_mel + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let min_log_mel = MIN_LOG_HZ / F_SP;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (log_step() * (mel - min_log_mel)).exp()
    } else {
        F_SP * mel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values printed by `librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)` with
    /// librosa 0.11.0 and numpy 2.4.6 (Python 3.11, x86-64), as f32 bit patterns so the
    /// comparison is exact. The full 80 x 201 table was also compared once, all 16,080 values
    /// bit for bit.
    const LIBROSA: [(usize, usize, u32); 7] = [
        (0, 0, 0x8000_0000), // -0.0, see simd_max
        (0, 1, 0x3ccb_aca4), // 0.02486259490251541
        (0, 2, 0x0000_0000),
        (1, 2, 0x3cbb_5d95), // 0.022871771827340126
        (1, 3, 0x0000_0000),
        (79, 199, 0x39eb_476a), // 0.0004487590049393475
        (79, 200, 0x0000_0000),
    ];

    #[test]
    fn matches_librosa_bit_for_bit() {
        let w = slaney_mel_filters(16_000, 400, 80);
        assert_eq!(w.len(), 80 * 201);
        for (row, col, bits) in LIBROSA {
            let got = w[row * 201 + col];
            assert_eq!(got.to_bits(), bits, "w[{row}][{col}] = {got:e}");
        }
    }

    /// Aggregate properties librosa reports for the same call: 391 non-zero weights summing
    /// to 1.999024092387117 (as f64), and where three filters start and end.
    #[test]
    fn matches_librosa_aggregates() {
        let w = slaney_mel_filters(16_000, 400, 80);
        assert_eq!(w.iter().filter(|v| **v != 0.0).count(), 391);
        let sum: f64 = w.iter().map(|v| f64::from(*v)).sum();
        assert!((sum - 1.999_024_092_387_117).abs() < 1e-12, "{sum}");
        for (row, first, last) in [(0, 1, 1), (40, 42, 44), (79, 186, 199)] {
            let nz: Vec<usize> = (0..201).filter(|&j| w[row * 201 + j] != 0.0).collect();
            assert_eq!((nz[0], *nz.last().unwrap()), (first, last), "row {row}");
        }
    }

    /// An independent hand check of the first filter. Nyquist, 8 kHz, is 15 + ln(8) / (ln(6.4)
    /// / 27) = 45.246 mel; 82 points put them 0.5586 mel apart, and below 1 kHz a mel is 200/3
    /// Hz, so the first triangle rises from 0 Hz to 37.24 Hz and falls to 74.48 Hz. FFT bins
    /// are 16000 / 400 = 40 Hz apart, so only bin 1 lies inside, on the falling edge:
    /// (74.48 - 40) / 37.24 = 0.9259, times the area norm 2 / 74.48 = 0.02685, is 0.02486.
    #[test]
    fn first_filter_by_hand() {
        let max_mel = 15.0 + (8.0f64).ln() / (6.4f64.ln() / 27.0);
        let step_hz = max_mel / 81.0 * 200.0 / 3.0;
        let (lo, centre, hi) = (0.0, step_hz, 2.0 * step_hz);
        let falling = (hi - 40.0) / (hi - centre);
        let expected = falling * 2.0 / (hi - lo);
        let got = f64::from(slaney_mel_filters(16_000, 400, 80)[1]);
        assert!((got - expected).abs() < 1e-7, "{got} vs {expected}");
    }
}
