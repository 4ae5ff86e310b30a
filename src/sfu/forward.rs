//! The forwarding hot path: one publisher's RTP packets fanned out to bounded per-subscriber
//! queues, and the per-leg header rewrite.
//!
//! Drop policy: each subscriber (or tap) has its own queue of [`SINK_QUEUE_PACKETS`] packets.
//! When it is full the *newest* packet is dropped for that sink only and counted; the
//! publisher and every other sink carry on. For video the caller then asks the publisher for
//! a keyframe so the lagging subscriber can resynchronise instead of showing a smeared picture.
//!
//! Nothing here allocates per packet: the publisher's header extensions are stripped once,
//! before fan-out, so each per-sink clone copies empty vectors and a reference-counted payload.

use rtc::rtp;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Queue depth per sink: about 5 s of Opus or 1-2 s of 30 fps video.
pub const SINK_QUEUE_PACKETS: usize = 256;

/// Identifies one consumer of a producer's packets (a subscriber's track, or a tap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SinkId(pub u64);

impl SinkId {
    /// A process-unique sink id.
    pub fn next() -> SinkId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SinkId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

struct Sink {
    id: SinkId,
    tx: mpsc::Sender<rtp::Packet>,
}

/// What happened to one packet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanoutResult {
    /// Sinks that got it.
    pub delivered: u32,
    /// Sinks whose queue was full.
    pub dropped: u32,
}

/// A producer's set of sinks. The lock is per producer, taken for reading per packet and for
/// writing only when a sink comes or goes, so it is never contended on the hot path.
#[derive(Default)]
pub struct Fanout {
    sinks: RwLock<Vec<Sink>>,
}

impl Fanout {
    /// An empty fan-out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink with a queue of `capacity` packets and returns its receiving end.
    pub fn add(&self, id: SinkId, capacity: usize) -> mpsc::Receiver<rtp::Packet> {
        let (tx, rx) = mpsc::channel(capacity);
        self.sinks
            .write()
            .expect("fanout lock")
            .push(Sink { id, tx });
        rx
    }

    /// Removes a sink; its receiver then drains and ends.
    pub fn remove(&self, id: SinkId) {
        self.sinks
            .write()
            .expect("fanout lock")
            .retain(|s| s.id != id);
    }

    /// Number of sinks.
    pub fn len(&self) -> usize {
        self.sinks.read().expect("fanout lock").len()
    }

    /// Whether there are no sinks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `packet` to every sink without waiting. Closed sinks are pruned.
    pub fn forward(&self, mut packet: rtp::Packet) -> FanoutResult {
        strip_extensions(&mut packet.header);
        let mut result = FanoutResult::default();
        let mut closed = false;
        {
            let sinks = self.sinks.read().expect("fanout lock");
            for sink in sinks.iter() {
                match sink.tx.try_send(packet.clone()) {
                    Ok(()) => result.delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => result.dropped += 1,
                    Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                }
            }
        }
        if closed {
            self.sinks
                .write()
                .expect("fanout lock")
                .retain(|s| !s.tx.is_closed());
        }
        result
    }
}

/// Removes the publisher's header extensions: each leg negotiates its own extension ids, so
/// forwarding them unchanged would make the subscriber misread them.
pub fn strip_extensions(header: &mut rtp::header::Header) {
    if header.extension {
        header.extension = false;
        header.extension_profile = 0;
        header.extensions.clear();
        header.extensions_padding = 0;
    }
}

/// Rewrites a packet for the outgoing leg: that leg's SSRC and negotiated payload type.
/// Sequence numbers and timestamps pass through: one outgoing track carries one producer for
/// its whole life, so they stay continuous.
#[inline]
pub fn rewrite_for_leg(packet: &mut rtp::Packet, ssrc: u32, payload_type: u8) {
    packet.header.ssrc = ssrc;
    packet.header.payload_type = payload_type;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(seq: u16) -> rtp::Packet {
        let mut header = rtp::header::Header {
            version: 2,
            payload_type: 111,
            sequence_number: seq,
            ssrc: 42,
            ..Default::default()
        };
        header
            .set_extension(1, Bytes::from_static(&[0xAB]))
            .unwrap();
        rtp::Packet {
            header,
            payload: Bytes::from_static(b"opus"),
        }
    }

    #[test]
    fn every_sink_gets_the_packet_without_extensions() {
        let fan = Fanout::new();
        let mut a = fan.add(SinkId(1), 4);
        let mut b = fan.add(SinkId(2), 4);
        let r = fan.forward(packet(7));
        assert_eq!(
            r,
            FanoutResult {
                delivered: 2,
                dropped: 0
            }
        );
        for rx in [&mut a, &mut b] {
            let p = rx.try_recv().unwrap();
            assert_eq!(p.header.sequence_number, 7);
            assert!(!p.header.extension && p.header.extensions.is_empty());
            assert_eq!(&p.payload[..], b"opus");
        }
    }

    #[test]
    fn a_full_sink_drops_the_newest_and_does_not_hold_back_the_others() {
        let fan = Fanout::new();
        let mut slow = fan.add(SinkId(1), 2);
        let mut fast = fan.add(SinkId(2), 16);
        let mut dropped = 0;
        for seq in 0..10 {
            dropped += fan.forward(packet(seq)).dropped;
            assert_eq!(fast.try_recv().unwrap().header.sequence_number, seq);
        }
        assert_eq!(dropped, 8);
        // The slow sink kept the oldest packets; the newest were dropped.
        assert_eq!(slow.try_recv().unwrap().header.sequence_number, 0);
        assert_eq!(slow.try_recv().unwrap().header.sequence_number, 1);
        assert!(slow.try_recv().is_err());
    }

    #[test]
    fn removed_and_closed_sinks_stop_receiving() {
        let fan = Fanout::new();
        let rx1 = fan.add(SinkId(1), 4);
        let _rx2 = fan.add(SinkId(2), 4);
        fan.remove(SinkId(2));
        drop(rx1);
        let r = fan.forward(packet(1));
        assert_eq!(r.delivered, 0);
        assert!(fan.is_empty());
    }

    #[test]
    fn rewrite_sets_the_leg_ssrc_and_payload_type() {
        let mut p = packet(3);
        rewrite_for_leg(&mut p, 999, 96);
        assert_eq!(
            (
                p.header.ssrc,
                p.header.payload_type,
                p.header.sequence_number
            ),
            (999, 96, 3)
        );
    }
}
