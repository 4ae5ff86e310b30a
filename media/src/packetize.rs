//! The agent's outgoing audio: 48 kHz PCM in, Opus RTP packets out, one per 20 ms.
//!
//! Timestamps advance by 960 per frame whether or not a packet is sent, so a pause (the agent
//! silent between sentences) sends nothing and the next packet's timestamp says how long the
//! pause was; that packet carries the marker bit (the start of a talkspurt, RFC 3551 §4.1).
//! Sequence numbers count packets actually sent. [`Pacer`] says when each frame is due on an
//! injected clock, so sending neither drifts nor bursts.

use bytes::Bytes;

/// Samples in one 20 ms frame at 48 kHz.
pub const FRAME: usize = 960;

/// One RTP packet's worth (the header fields the sender sets, and the Opus payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPacket {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp (48 kHz).
    pub timestamp: u32,
    /// First packet after a pause.
    pub marker: bool,
    /// Opus payload.
    pub payload: Bytes,
}

/// Why an encoder could not be made or used.
#[derive(Debug, thiserror::Error)]
#[error("Opus encoder: {0}")]
pub struct EncodeError(String);

/// Encodes a mono 48 kHz stream into 20 ms Opus RTP packets.
pub struct OpusPacketizer {
    encoder: opus::Encoder,
    seq: u16,
    timestamp: u32,
    talking: bool,
    pending: Vec<i16>,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpusPacketizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusPacketizer")
            .field("seq", &self.seq)
            .field("timestamp", &self.timestamp)
            .field("talking", &self.talking)
            .finish_non_exhaustive()
    }
}

impl OpusPacketizer {
    /// A packetizer starting at `seq` and `timestamp` (pick both at random per track, as RTP
    /// asks), encoding voice at `bitrate` bits per second.
    pub fn new(seq: u16, timestamp: u32, bitrate: i32) -> Result<Self, EncodeError> {
        let err = |e: opus::Error| EncodeError(e.to_string());
        let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .map_err(err)?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(bitrate))
            .map_err(err)?;
        Ok(Self {
            encoder,
            seq,
            timestamp,
            talking: false,
            pending: Vec::with_capacity(FRAME),
            out: vec![0; 1_500],
        })
    }

    /// Takes speech samples (any length) and returns the packets of every complete frame.
    pub fn push(&mut self, pcm: &[i16]) -> Result<Vec<AudioPacket>, EncodeError> {
        let mut packets = Vec::with_capacity((self.pending.len() + pcm.len()) / FRAME);
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (FRAME - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == FRAME {
                packets.push(self.encode_pending()?);
            }
        }
        Ok(packets)
    }

    /// Ends a stretch of speech: a partial frame is padded with silence and sent.
    pub fn flush(&mut self) -> Result<Option<AudioPacket>, EncodeError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        self.pending.resize(FRAME, 0);
        self.encode_pending().map(Some)
    }

    /// `frames` frames of silence: nothing is sent, the clock moves on, and the next packet
    /// starts a talkspurt.
    pub fn pause(&mut self, frames: u32) {
        self.timestamp = self.timestamp.wrapping_add(frames * FRAME as u32);
        self.talking = false;
        // Opus carries state across frames; after a gap the next frame starts fresh.
        let _ = self.encoder.reset_state();
    }

    /// The timestamp the next packet will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.timestamp
    }

    fn encode_pending(&mut self) -> Result<AudioPacket, EncodeError> {
        let n = self
            .encoder
            .encode(&self.pending, &mut self.out)
            .map_err(|e| EncodeError(e.to_string()))?;
        self.pending.clear();
        let packet = AudioPacket {
            seq: self.seq,
            timestamp: self.timestamp,
            marker: !self.talking,
            payload: Bytes::copy_from_slice(&self.out[..n]),
        };
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
        self.talking = true;
        Ok(packet)
    }
}

/// When the next frame is due: frame `n` at `start + 20 ms × n`, on the caller's clock (ms).
/// Computed from the start, never by adding up sleeps, so a late wake-up does not push every
/// later frame back.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start_ms: u64,
    sent: u64,
}

