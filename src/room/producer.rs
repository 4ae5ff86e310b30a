//! A producer: one published track, fed packets by whoever owns the source and fanned out to
//! its sinks.
//!
//! The producer knows nothing of where packets come from: the WebRTC edge's reader feeds it
//! what a browser sends; a server-side member (an agent's voice) feeds it packets it made
//! itself. Keyframe requests go the other way through [`Producer::keyframe_requested`],
//! which the source's owner awaits and answers (for WebRTC, by sending a PLI).

use super::fanout::{Fanout, FanoutResult, SinkCounts, SinkHandle, SinkOptions};
use super::keyframe::{KEYFRAME_REQUEST_INTERVAL, KeyframeThrottle, VideoCodec};
use conclave_signaling::{ParticipantId, TrackId, TrackInfo, TrackKind};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{Notify, mpsc};

/// What a new producer is.
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    /// Track id shown to subscribers.
    pub id: TrackId,
    /// Who publishes it.
    pub publisher: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// The codec its packets carry (subscriber legs negotiate the same).
    pub codec: RTCRtpCodec,
    /// Whether the room's transcription may listen (an agent's own voice opts out).
    pub transcribe: bool,
}

/// A stream published on the media plane: the publisher's transport and the stream's SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneSource {
    /// The publisher's transport key in the plane's worker.
    pub key: u64,
    /// The SSRC the publisher sends.
    pub ssrc: u32,
}

/// Packet counts of one producer (or of many, summed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProducerCounts {
    /// Packets fed in by the source.
    pub packets_in: u64,
    /// Keyframe requests let through to the publisher.
    pub keyframe_requests: u64,
    /// What its sinks did with them.
    pub sinks: SinkCounts,
}

impl std::ops::AddAssign for ProducerCounts {
    fn add_assign(&mut self, o: ProducerCounts) {
        self.packets_in += o.packets_in;
        self.keyframe_requests += o.keyframe_requests;
        self.sinks += o.sinks;
    }
}

/// Totals of producers that no longer exist, so that summed counters never go down.
#[derive(Debug, Default)]
pub struct RetiredCounts(std::sync::Mutex<ProducerCounts>);

impl RetiredCounts {
    /// The totals so far.
    pub fn get(&self) -> ProducerCounts {
        *self.0.lock().expect("retired counts")
    }

    fn add(&self, c: ProducerCounts) {
        *self.0.lock().expect("retired counts") += c;
    }
}

