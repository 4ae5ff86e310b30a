//! One outgoing leg: a producer's packets, taken from the leg's sink queue, rewritten for one
//! subscriber's track (its SSRC and negotiated payload type) and written to its connection.

use crate::room::{Producer, SinkHandle};
use conclave_signaling::TrackKind;
use rtc::rtp;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::rtp_transceiver::RtpSender;

/// Rewrites a packet for the outgoing leg: that leg's SSRC and negotiated payload type.
/// Sequence numbers and timestamps pass through: one outgoing track carries one producer for
/// its whole life, so they stay continuous.
#[inline]
pub fn rewrite_for_leg(packet: &mut rtp::Packet, ssrc: u32, payload_type: u8) {
    packet.header.ssrc = ssrc;
    packet.header.payload_type = payload_type;
}

/// A subscriber's leg for one producer.
pub struct Leg {
    /// The producer forwarded.
    pub producer: Arc<Producer>,
    /// The leg's sink on it; dropping the leg removes the sink.
    pub sink: SinkHandle,
    /// The subscriber's outgoing track.
    pub track: Arc<TrackLocalStaticRTP>,
    /// Its RTP sender (for the negotiated payload type).
    pub sender: Arc<dyn RtpSender>,
    /// The SSRC the subscriber sees.
    pub ssrc: u32,
    /// Whether the subscriber's connection is up (writing before DTLS fails).
    pub connected: watch::Receiver<bool>,
    /// Bumped after each completed negotiation, so payload types are re-read.
    pub negotiated: watch::Receiver<u64>,
}

impl Leg {
    /// Forwards until the sink's queue ends (the producer went away or the leg was dropped).
    pub async fn run(mut self, mut rx: mpsc::Receiver<rtp::Packet>) {
        let video = self.producer.kind == TrackKind::Video;
        let mut payload_type: Option<u8> = None;
        let mut started = false;
        let mut feedback_open = false;
        let mut watching_connection = video;
        loop {
            tokio::select! {
                biased;
                pkt = rx.recv() => {
                    let Some(mut pkt) = pkt else { break };
                    if !*self.connected.borrow() {
                        // Dropped, as a late joiner would miss it anyway; video then resumes
                        // at a keyframe rather than mid-picture (asked for on connecting).
                        self.sink.wait_for_keyframe(self.producer.now_ms());
                        continue;
                    }
                    if payload_type.is_none() || self.negotiated.has_changed().unwrap_or(false) {
                        self.negotiated.borrow_and_update();
                        payload_type = self.negotiated_payload_type().await;
                    }
                    let Some(pt) = payload_type else { continue };
                    if !started {
                        started = true;
                        feedback_open = true;
                        // A new video subscriber can show nothing until a keyframe: unless
                        // this packet starts one (the gate just opened on it), wait for one.
                        if video && !self.producer.starts_keyframe(&pkt.payload) {
                            self.sink.wait_for_keyframe(self.producer.now_ms());
                            self.producer.request_keyframe();
                            continue;
                        }
                    }
                    rewrite_for_leg(&mut pkt, self.ssrc, pt);
                    if self.track.write_rtp(pkt).await.is_ok() {
                        self.sink.written(1);
                    }
                }
                changed = self.connected.changed(), if watching_connection => {
                    // The moment media can flow, ask for the keyframe a gated video leg
                    // waits for, instead of waiting for the publisher's next periodic one.
                    match changed {
                        Ok(()) if *self.connected.borrow() => {
                            if self.sink.is_waiting_for_keyframe() {
                                self.producer.request_keyframe();
                            }
                            watching_connection = false;
                        }
                        Ok(()) => {}
                        Err(_) => watching_connection = false,
                    }
                }
                event = self.track.poll(), if feedback_open => {
                    match event {
                        // The subscriber asks for a keyframe (PLI/FIR).
                        Some(_) => {
                            self.producer.request_keyframe();
                        }
                        None => feedback_open = false,
                    }
                }
            }
        }
    }

    async fn negotiated_payload_type(&self) -> Option<u8> {
        let params = self.sender.get_parameters().await.ok()?;
        let mime = &self.producer.codec.mime_type;
        params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .map(|c| c.payload_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_sets_the_leg_ssrc_and_payload_type() {
        let mut p = rtp::Packet {
            header: rtp::header::Header {
                ssrc: 42,
                payload_type: 111,
                sequence_number: 3,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"x"),
        };
        rewrite_for_leg(&mut p, 999, 96);
        let h = &p.header;
        assert_eq!((h.ssrc, h.payload_type, h.sequence_number), (999, 96, 3));
    }
}
