//! The forwarding hot path: one producer's RTP packets fanned out to bounded per-sink queues.
//!
//! A sink is anything that consumes a producer's packets: a subscriber's leg, the audio
//! pipeline's tap, later a recorder. Adding one returns a [`SinkHandle`] and the queue's
//! receiving end; dropping the handle removes the sink (mediasoup's consumer habit), so no
//! owner has to remember to unregister.
//!
//! Drop policy: each sink has its own queue. When it is full the *newest* packet is dropped
//! for that sink only and counted; the publisher and every other sink carry on. A video sink
//! that lost a packet enters "waiting for keyframe": it asks the publisher once, skips packets
//! until a keyframe starts (forwarding half a picture only smears it), then resumes. It asks
//! again only if its queue has room and no keyframe came for [`KEYFRAME_RETRY`], so a sink
//! that stays stalled costs the publisher one request, not a stream of them.
//!
//! Nothing here allocates per packet: the publisher's header extensions are stripped once,
//! before fan-out, so each per-sink clone copies empty vectors and a reference-counted
//! payload. Counters are per sink (one writer each) and summed when metrics are scraped.

use super::keyframe::{KEYFRAME_RETRY, VideoCodec};
use rtc::rtp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use tokio::sync::mpsc;

/// Queue depth per sink: about 5 s of Opus or 1-2 s of 30 fps video.
pub const SINK_QUEUE_PACKETS: usize = 256;

/// How a sink wants its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkOptions {
    /// Queue depth in packets.
    pub capacity: usize,
    /// After a loss, skip to the next keyframe (video legs).
    pub keyframe_gate: bool,
}

impl SinkOptions {
    /// A subscriber leg for a track of this kind of codec.
    pub fn leg(video: bool) -> Self {
        SinkOptions {
            capacity: SINK_QUEUE_PACKETS,
            keyframe_gate: video,
        }
    }
}

/// Packet counts of sinks, summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkCounts {
    /// Queued for the sink.
    pub queued: u64,
    /// Dropped because the sink's queue was full.
    pub dropped: u64,
    /// Skipped while the sink waited for a keyframe.
    pub skipped: u64,
    /// Written onward by the sink's owner (e.g. sent to the subscriber).
    pub written: u64,
}

impl std::ops::AddAssign for SinkCounts {
    fn add_assign(&mut self, o: SinkCounts) {
        self.queued += o.queued;
        self.dropped += o.dropped;
        self.skipped += o.skipped;
        self.written += o.written;
    }
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    dropped: AtomicU64,
    skipped: AtomicU64,
    written: AtomicU64,
}

impl Counters {
    fn read(&self) -> SinkCounts {
        SinkCounts {
            queued: self.queued.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
        }
    }

    fn add(&self, c: SinkCounts) {
        self.queued.fetch_add(c.queued, Ordering::Relaxed);
        self.dropped.fetch_add(c.dropped, Ordering::Relaxed);
        self.skipped.fetch_add(c.skipped, Ordering::Relaxed);
        self.written.fetch_add(c.written, Ordering::Relaxed);
    }
}

/// State of one sink shared by the fan-out and the sink's handle.
#[derive(Debug)]
struct SinkState {
    gate: bool,
    waiting: AtomicBool,
    /// When the sink last asked for a keyframe, ms on the producer's clock.
    asked_ms: AtomicU64,
    counts: Counters,
}

struct Entry {
    id: u64,
    tx: mpsc::Sender<rtp::Packet>,
    state: Arc<SinkState>,
}

#[derive(Default)]
struct Sinks {
    list: RwLock<Vec<Entry>>,
    /// Counts of sinks that are gone, so totals never go down.
    retired: Counters,
}

impl Sinks {
    fn remove(&self, id: u64) {
        let mut list = self.list.write().expect("fanout lock");
        if let Some(i) = list.iter().position(|e| e.id == id) {
            let e = list.swap_remove(i);
            self.retired.add(e.state.counts.read());
        }
    }
}

/// The owner's end of a sink. Dropping it removes the sink; its receiver then drains and
/// ends.
#[derive(Debug)]
pub struct SinkHandle {
    id: u64,
    sinks: Weak<Sinks>,
    state: Arc<SinkState>,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sinks")
    }
}

impl SinkHandle {
    /// Counts `n` packets written onward by the owner.
    #[inline]
    pub fn written(&self, n: u64) {
        self.state.counts.written.fetch_add(n, Ordering::Relaxed);
    }

    /// Makes a gated sink skip to the next keyframe (its owner discarded packets, e.g. before
    /// its connection was up). Returns whether it was not already waiting, in which case the
    /// caller should ask the publisher for one.
    pub fn wait_for_keyframe(&self, now_ms: u64) -> bool {
        if !self.state.gate {
            return false;
        }
        self.state.asked_ms.store(now_ms, Ordering::Relaxed);
        !self.state.waiting.swap(true, Ordering::Relaxed)
    }

    /// Whether the sink is skipping packets until a keyframe.
    pub fn is_waiting_for_keyframe(&self) -> bool {
        self.state.waiting.load(Ordering::Relaxed)
    }

