//! The forwarding hot path in isolation: one packet delivered to a producer
//! (`Producer::deliver`: count, strip extensions, `try_send` a clone to each sink), then
//! dequeued and rewritten for each subscriber's leg (SSRC and payload type). Throughput is
//! reported in packets delivered to subscribers per second.

use bytes::Bytes;
use conclave::peer::leg::rewrite_for_leg;
use conclave::room::SinkOptions;
use conclave::room::producer::{Producer, ProducerSpec, RetiredCounts};
use conclave_signaling::{ParticipantId, TrackId, TrackKind};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::hint::black_box;
use std::sync::Arc;

fn opus_like_packet(seq: u16) -> rtp::Packet {
    let mut header = rtp::header::Header {
        version: 2,
        payload_type: 111,
        sequence_number: seq,
        timestamp: u32::from(seq) * 960,
        ssrc: 0x1234_5678,
        ..Default::default()
    };
    // Browsers send audio-level and transport-cc extensions; the SFU strips them.
    header
        .set_extension(1, Bytes::from_static(&[0x30]))
        .unwrap();
    header
        .set_extension(3, Bytes::from_static(&[0x00, 0x01]))
        .unwrap();
    rtp::Packet {
        header,
        payload: Bytes::from(vec![0xAA; 80]),
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_fanout");
    for n in [1usize, 10, 100] {
        let fan = Producer::new(
            ProducerSpec {
                id: TrackId("TR_bench".into()),
                publisher: ParticipantId("PA_bench".into()),
                kind: TrackKind::Audio,
                codec: RTCRtpCodec {
                    mime_type: "audio/opus".into(),
                    clock_rate: 48_000,
                    channels: 2,
                    ..Default::default()
                },
                transcribe: false,
            },
            std::time::Instant::now(),
            Arc::new(RetiredCounts::default()),
        );
        let mut sinks: Vec<_> = (0..n)
            .map(|_| fan.add_sink(SinkOptions::leg(false)))
            .collect();
        let template = opus_like_packet(1);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("subscribers", n), &n, |b, _| {
            let mut seq = 0u16;
            b.iter(|| {
                let mut p = template.clone();
                seq = seq.wrapping_add(1);
                p.header.sequence_number = seq;
                let r = fan.deliver(p);
                debug_assert_eq!(r.delivered as usize, n);
                for (i, (_, rx)) in sinks.iter_mut().enumerate() {
                    let mut out = rx.try_recv().expect("queued");
                    rewrite_for_leg(&mut out, 0x1000 + i as u32, 111);
                    black_box(&out);
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
