//! The SFU's own per-packet path (producer fan-out into each sink's queue, the leg's dequeue
//! and rewrite) allocates nothing per packet once warm, counted by a global allocator. What
//! webrtc-rs does after `write_rtp` (interceptors, SRTP, the socket) is not covered here; see
//! docs/performance.md. The media plane's whole path, socket to socket with SRTP (`--media-plane
//! worker`), is counted on its worker thread in src/plane/tests.rs
//! (`the_worker_forwards_without_allocating_per_packet`).

use conclave::peer::leg::rewrite_for_leg;
use conclave::room::producer::RetiredCounts;
use conclave::room::{Producer, ProducerSpec, SinkOptions};
use conclave_signaling::{ParticipantId, TrackId, TrackKind};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn packet(payload: &bytes::Bytes, seq: u16) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: 111,
            sequence_number: seq,
            timestamp: u32::from(seq) * 960,
            ssrc: 42,
            ..Default::default()
        },
        payload: payload.clone(),
    }
}

#[test]
fn forwarding_a_packet_to_ten_subscribers_allocates_nothing_once_warm() {
    for kind in [TrackKind::Audio, TrackKind::Video] {
        let producer = Producer::new(
            ProducerSpec {
                id: TrackId("TR_alloc".into()),
                publisher: ParticipantId("PA_alloc".into()),
                kind,
                codec: RTCRtpCodec {
                    mime_type: if kind == TrackKind::Audio {
                        "audio/opus"
                    } else {
                        "video/VP8"
                    }
                    .into(),
                    clock_rate: if kind == TrackKind::Audio {
                        48_000
                    } else {
                        90_000
                    },
                    ..Default::default()
                },
                transcribe: false,
            },
            std::time::Instant::now(),
            Arc::new(RetiredCounts::default()),
        );
        let mut sinks: Vec<_> = (0..10)
            .map(|_| producer.add_sink(SinkOptions::leg(kind == TrackKind::Video)))
            .collect();
        // A delta-frame VP8 start (the gate is open: nothing lost yet) / an Opus-sized payload.
        let payload = bytes::Bytes::from(vec![0x10u8, 0x01, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9]);
        let mut run = |n: u16| {
            for seq in 0..n {
                let r = producer.deliver(packet(&payload, seq));
                assert_eq!(r.delivered, 10);
                for (i, (_, rx)) in sinks.iter_mut().enumerate() {
                    let mut p = rx.try_recv().expect("queued");
                    rewrite_for_leg(&mut p, 1000 + i as u32, 96);
                    std::hint::black_box(&p);
                }
            }
        };
        run(1_000); // warm: queues' first blocks
        let before = ALLOCS.load(Ordering::Relaxed);
        run(10_000);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocs, 0,
            "{kind:?}: {allocs} allocations for 10,000 packets x 10 subscribers"
        );
    }
}