    /// This sink's counts so far.
    pub fn counts(&self) -> SinkCounts {
        self.state.counts.read()
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        if let Some(sinks) = self.sinks.upgrade() {
            sinks.remove(self.id);
        }
    }
}

/// What happened to one packet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanoutResult {
    /// Sinks that got it.
    pub delivered: u32,
    /// Sinks whose queue was full.
    pub dropped: u32,
    /// Sinks that skipped it while waiting for a keyframe.
    pub skipped: u32,
    /// A sink needs a keyframe: the publisher should be asked (subject to its throttle).
    pub want_keyframe: bool,
}

/// A producer's set of sinks. The lock is per producer, taken for reading per packet and for
/// writing only when a sink comes or goes, so it is never contended on the hot path.
#[derive(Default)]
pub struct Fanout {
    sinks: Arc<Sinks>,
}

impl Fanout {
    /// An empty fan-out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink and returns its handle and the receiving end of its queue.
    pub fn add(&self, options: SinkOptions) -> (SinkHandle, mpsc::Receiver<rtp::Packet>) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(options.capacity.max(1));
        let state = Arc::new(SinkState {
            gate: options.keyframe_gate,
            waiting: AtomicBool::new(false),
            asked_ms: AtomicU64::new(0),
            counts: Counters::default(),
        });
        self.sinks.list.write().expect("fanout lock").push(Entry {
            id,
            tx,
            state: state.clone(),
        });
        let handle = SinkHandle {
            id,
            sinks: Arc::downgrade(&self.sinks),
            state,
        };
        (handle, rx)
    }

    /// Number of sinks.
    pub fn len(&self) -> usize {
        self.sinks.list.read().expect("fanout lock").len()
    }

    /// Whether there are no sinks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts of every sink this fan-out ever had.
    pub fn counts(&self) -> SinkCounts {
        let mut total = self.sinks.retired.read();
        for e in self.sinks.list.read().expect("fanout lock").iter() {
            total += e.state.counts.read();
        }
        total
    }

    /// Sends `packet` to every sink without waiting. `codec` recognises keyframes for gated
    /// sinks (asked only while one waits); `now_ms` is read only when a sink needs the time.
    /// Closed sinks are pruned.
    pub fn forward(
        &self,
        mut packet: rtp::Packet,
        codec: VideoCodec,
        now_ms: impl Fn() -> u64,
    ) -> FanoutResult {
        strip_extensions(&mut packet.header);
        let mut result = FanoutResult::default();
        let mut keyframe: Option<bool> = None;
        let mut now: Option<u64> = None;
        let mut closed = false;
        {
            let sinks = self.sinks.list.read().expect("fanout lock");
            for sink in sinks.iter() {
                let st = &sink.state;
                let waiting = st.gate && st.waiting.load(Ordering::Relaxed);
                if waiting
                    && !*keyframe.get_or_insert_with(|| codec.starts_keyframe(&packet.payload))
                {
                    result.skipped += 1;
                    st.counts.skipped.fetch_add(1, Ordering::Relaxed);
                    // Re-ask only once the sink has drained: a stalled sink asks once.
                    let t = *now.get_or_insert_with(&now_ms);
                    let asked = st.asked_ms.load(Ordering::Relaxed);
                    if sink.tx.capacity() * 2 >= sink.tx.max_capacity()
                        && t.saturating_sub(asked) >= KEYFRAME_RETRY.as_millis() as u64
                    {
                        st.asked_ms.store(t, Ordering::Relaxed);
                        result.want_keyframe = true;
                    }
                    continue;
                }
                match sink.tx.try_send(packet.clone()) {
                    Ok(()) => {
                        result.delivered += 1;
                        st.counts.queued.fetch_add(1, Ordering::Relaxed);
                        if waiting {
                            st.waiting.store(false, Ordering::Relaxed);
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        result.dropped += 1;
                        st.counts.dropped.fetch_add(1, Ordering::Relaxed);
                        if st.gate && !st.waiting.swap(true, Ordering::Relaxed) {
                            st.asked_ms
                                .store(*now.get_or_insert_with(&now_ms), Ordering::Relaxed);
                            result.want_keyframe = true;
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                }
            }
        }
        if closed {
            let mut list = self.sinks.list.write().expect("fanout lock");
            let retired = &self.sinks.retired;
            list.retain(|s| {
                let open = !s.tx.is_closed();
                if !open {
                    retired.add(s.state.counts.read());
                }
                open
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(seq: u16, payload: &'static [u8]) -> rtp::Packet {
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
            payload: Bytes::from_static(payload),
        }
    }

    const KEY: &[u8] = &[0x10, 0x00, 0x9d];
    const DELTA: &[u8] = &[0x10, 0x01, 0x00];

    fn opts(capacity: usize, keyframe_gate: bool) -> SinkOptions {
        SinkOptions {
            capacity,
            keyframe_gate,
        }
    }

    #[test]
    fn every_sink_gets_the_packet_without_extensions() {
        let fan = Fanout::new();
        let (_ha, mut a) = fan.add(opts(4, false));
        let (_hb, mut b) = fan.add(opts(4, false));
        let r = fan.forward(packet(7, b"opus"), VideoCodec::Other, || 0);
        assert_eq!((r.delivered, r.dropped), (2, 0));
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
        let (_hs, mut slow) = fan.add(opts(2, false));
        let (_hf, mut fast) = fan.add(opts(16, false));
        let mut dropped = 0;
        for seq in 0..10 {
            dropped += fan
                .forward(packet(seq, b"x"), VideoCodec::Other, || 0)
                .dropped;
            assert_eq!(fast.try_recv().unwrap().header.sequence_number, seq);
        }
        assert_eq!(dropped, 8);
        assert_eq!(slow.try_recv().unwrap().header.sequence_number, 0);
        assert_eq!(slow.try_recv().unwrap().header.sequence_number, 1);
        assert!(slow.try_recv().is_err());
    }

    #[test]
    fn dropping_the_handle_removes_the_sink_and_keeps_its_counts() {
        let fan = Fanout::new();
        let (h1, mut rx1) = fan.add(opts(4, false));
        let (_h2, _rx2) = fan.add(opts(4, false));
        fan.forward(packet(1, b"x"), VideoCodec::Other, || 0);
        drop(h1);
        assert_eq!(fan.len(), 1);
        assert_eq!(rx1.try_recv().unwrap().header.sequence_number, 1);
        assert!(rx1.try_recv().is_err(), "the removed sink's queue ends");
        let r = fan.forward(packet(2, b"x"), VideoCodec::Other, || 0);
        assert_eq!(r.delivered, 1);
        assert_eq!(
            fan.counts().queued,
            3,
            "the removed sink's count stays in the total"
        );
    }

    #[test]
    fn closed_receivers_are_pruned() {
        let fan = Fanout::new();
        let (_h, rx) = fan.add(opts(4, false));
        drop(rx);
        assert_eq!(
            fan.forward(packet(1, b"x"), VideoCodec::Other, || 0)
                .delivered,
            0
        );
        assert!(fan.is_empty());
    }

    #[test]
    fn a_video_sink_that_lost_a_packet_asks_once_and_resumes_at_a_keyframe() {
        let fan = Fanout::new();
        let (h, mut rx) = fan.add(opts(2, true));
        let (_hf, mut fast) = fan.add(opts(256, true));
        let fwd =
            |seq, p: &'static [u8], t: u64| fan.forward(packet(seq, p), VideoCodec::Vp8, || t);
        assert!(!fwd(0, KEY, 0).want_keyframe);
        assert!(!fwd(1, DELTA, 10).want_keyframe);
        let r = fwd(2, DELTA, 20);
        assert_eq!(r.dropped, 1);
        assert!(r.want_keyframe, "the first loss asks");
        assert!(h.is_waiting_for_keyframe());
        // Still stalled: deltas are skipped, nobody asks again, however long it lasts.
        for seq in 3..200 {
            let r = fwd(seq, DELTA, u64::from(seq) * 33);
            assert!(!r.want_keyframe, "seq {seq}");
            assert_eq!(r.skipped, 1);
        }
        // The other sink got everything.
        assert_eq!(std::iter::from_fn(|| fast.try_recv().ok()).count(), 200);
        // The slow sink drains; a keyframe arrives and it resumes.
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 2);
        let r = fwd(200, KEY, 7_000);
        assert_eq!(r.delivered, 2);
        assert!(!h.is_waiting_for_keyframe());
        assert!(fwd(201, DELTA, 7_033).delivered == 2);
        let c = h.counts();
        assert_eq!((c.queued, c.dropped, c.skipped), (4, 1, 197));
    }

    #[test]
    fn a_drained_sink_still_without_a_keyframe_asks_again_after_the_retry_time() {
        let fan = Fanout::new();
        let (h, _rx) = fan.add(opts(8, true));
        assert!(h.wait_for_keyframe(1_000), "newly waiting: the caller asks");
        assert!(!h.wait_for_keyframe(1_000), "already waiting");
        let retry = KEYFRAME_RETRY.as_millis() as u64;
        let r = fan.forward(packet(1, DELTA), VideoCodec::Vp8, || 1_000 + retry - 1);
        assert!(!r.want_keyframe);
        let r = fan.forward(packet(2, DELTA), VideoCodec::Vp8, || 1_000 + retry);
        assert!(
            r.want_keyframe,
            "queue has room and no keyframe came: ask again"
        );
        let r = fan.forward(packet(3, DELTA), VideoCodec::Vp8, || 1_000 + retry + 10);
        assert!(!r.want_keyframe);
    }

    #[test]
    fn audio_sinks_are_never_gated() {
        let fan = Fanout::new();
        let (h, _rx) = fan.add(opts(1, false));
        fan.forward(packet(1, b"a"), VideoCodec::Other, || 0);
        let r = fan.forward(packet(2, b"a"), VideoCodec::Other, || 0);
        assert_eq!(r.dropped, 1);
        assert!(!r.want_keyframe && !h.is_waiting_for_keyframe());
        assert!(!h.wait_for_keyframe(0));
    }
}
