//! Opus to 48 kHz mono f32, with loss concealment driven by RTP timestamps.
//!
//! The decoder follows the stream's RTP timestamps. A short hole (lost packets) is filled by
//! Opus packet-loss concealment, using the in-band FEC of the packet after the hole for its last
//! frame when the sender included it. A long hole (DTX, a muted or stalled sender) is not
//! synthesised: it is reported as skipped time so the caller can move its clock on instead.

use opus::{Channels, Decoder};

/// Opus decodes at 48 kHz in WebRTC.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one millisecond at 48 kHz.
pub const SAMPLES_PER_MS: u32 = SAMPLE_RATE / 1000;
/// The longest Opus packet (120 ms), in samples at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 120 * SAMPLES_PER_MS as usize;
/// Concealment works in multiples of 2.5 ms, Opus's smallest frame.
const CONCEAL_STEP: u32 = 120;

/// Why a packet could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// libopus refused the decoder settings.
    #[error("cannot create the Opus decoder: {0}")]
    Create(opus::Error),
    /// The payload is not a valid Opus packet; it will be concealed as lost.
    #[error("bad Opus packet: {0}")]
    Packet(opus::Error),
    /// The payload is empty; it will be concealed as lost.
    #[error("empty Opus payload")]
    Empty,
}

/// One packet's worth of decoded audio.
#[derive(Debug, PartialEq)]
pub struct Decoded<'a> {
    /// Samples (48 kHz) of a hole too long to conceal, just before `pcm`; nothing was made up
    /// for them.
    pub skipped: u32,
    /// How many of the leading samples of `pcm` are concealment rather than received audio.
    pub concealed: u32,
    /// Concealment (if any) followed by the packet's audio, 48 kHz mono in -1.0..=1.0.
    pub pcm: &'a [f32],
}

/// Decodes one Opus stream (one RTP SSRC) to 48 kHz mono.
pub struct OpusTrackDecoder {
    decoder: Decoder,
    pcm: Vec<f32>,
    /// RTP timestamp the next packet should carry if nothing is lost.
    next_ts: Option<u32>,
    max_conceal: u32,
}

impl std::fmt::Debug for OpusTrackDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusTrackDecoder")
            .field("next_ts", &self.next_ts)
            .field("max_conceal", &self.max_conceal)
            .finish_non_exhaustive()
    }
}

impl OpusTrackDecoder {
    /// A decoder that conceals holes up to `max_conceal_ms` (capped at 120 ms) and skips longer
    /// ones.
    pub fn new(max_conceal_ms: u32) -> Result<Self, DecodeError> {
        let decoder = Decoder::new(SAMPLE_RATE, Channels::Mono).map_err(DecodeError::Create)?;
        let max_conceal = (max_conceal_ms.min(120) * SAMPLES_PER_MS) / CONCEAL_STEP * CONCEAL_STEP;
        Ok(Self {
            decoder,
            pcm: vec![0.0; max_conceal as usize + MAX_PACKET_SAMPLES],
            next_ts: None,
            max_conceal,
        })
    }

    /// Decodes the packet with RTP timestamp `ts`, concealing any hole since the last one.
    ///
    /// `lost_before` is the reorder buffer's count of missing sequence numbers right before this
    /// packet; the hole's length itself comes from the timestamps. A bad payload is an error,
    /// and its time is concealed when the next good packet arrives.
    pub fn decode(
        &mut self,
        ts: u32,
        payload: &[u8],
        lost_before: u16,
    ) -> Result<Decoded<'_>, DecodeError> {
        let hole = match self.next_ts {
            Some(expected) => ts.wrapping_sub(expected) as i32,
            None => 0,
        };
        let (skipped, conceal) = if hole <= 0 {
            // In step, or a timestamp jump backwards (sender restart): start afresh from here.
            (0, 0)
        } else if hole as u32 > self.max_conceal {
            (hole as u32, 0)
        } else if lost_before == 0 && (hole as u32) < CONCEAL_STEP {
            // Timestamp jitter smaller than any Opus frame: not a loss.
            (0, 0)
        } else {
            (0, hole as u32 / CONCEAL_STEP * CONCEAL_STEP)
        };

