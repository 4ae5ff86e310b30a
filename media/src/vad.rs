//! Voice activity per 10 ms frame at 16 kHz: Silero VAD when its model is installed, WebRTC's
//! VAD (libfvad) otherwise.
//!
//! libfvad is a GMM over band energies: it calls steady tones, beeps and loud noise voice, so
//! with it those reach Whisper (which the hallucination guards then have to clean up). Silero
//! is a small neural network that tells them apart; see `crate::silero`.

use std::sync::Arc;

use webrtc_vad::{SampleRate, Vad, VadMode};

use crate::silero::{SileroModel, SileroVad};

/// Samples in one VAD frame: 10 ms at 16 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Duration of one VAD frame.
pub const FRAME_MS: u64 = 10;

/// Says whether each 10 ms frame holds voice.
pub struct VoiceDetector {
    webrtc: WebRtcVad,
    silero: Option<SileroVad>,
}

/// Which detector a [`VoiceDetector`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadKind {
    /// Silero VAD (ONNX).
    Silero,
    /// WebRTC's VAD (libfvad).
    WebRtc,
}

struct WebRtcVad {
    vad: SendVad,
    frame: [i16; FRAME_SAMPLES],
    aggressiveness: u8,
}

/// `webrtc_vad::Vad` wraps a raw pointer, so it is not `Send` on its own.
struct SendVad(Vad);

// SAFETY: a libfvad instance is plain heap state owned only by this wrapper, with no thread
// affinity or thread-local data; `VoiceDetector` needs `&mut` to use it, so it is never shared.
unsafe impl Send for SendVad {}

impl std::fmt::Debug for VoiceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceDetector")
            .field("kind", &self.kind())
            .field("aggressiveness", &self.webrtc.aggressiveness)
            .finish()
    }
}

impl VoiceDetector {
    /// A libfvad detector with aggressiveness 0 (flags the most as voice) to 3 (the least);
    /// higher values are taken as 3.
    pub fn new(aggressiveness: u8) -> Self {
        let aggressiveness = aggressiveness.min(3);
        let mode = match aggressiveness {
            0 => VadMode::Quality,
            1 => VadMode::LowBitrate,
            2 => VadMode::Aggressive,
            _ => VadMode::VeryAggressive,
        };
        let vad = Vad::new_with_rate_and_mode(SampleRate::Rate16kHz, mode);
        Self {
            webrtc: WebRtcVad {
                vad: SendVad(vad),
                frame: [0; FRAME_SAMPLES],
                aggressiveness,
            },
            silero: None,
        }
    }

    /// Silero when `model` is given and a session can be made, libfvad (at `aggressiveness`)
    /// otherwise; a Silero failure is logged and falls back too.
    pub fn with_model(model: Option<&Arc<SileroModel>>, aggressiveness: u8) -> Self {
        let mut this = Self::new(aggressiveness);
        if let Some(model) = model {
            match model.detector() {
                Ok(d) => this.silero = Some(d),
                Err(err) => {
                    tracing::warn!(%err, "Silero VAD unavailable for this track; using webrtc-vad")
                }
            }
        }
        this
    }

    /// The detector in use.
    pub fn kind(&self) -> VadKind {
        if self.silero.is_some() {
            VadKind::Silero
        } else {
            VadKind::WebRtc
        }
    }

    /// The libfvad aggressiveness in use (0-3), also when it is only the fallback.
    pub fn aggressiveness(&self) -> u8 {
        self.webrtc.aggressiveness
    }