impl Pacer {
    /// Frame 0 is due at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self { start_ms, sent: 0 }
    }

    /// When the next frame is due.
    pub fn due_ms(&self) -> u64 {
        self.start_ms + 20 * self.sent
    }

    /// How many frames are due at `now_ms` (0 if early); marks them as sent.
    pub fn take_due(&mut self, now_ms: u64) -> u64 {
        if now_ms < self.due_ms() {
            return 0;
        }
        let due = (now_ms - self.start_ms) / 20 + 1 - self.sent;
        self.sent += due;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::OpusTrackDecoder;

    fn tone(ms: usize) -> Vec<i16> {
        (0..ms * 48)
            .map(|n| {
                ((n as f32 * 2.0 * std::f32::consts::PI * 440.0 / 48_000.0).sin() * 12_000.0) as i16
            })
            .collect()
    }

    #[test]
    fn frames_timestamps_sequence_and_markers() {
        let mut p = OpusPacketizer::new(65_534, u32::MAX - 959, 32_000).unwrap();
        let first = p.push(&tone(1_000)).unwrap();
        assert_eq!(first.len(), 50);
        assert!(first[0].marker && first[1..].iter().all(|x| !x.marker));
        assert_eq!(first[0].timestamp, u32::MAX - 959);
        assert_eq!(first[1].timestamp, 0, "timestamps wrap");
        assert_eq!(first[2].seq, 0, "sequence numbers wrap");
        for w in first.windows(2) {
            assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp), 960);
            assert_eq!(w[1].seq.wrapping_sub(w[0].seq), 1);
        }
        // Half a second of silence sends nothing; the next talkspurt's timestamp shows the gap.
        p.pause(25);
        let next = p.push(&tone(100)).unwrap();
        assert_eq!(next.len(), 5);
        assert!(next[0].marker);
        assert_eq!(
            next[0].timestamp.wrapping_sub(first[49].timestamp),
            960 * 26
        );
        assert_eq!(next[0].seq.wrapping_sub(first[49].seq), 1);
        // A partial frame waits, and flush sends it padded.
        assert!(p.push(&tone(10)).unwrap().is_empty());
        let last = p.flush().unwrap().unwrap();
        assert_eq!(last.timestamp.wrapping_sub(next[4].timestamp), 960);
        assert!(p.flush().unwrap().is_none());
    }

    #[test]
    fn what_we_send_decodes_to_the_same_sound() {
        let mut p = OpusPacketizer::new(1, 1_000, 32_000).unwrap();
        let packets = p.push(&tone(500)).unwrap();
        let mut d = OpusTrackDecoder::new(100).unwrap();
        let mut energy = 0.0f64;
        let mut samples = 0usize;
        for pk in &packets[5..] {
            let out = d.decode(pk.timestamp, &pk.payload, 0).unwrap();
            energy += out.pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
            samples += out.pcm.len();
        }
        let rms = (energy / samples as f64).sqrt();
        // 12000 / 32768 peak sine: rms ~0.26.
        assert!((0.2..0.32).contains(&rms), "rms {rms}");
    }

    #[test]
    fn the_pacer_neither_drifts_nor_bursts() {
        let mut pacer = Pacer::new(1_000);
        assert_eq!(pacer.take_due(999), 0);
        assert_eq!(pacer.take_due(1_000), 1);
        assert_eq!(pacer.take_due(1_005), 0);
        assert_eq!(pacer.due_ms(), 1_020);
        // A wake-up 65 ms late owes the frames due at 1020, 1040 and 1060, no more.
        assert_eq!(pacer.take_due(1_065), 3);
        assert_eq!(pacer.due_ms(), 1_080);
        // Ten minutes of exact wake-ups: frame count matches the clock.
        let mut total = 4;
        for t in (1_080..601_000).step_by(20) {
            total += pacer.take_due(t);
        }
        assert_eq!(total, (601_000 - 1_000) / 20);
    }
}
