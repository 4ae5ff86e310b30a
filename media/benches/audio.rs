//! Per-frame cost of the track pipeline's DSP stages, on a voiced synthetic signal.
//!
//! `cargo bench -p conclave-media --bench audio`

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use conclave_media::decode::OpusTrackDecoder;
use conclave_media::pipeline::{PipelineConfig, RtpAudio, TrackProcessor};
use conclave_media::resample::Downsampler;
use conclave_media::segment::{SegmentConfig, Segmenter};
use conclave_media::vad::VoiceDetector;
use criterion::{Criterion, criterion_group, criterion_main};

/// A harmonic-rich 48 kHz signal with a syllable envelope: Opus and the VAD treat it as voice.
fn voiced_48k(samples: usize) -> Vec<f32> {
    (0..samples)
        .map(|n| {
            let t = n as f32 / 48_000.0;
            let s: f32 = (1..=20)
                .map(|h| (2.0 * std::f32::consts::PI * 130.0 * h as f32 * t).sin() / h as f32)
                .sum();
            0.2 * s * (0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin())
        })
        .collect()
}

fn opus_packets(pcm: &[f32]) -> Vec<Vec<u8>> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    pcm.chunks_exact(960)
        .map(|f| enc.encode_vec_float(f, 1500).unwrap())
        .collect()
}

fn stages(c: &mut Criterion) {
    let pcm48 = voiced_48k(48_000);
    let packets = opus_packets(&pcm48);

    c.bench_function("opus_decode_20ms", |b| {
        let mut dec = OpusTrackDecoder::new(100).unwrap();
        let mut i = 0usize;
        b.iter(|| {
            let p = &packets[i % packets.len()];
            let out = dec.decode(i as u32 * 960, p, 0).unwrap();
            black_box(out.pcm.len());
            i += 1;
        })
    });

    c.bench_function("resample_48k_to_16k_20ms", |b| {
        let mut rs = Downsampler::new(960).unwrap();
        let mut i = 0usize;
        b.iter(|| {
            let chunk = &pcm48[(i % 50) * 960..][..960];
            black_box(rs.process(chunk).unwrap().len());
            i += 1;
        })
    });

    let mut rs = Downsampler::new(48_000).unwrap();
    let pcm16 = rs.process(&pcm48).unwrap().to_vec();
    c.bench_function("vad_10ms", |b| {
        let mut vad = VoiceDetector::new(2);
        let mut i = 0usize;
        b.iter(|| {
            let frame = &pcm16[(i % 100) * 160..][..160];
            black_box(vad.is_voice(frame));
            i += 1;
        })
    });

    c.bench_function("segmenter_10ms", |b| {
        let mut seg = Segmenter::new(SegmentConfig {
            interim_ms: 0,
            ..SegmentConfig::default()
        });
        let mut i = 0u64;
        b.iter(|| {
            // 2 s of voice then 1 s of silence, repeating: starts, stops and utterance copies.
            let voiced = i % 300 < 200;
            let frame = &pcm16[(i as usize % 100) * 160..][..160];
            seg.push_frame(i * 10, voiced, frame);
            while let Some(e) = seg.poll_event() {
                black_box(e);
            }
            i += 1;
        })
    });

    c.bench_function("track_processor_per_packet", |b| {
        let config = PipelineConfig {
            segment: SegmentConfig {
                interim_ms: 0,
                ..SegmentConfig::default()
            },
            ..PipelineConfig::default()
        };
        let mut track = TrackProcessor::new(&config, Arc::default()).unwrap();
        let payloads: Vec<Bytes> = packets.iter().map(|p| Bytes::copy_from_slice(p)).collect();
        let mut i = 0usize;
        b.iter(|| {
            let packet = RtpAudio {
                seq: i as u16,
                timestamp: (i as u32).wrapping_mul(960),
                payload: payloads[i % payloads.len()].clone(),
                arrival_ms: i as u64 * 20,
            };
            track.push_packet(packet);
            while let Some(e) = track.poll_event() {
                black_box(e);
            }
            i += 1;
        })
    });
}

criterion_group!(benches, stages);
criterion_main!(benches);