        let packet_samples = if payload.is_empty() {
            Err(DecodeError::Empty)
        } else {
            self.decoder
                .get_nb_samples(payload)
                .map_err(DecodeError::Packet)
        };
        let mut filled = 0usize;
        if conceal > 0 {
            // The packet after a hole may carry FEC for the hole's last frame.
            let fec = packet_samples
                .as_ref()
                .map_or(0, |&n| (n as u32).min(conceal));
            filled += self.conceal(0, conceal - fec, &[])?;
            filled += self.conceal(filled, fec, payload)?;
        }
        let decoded = packet_samples.and_then(|_| {
            self.decoder
                .decode_float(payload, &mut self.pcm[filled..], false)
                .map_err(DecodeError::Packet)
        });
        match decoded {
            Ok(n) => {
                self.next_ts = Some(ts.wrapping_add(n as u32));
                Ok(Decoded {
                    skipped,
                    concealed: filled as u32,
                    pcm: &self.pcm[..filled + n],
                })
            }
            Err(e) => {
                // The next packet's hole then covers this one too, and gets concealed.
                self.next_ts = Some(ts);
                Err(e)
            }
        }
    }

    /// Forgets the stream position (the next packet starts a new timeline).
    pub fn reset(&mut self) {
        self.next_ts = None;
        let _ = self.decoder.reset_state();
    }

    /// Writes `samples` of concealment at `at`; with a payload, from its FEC data if present.
    fn conceal(&mut self, at: usize, samples: u32, payload: &[u8]) -> Result<usize, DecodeError> {
        if samples == 0 {
            return Ok(0);
        }
        let out = &mut self.pcm[at..at + samples as usize];
        let fec = !payload.is_empty();
        match self.decoder.decode_float(payload, out, fec) {
            Ok(n) => Ok(n),
            // A packet too damaged for FEC still leaves the hole to fill: fall back to PLC.
            Err(_) if fec => self
                .decoder
                .decode_float(&[], out, false)
                .map_err(DecodeError::Packet),
            Err(e) => Err(DecodeError::Packet(e)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opus::{Application, Encoder};

    /// Opus packets of a 440 Hz tone, 20 ms each.
    pub(crate) fn tone_packets(count: usize, fec: bool) -> Vec<Vec<u8>> {
        let mut enc = Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip).unwrap();
        if fec {
            enc.set_inband_fec(true).unwrap();
            enc.set_packet_loss_perc(20).unwrap();
        }
        (0..count)
            .map(|i| {
                let frame: Vec<f32> = (0..960)
                    .map(|n| {
                        let t = (i * 960 + n) as f32 / SAMPLE_RATE as f32;
                        0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                    })
                    .collect();
                enc.encode_vec_float(&frame, 4000).unwrap()
            })
            .collect()
    }

    fn rms(pcm: &[f32]) -> f32 {
        (pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len().max(1) as f32).sqrt()
    }

    #[test]
    fn a_tone_decodes_to_20_ms_frames_of_the_right_level() {
        let mut dec = OpusTrackDecoder::new(100).unwrap();
        let packets = tone_packets(20, false);
        let mut last_rms = 0.0;
        for (i, p) in packets.iter().enumerate() {
            let out = dec.decode(1000 + i as u32 * 960, p, 0).unwrap();
            assert_eq!((out.skipped, out.concealed, out.pcm.len()), (0, 0, 960));
            last_rms = rms(out.pcm);
        }
        // A 0.3 amplitude sine has RMS 0.212.
        assert!((last_rms - 0.212).abs() < 0.03, "rms {last_rms}");
    }

    #[test]
    fn a_lost_packet_is_concealed_with_the_right_length() {
        let mut dec = OpusTrackDecoder::new(100).unwrap();
        let packets = tone_packets(10, true);
        for i in 0..5u32 {
            dec.decode(i * 960, &packets[i as usize], 0).unwrap();
        }
        // Packets 5 and 6 lost.
        let out = dec.decode(7 * 960, &packets[7], 2).unwrap();
        assert_eq!((out.skipped, out.concealed, out.pcm.len()), (0, 1920, 2880));
        assert!(
            rms(&out.pcm[..1920]) > 0.05,
            "concealment continues the tone"
        );
        let out = dec.decode(8 * 960, &packets[8], 0).unwrap();
        assert_eq!(out.pcm.len(), 960);
    }

    #[test]
    fn a_long_hole_is_skipped_not_synthesised() {
        let mut dec = OpusTrackDecoder::new(100).unwrap();
        let packets = tone_packets(3, false);
        dec.decode(u32::MAX - 959, &packets[0], 0).unwrap();
        // Timestamps wrap, then one second of nothing (DTX or a stalled sender).
        let out = dec.decode(48_000, &packets[1], 0).unwrap();
        assert_eq!(
            (out.skipped, out.concealed, out.pcm.len()),
            (48_000, 0, 960)
        );
    }

    #[test]
    fn a_bad_payload_is_an_error_and_the_stream_goes_on() {
        let mut dec = OpusTrackDecoder::new(100).unwrap();
        let packets = tone_packets(3, false);
        dec.decode(0, &packets[0], 0).unwrap();
        assert!(dec.decode(960, &[], 0).is_err());
        let out = dec.decode(1920, &packets[2], 0).unwrap();
        assert_eq!((out.concealed, out.pcm.len()), (960, 1920));
    }

    #[test]
    fn forty_ms_packets_decode_whole() {
        let mut enc = Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip).unwrap();
        let p = enc.encode_vec_float(&vec![0.1; 1920], 4000).unwrap();
        let mut dec = OpusTrackDecoder::new(100).unwrap();
        assert_eq!(dec.decode(0, &p, 0).unwrap().pcm.len(), 1920);
        assert_eq!(dec.decode(1920, &p, 0).unwrap().pcm.len(), 1920);
    }
}