    /// Whether a 160-sample frame (16 kHz, f32 in -1.0..=1.0) holds voice. Other lengths are a
    /// caller bug and count as no voice. With Silero the answer is that of the last complete
    /// 32 ms window (at most 30 ms behind).
    pub fn is_voice(&mut self, frame: &[f32]) -> bool {
        if frame.len() != FRAME_SAMPLES {
            debug_assert!(false, "VAD frame of {} samples", frame.len());
            return false;
        }
        if let Some(silero) = &mut self.silero {
            match silero.push(frame) {
                Ok(voiced) => return voiced,
                Err(err) => {
                    tracing::warn!(%err, "Silero VAD failed; this track falls back to webrtc-vad");
                    self.silero = None;
                }
            }
        }
        let w = &mut self.webrtc;
        for (dst, &src) in w.frame.iter_mut().zip(frame) {
            *dst = (src.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
        }
        w.vad.0.is_voice_segment(&w.frame).unwrap_or(false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A crude voiced-speech stand-in: a 130 Hz glottal pulse train through three vowel
    /// formants, with a 4 Hz syllable envelope, at `rate` Hz. Deterministic.
    pub(crate) fn speech_like(rate: f32, samples: usize) -> Vec<f32> {
        (0..samples)
            .map(|n| {
                let t = n as f32 / rate;
                let f0 = 130.0 + 15.0 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
                let mut s = 0.0;
                for h in 1..=30 {
                    let f = f0 * h as f32;
                    let formant = |c: f32, bw: f32| 1.0 / (1.0 + ((f - c) / bw).powi(2));
                    let gain = formant(700.0, 120.0)
                        + 0.6 * formant(1200.0, 150.0)
                        + 0.3 * formant(2500.0, 250.0);
                    s += gain * (2.0 * std::f32::consts::PI * f * t).sin() / h as f32;
                }
                let syllable = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                0.25 * s * syllable
            })
            .collect()
    }

    pub(crate) fn white_noise(samples: usize, amp: f32, seed: u64) -> Vec<f32> {
        let mut x = seed.max(1);
        (0..samples)
            .map(|_| {
                // xorshift64: deterministic and dependency-free.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                amp * ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
            })
            .collect()
    }

    fn tone(freq: f32, samples: usize, amp: f32) -> Vec<f32> {
        (0..samples)
            .map(|n| amp * (2.0 * std::f32::consts::PI * freq * n as f32 / 16_000.0).sin())
            .collect()
    }

    fn voiced_share(aggressiveness: u8, pcm: &[f32]) -> f32 {
        let mut vad = VoiceDetector::new(aggressiveness);
        let frames = pcm.chunks_exact(FRAME_SAMPLES);
        let n = frames.len() as f32;
        frames.filter(|f| vad.is_voice(f)).count() as f32 / n
    }

    #[test]
    fn silence_is_never_voice() {
        for a in 0..=3 {
            assert_eq!(voiced_share(a, &vec![0.0; 16_000]), 0.0);
        }
    }

    #[test]
    fn speech_like_sound_is_voice_at_every_aggressiveness() {
        let pcm = speech_like(16_000.0, 32_000);
        for a in 0..=3 {
            let share = voiced_share(a, &pcm);
            assert!(share > 0.9, "aggressiveness {a}: {share}");
        }
    }

    #[test]
    fn quiet_white_noise_is_not_voice() {
        let pcm = white_noise(32_000, 0.01, 7);
        for a in 0..=3 {
            let share = voiced_share(a, &pcm);
            assert!(share < 0.1, "aggressiveness {a}: {share}");
        }
    }

    // libfvad is an energy-and-spectrum model, not a noise classifier: loud broadband noise and
    // a steady in-band tone both read as voice at every aggressiveness (measured: 100% of
    // frames). Pinned so a change of VAD shows up; the segmenter's hysteresis does not filter
    // them either, so a fan or a tone generator yields utterances Whisper will find empty.
    #[test]
    fn loud_noise_and_steady_tones_read_as_voice() {
        let noise = white_noise(32_000, 0.3, 11);
        let tone = tone(440.0, 32_000, 0.3);
        for a in 0..=3 {
            assert!(voiced_share(a, &noise) > 0.9, "noise at {a}");
            assert!(voiced_share(a, &tone) > 0.9, "tone at {a}");
        }
    }

    #[test]
    fn clamps_out_of_range_samples_and_aggressiveness() {
        let mut vad = VoiceDetector::new(9);
        assert_eq!(vad.aggressiveness(), 3);
        assert!(!vad.is_voice(&[0.0; FRAME_SAMPLES]));
        let loud: Vec<f32> = speech_like(16_000.0, 1600)
            .iter()
            .map(|s| s * 10.0)
            .collect();
        let _ = loud
            .chunks_exact(FRAME_SAMPLES)
            .map(|f| vad.is_voice(f))
            .count();
    }
}