/// One published track.
pub struct Producer {
    /// Track id shown to subscribers.
    pub id: TrackId,
    /// Who publishes it.
    pub publisher: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// The codec the publisher negotiated.
    pub codec: RTCRtpCodec,
    /// Whether transcription may listen to it.
    pub transcribe: bool,
    /// Where the media plane forwards it from, when its publisher is on the plane (its
    /// packets then reach plane subscribers inside the plane's worker, not through `fanout`).
    pub plane: Option<PlaneSource>,
    /// For a track published outside the plane (an agent's voice): the plane's local source
    /// that carries it to plane subscribers, made by the first of them.
    pub plane_bridge: std::sync::OnceLock<PlaneSource>,
    video: VideoCodec,
    fanout: Fanout,
    muted: AtomicBool,
    throttle: KeyframeThrottle,
    /// A request the throttle held back, sent when its interval is over.
    keyframe_deferred: AtomicBool,
    keyframe_wanted: Notify,
    keyframe_requests: AtomicU64,
    packets_in: AtomicU64,
    /// The room's opening: arrival times and the keyframe throttle count from it.
    epoch: Instant,
    retired: Arc<RetiredCounts>,
    /// Its counts were handed to `retired` when it left the room (legs may still hold it).
    handed_over: AtomicBool,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Producer {
    /// A producer with no sinks yet; times count from `epoch`. Its counts are added to
    /// `retired` when it is dropped.
    pub fn new(spec: ProducerSpec, epoch: Instant, retired: Arc<RetiredCounts>) -> Self {
        let video = match spec.kind {
            TrackKind::Video => VideoCodec::from_mime(&spec.codec.mime_type),
            TrackKind::Audio => VideoCodec::Other,
        };
        Producer {
            id: spec.id,
            publisher: spec.publisher,
            kind: spec.kind,
            codec: spec.codec,
            transcribe: spec.transcribe,
            plane: None,
            plane_bridge: std::sync::OnceLock::new(),
            video,
            fanout: Fanout::new(),
            muted: AtomicBool::new(false),
            throttle: KeyframeThrottle::new(KEYFRAME_REQUEST_INTERVAL),
            keyframe_deferred: AtomicBool::new(false),
            keyframe_wanted: Notify::new(),
            keyframe_requests: AtomicU64::new(0),
            packets_in: AtomicU64::new(0),
            epoch,
            retired,
            handed_over: AtomicBool::new(false),
        }
    }

    /// The track left its room: its counts join the retired totals now, so sums taken at
    /// scrape time never dip while subscriber legs still hold it.
    pub fn retire(&self) {
        if !self.handed_over.swap(true, Ordering::SeqCst) {
            self.retired.add(self.counts());
        }
    }

    /// What subscribers are told about this track.
    pub fn info(&self) -> TrackInfo {
        TrackInfo {
            id: self.id.clone(),
            kind: self.kind,
            codec: self.codec.mime_type.to_ascii_lowercase(),
            muted: self.muted.load(Ordering::Relaxed),
        }
    }

    /// Records the publisher's mute state.
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    /// Milliseconds since the room opened.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The room's opening on the monotonic clock.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Adds a sink; dropping the returned handle removes it.
    pub fn add_sink(&self, options: SinkOptions) -> (SinkHandle, mpsc::Receiver<rtp::Packet>) {
        self.fanout.add(options)
    }

    /// Whether `payload` starts a keyframe of this track's codec.
    pub fn starts_keyframe(&self, payload: &[u8]) -> bool {
        self.video.starts_keyframe(payload)
    }

    /// Number of sinks.
    pub fn sink_count(&self) -> usize {
        self.fanout.len()
    }

    /// Feeds one packet from the source to every sink. Never waits; a sink that needs a
    /// keyframe raises a request for the source's owner.
    pub fn deliver(&self, packet: rtp::Packet) -> FanoutResult {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        let r = self.fanout.forward(packet, self.video, || self.now_ms());
        if r.want_keyframe || self.keyframe_deferred.load(Ordering::Relaxed) {
            self.request_keyframe();
        }
        r
    }

    /// Asks the publisher for a keyframe, at most once per [`KEYFRAME_REQUEST_INTERVAL`]; a
    /// request inside the interval is deferred to its end (trailing edge).
    /// Never waits: the request is left for the source's owner (see
    /// [`Producer::keyframe_requested`]). Returns whether it went through the throttle.
    pub fn request_keyframe(&self) -> bool {
        if self.kind != TrackKind::Video {
            return false;
        }
        if !self.throttle.try_acquire(self.now_ms()) {
            // Held back, not lost: the next packet after the interval sends it, so a
            // subscriber that joins just after another waits one interval, not for the
            // publisher's next periodic keyframe.
            self.keyframe_deferred.store(true, Ordering::Relaxed);
            return false;
        }
        self.keyframe_deferred.store(false, Ordering::Relaxed);
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        self.keyframe_wanted.notify_one();
        true
    }

    /// Completes when a keyframe should be asked of the publisher (requests coalesce).
    pub async fn keyframe_requested(&self) {
        self.keyframe_wanted.notified().await
    }

    /// Counts so far.
    pub fn counts(&self) -> ProducerCounts {
        ProducerCounts {
            packets_in: self.packets_in.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            sinks: self.fanout.counts(),
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.retire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video() -> Producer {
        Producer::new(
            ProducerSpec {
                id: TrackId("TR_v".into()),
                publisher: ParticipantId("PA_v".into()),
                kind: TrackKind::Video,
                codec: RTCRtpCodec {
                    mime_type: "video/VP8".into(),
                    clock_rate: 90_000,
                    ..Default::default()
                },
                transcribe: false,
            },
            Instant::now(),
            Arc::new(RetiredCounts::default()),
        )
    }

    fn packet() -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0x10, 0x01, 0, 0]),
        }
    }

    #[test]
    fn a_keyframe_request_inside_the_interval_is_sent_when_it_ends() {
        let p = video();
        assert!(p.request_keyframe(), "the first goes through");
        assert!(!p.request_keyframe(), "the second is held back");
        p.deliver(packet());
        assert_eq!(p.counts().keyframe_requests, 1, "still inside the interval");
        std::thread::sleep(KEYFRAME_REQUEST_INTERVAL + std::time::Duration::from_millis(20));
        p.deliver(packet());
        assert_eq!(
            p.counts().keyframe_requests,
            2,
            "sent by the first packet after it"
        );
        p.deliver(packet());
        assert_eq!(p.counts().keyframe_requests, 2, "and only once");
    }
}
