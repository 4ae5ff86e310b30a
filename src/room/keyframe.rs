//! Keyframe policy: how often a publisher may be asked for a keyframe, and how to recognise
//! the first packet of one in a forwarded stream.
//!
//! Both are pure: the throttle takes the time as an argument (milliseconds on the producer's
//! clock), so tests drive it with exact times.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Keyframe requests to one publisher are relayed at most this often: every subscriber that
/// joins or falls behind asks, and a burst of requests would make the encoder send a burst
/// of large keyframes.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// A leg that asked for a keyframe, has room in its queue again, and still has none after
/// this long asks once more (the request or the keyframe may have been lost).
pub const KEYFRAME_RETRY: Duration = Duration::from_millis(1_500);

/// Lets one request through per interval. Lock-free: the producer's reader and subscriber
/// legs may ask at the same time; exactly one of them wins.
#[derive(Debug)]
pub struct KeyframeThrottle {
    interval_ms: u64,
    /// Time of the last request let through, or `u64::MAX` for none yet.
    last_ms: AtomicU64,
}

impl KeyframeThrottle {
    /// A throttle letting one request through per `interval`.
    pub fn new(interval: Duration) -> Self {
        KeyframeThrottle {
            interval_ms: interval.as_millis() as u64,
            last_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether a request made at `now_ms` may go to the publisher (and if so, records it).
    pub fn try_acquire(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != u64::MAX && now_ms.saturating_sub(last) < self.interval_ms {
            return false;
        }
        self.last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// The codecs whose keyframes the SFU can recognise in RTP payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// VP9 (RFC 9628).
    Vp9,
    /// H.264 (RFC 6184).
    H264,
    /// Anything else: every packet counts as a possible resynchronisation point.
    Other,
}

impl VideoCodec {
    /// From an SDP mime type such as `video/VP8`.
    pub fn from_mime(mime: &str) -> VideoCodec {
        let sub = mime.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
        match sub.as_str() {
            "vp8" => VideoCodec::Vp8,
            "vp9" => VideoCodec::Vp9,
            "h264" => VideoCodec::H264,
            _ => VideoCodec::Other,
        }
    }

    /// Whether this RTP payload starts a keyframe (a subscriber waiting for one may resume
    /// here). Malformed payloads are not keyframes.
    pub fn starts_keyframe(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => vp8_starts_keyframe(payload),
            VideoCodec::Vp9 => vp9_starts_keyframe(payload),
            VideoCodec::H264 => h264_has_idr(payload),
            VideoCodec::Other => true,
        }
    }
}

/// VP8 payload descriptor, then (at the start of partition 0) the frame tag whose lowest bit
/// is 0 for a key frame.
fn vp8_starts_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let (x, s, pid) = (b0 & 0x80 != 0, b0 & 0x10 != 0, b0 & 0x07);
    if !s || pid != 0 {
        return false;
    }
    let mut i = 1;
    if x {
        let Some(&ext) = p.get(i) else { return false };
        i += 1;
        if ext & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    p.get(i).is_some_and(|tag| tag & 0x01 == 0)
}

/// VP9 payload descriptor: B (start of frame) set and P (inter-picture predicted) clear.
fn vp9_starts_keyframe(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b & 0x08 != 0 && b & 0x40 == 0)
}

/// An IDR slice (NAL type 5), or SPS (7) that encoders send before one, alone, in a STAP-A or
/// at the start of an FU-A.
fn h264_has_idr(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let is_key = |t: u8| t == 5 || t == 7;
    match b0 & 0x1f {
        24 => {
            // STAP-A: 16-bit size, then a NAL unit, repeated.
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if is_key(p[i + 2] & 0x1f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        t => is_key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_interval_on_an_injected_clock() {
        let t = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(t.try_acquire(0), "the first request goes through");
        assert!(!t.try_acquire(0));
        assert!(!t.try_acquire(499));
        assert!(t.try_acquire(500), "exactly one interval later");
        assert!(!t.try_acquire(999));
        assert!(t.try_acquire(5_000));
    }

    #[test]
    fn vp8_key_and_delta_frames() {
        // S=1, PID=0, no extension; frame tag bit 0 = 0 (key) / 1 (delta).
        assert!(VideoCodec::Vp8.starts_keyframe(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        assert!(!VideoCodec::Vp8.starts_keyframe(&[0x10, 0x01, 0x00]));
        // Continuation of a partition (S=0) is never a start.
        assert!(!VideoCodec::Vp8.starts_keyframe(&[0x00, 0x00]));
        // X=1 with a 15-bit PictureID (I, M set): descriptor is 4 bytes.
        assert!(VideoCodec::Vp8.starts_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        assert!(!VideoCodec::Vp8.starts_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x01]));
        assert!(!VideoCodec::Vp8.starts_keyframe(&[0x90, 0x80]), "truncated");
        assert!(!VideoCodec::Vp8.starts_keyframe(&[]));
    }

    #[test]
    fn h264_idr_single_stap_and_fu() {
        assert!(VideoCodec::H264.starts_keyframe(&[0x65, 0x88]));
        assert!(!VideoCodec::H264.starts_keyframe(&[0x41, 0x9a]));
        // STAP-A with SPS then PPS.
        assert!(
            VideoCodec::H264.starts_keyframe(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68])
        );
        // FU-A start of an IDR, and its middle part.
        assert!(VideoCodec::H264.starts_keyframe(&[0x7c, 0x85]));
        assert!(!VideoCodec::H264.starts_keyframe(&[0x7c, 0x05]));
    }

    #[test]
    fn codec_from_mime() {
        assert_eq!(VideoCodec::from_mime("video/VP8"), VideoCodec::Vp8);
        assert_eq!(VideoCodec::from_mime("video/h264"), VideoCodec::H264);
        assert_eq!(VideoCodec::from_mime("video/AV1"), VideoCodec::Other);
    }
}
