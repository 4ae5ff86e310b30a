//! A producer: one incoming track, read once and fanned out to its sinks.

use super::forward::Fanout;
use crate::metrics::Metrics;
use conclave_media::pipeline::{PipelineInput, RtpAudio};
use conclave_signaling::{ParticipantId, TrackId, TrackInfo, TrackKind};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// Keyframe requests to one publisher are relayed at most this often: every subscriber that
/// joins or loses packets asks, and a burst of requests would make the encoder send a burst of
/// large keyframes.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

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
    /// Subscribers' queues (and, later, taps such as the audio pipeline).
    pub fanout: Fanout,
    remote: Arc<dyn TrackRemote>,
    media_ssrc: u32,
    muted: AtomicBool,
    last_keyframe_request_ms: AtomicU64,
    metrics: Arc<Metrics>,
    /// The audio pipeline's input, for audio tracks when transcription is on. Pushing never
    /// waits: a full queue drops the packet for the pipeline only, never for subscribers.
    tap: Option<PipelineInput>,
    /// The room's opening: the pipeline's arrival times and the keyframe throttle count
    /// from it.
    epoch: Instant,
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
    /// Wraps a remote track that has delivered its SSRC and codec.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: TrackId,
        publisher: ParticipantId,
        kind: TrackKind,
        codec: RTCRtpCodec,
        remote: Arc<dyn TrackRemote>,
        media_ssrc: u32,
        metrics: Arc<Metrics>,
        tap: Option<PipelineInput>,
        epoch: Instant,
    ) -> Self {
        Producer {
            id,
            publisher,
            kind,
            codec,
            fanout: Fanout::new(),
            remote,
            media_ssrc,
            muted: AtomicBool::new(false),
            last_keyframe_request_ms: AtomicU64::new(u64::MAX),
            metrics,
            tap,
            epoch,
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

    /// Asks the publisher for a keyframe, at most once per [`KEYFRAME_REQUEST_INTERVAL`].
    pub async fn request_keyframe(&self) {
        if self.kind != TrackKind::Video {
            return;
        }
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_keyframe_request_ms.load(Ordering::Relaxed);
        if last != u64::MAX
            && now_ms.saturating_sub(last) < KEYFRAME_REQUEST_INTERVAL.as_millis() as u64
        {
            return;
        }
        if self
            .last_keyframe_request_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another subscriber asked at the same moment
        }
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: self.media_ssrc,
        };
        match self.remote.write_rtcp(vec![Box::new(pli)]).await {
            Ok(()) => Metrics::add(&self.metrics.keyframe_requests, 1),
            Err(e) => tracing::debug!(track = %self.id, error = %e, "keyframe request not sent"),
        }
    }

    /// Reads the publisher's packets until the track ends, fanning each out. Returns when the
    /// track has ended or the connection closed.
    pub async fn run_reader(self: Arc<Self>) {
        while let Some(event) = self.remote.poll().await {
            match event {
                TrackRemoteEvent::OnRtpPacket(packet) => {
                    Metrics::add(&self.metrics.packets_in, 1);
                    if let Some(tap) = &self.tap {
                        // Muted tracks still send (comfort noise); the VAD treats it as silence.
                        let _ = tap.try_push(RtpAudio {
                            seq: packet.header.sequence_number,
                            timestamp: packet.header.timestamp,
                            payload: packet.payload.clone(),
                            arrival_ms: self.epoch.elapsed().as_millis() as u64,
                        });
                    }
                    let r = self.fanout.forward(packet);
                    if r.dropped > 0 {
                        Metrics::add(&self.metrics.packets_dropped, u64::from(r.dropped));
                        self.request_keyframe().await;
                    }
                }
                TrackRemoteEvent::OnEnded => break,
                _ => {}
            }
        }
    }
}
