//! End to end through the async track pipeline with real (synthesised) speech: espeak-ng
//! speech, Opus-encoded in 20 ms RTP packets, in order and reordered with a loss, plus
//! back-pressure with a transcriber that blocks. The transcribers here only record the audio
//! they get; real Whisper is tested elsewhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conclave_media::frames::Frame;
use conclave_media::pipeline::{
    PipelineConfig, PushOutcome, RtpAudio, TrackProcessor, pipeline_input, spawn_track_pipeline,
};
use conclave_media::pool::{PipelineStats, PoolConfig, RoomKey, TranscriptionPool};
use conclave_media::testing::voiced_span_ms;
use conclave_media::transcribe::{TranscribeError, Transcriber};
use tokio::sync::broadcast;

/// Counts allocations made by the current thread, to check the per-packet path makes none.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local,
// which itself never allocates.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> u64 {
    ALLOCATIONS.with(|n| n.get())
}

const SENTENCE: &str = "The quick brown fox jumps over the lazy dog near the river bank";
/// Where the track's clock starts (the first packet's arrival), ms.
const T0: u64 = 10_000;
const LEAD_MS: u64 = 500;

/// Speech from espeak-ng at 48 kHz mono i16.
fn espeak_48k(text: &str) -> Vec<i16> {
    conclave_media::testing::speak_i16(text, 48_000)
}

/// 20 ms Opus packets of `pcm` (48 kHz), zero-padded to a whole packet.
fn opus_packets(pcm: &[i16]) -> Vec<Bytes> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_packet_loss_perc(10).unwrap();
    pcm.chunks(960)
        .map(|chunk| {
            let mut frame = [0i16; 960];
            frame[..chunk.len()].copy_from_slice(chunk);
            Bytes::from(enc.encode_vec(&frame, 1500).unwrap())
        })
        .collect()
}

/// RTP packets for the clip, with sequence numbers and timestamps that wrap during it.
fn rtp(packets: &[Bytes]) -> Vec<RtpAudio> {
    packets
        .iter()
        .enumerate()
        .map(|(i, payload)| RtpAudio {
            seq: 65_500u16.wrapping_add(i as u16),
            timestamp: (u32::MAX - 48_000).wrapping_add(960 * i as u32),
            payload: payload.clone(),
            arrival_ms: T0 + 20 * i as u64,
        })
        .collect()
}

/// Silence, the sentence, and `tail_ms` of silence; also the sentence's voiced span on the
/// track clock.
fn track(text: &str, tail_ms: usize) -> (Vec<RtpAudio>, (u64, u64)) {
    let speech = espeak_48k(text);
    let (from, to) = voiced_span_ms(&speech);
    let mut pcm = vec![0i16; LEAD_MS as usize * 48];
    pcm.extend(&speech);
    pcm.extend(vec![0i16; tail_ms * 48]);
    (
        rtp(&opus_packets(&pcm)),
        (T0 + LEAD_MS + from, T0 + LEAD_MS + to),
    )
}

/// Records every call's audio length; answers with it, so tests can match frames to calls.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<usize>>,
}

impl Transcriber for Recorder {
    fn transcribe(&self, pcm: &[f32]) -> Result<String, TranscribeError> {
        self.calls.lock().unwrap().push(pcm.len());
        Ok(format!("{} samples", pcm.len()))
    }
}

fn room() -> RoomKey {
    Arc::from("room-1")
}

/// Runs one track to the end and returns every frame it published, with the pool's stats.
async fn run(
    packets: Vec<RtpAudio>,
    transcriber: Arc<dyn Transcriber>,
) -> (Vec<Frame>, Arc<PipelineStats>) {
    run_paced(packets, transcriber, None).await
}

/// Like [`run`], waiting `pace` between packets (a fraction of real time: fast, but slow
/// enough that an interim's reply comes back while the utterance is still live).
async fn run_paced(
    packets: Vec<RtpAudio>,
    transcriber: Arc<dyn Transcriber>,
    pace: Option<Duration>,
) -> (Vec<Frame>, Arc<PipelineStats>) {
    let stats = Arc::new(PipelineStats::default());
    let pool = Arc::new(TranscriptionPool::new(
        transcriber,
        PoolConfig::default(),
        Arc::clone(&stats),
    ));
    let (frames_tx, mut frames_rx) = broadcast::channel(256);
    let (input, rx) = pipeline_input(packets.len(), Arc::clone(&stats));
    let task = spawn_track_pipeline(
        "alice".into(),
        room(),
        rx,
        pool,
        frames_tx,
        PipelineConfig::default(),
    )
    .expect("pipeline builds");
    for packet in packets {
        assert_eq!(input.try_push(packet), PushOutcome::Queued);
        if let Some(pace) = pace {
            tokio::time::sleep(pace).await;
        }
    }
    drop(input);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("pipeline ends")
        .unwrap();
    let frames = std::iter::from_fn(|| frames_rx.try_recv().ok()).collect();
    (frames, stats)
}

/// The frames as compact tags: S(at), I(start, end), P(at) for stopped, F(start, end, text).
#[derive(Debug, Clone, PartialEq)]
enum Tag {
    S(u64),
    I(u64, u64),
    P(u64),
    F(u64, u64, String),
}

fn tags(frames: &[Frame]) -> Vec<Tag> {
    frames
        .iter()
        .map(|f| match f {
            Frame::UserStartedSpeaking(e) => Tag::S(e.at_ms),
            Frame::InterimTranscript(t) => Tag::I(t.start_ms, t.end_ms),
            Frame::UserStoppedSpeaking(e) => Tag::P(e.at_ms),
            Frame::FinalTranscript(t) => Tag::F(t.start_ms, t.end_ms, t.text.clone()),
            other => panic!("unexpected frame {other:?}"),
        })
        .collect()
}

fn near(actual: u64, expected: u64, tolerance: u64) -> bool {
    actual.abs_diff(expected) <= tolerance
}

/// Checks one clean utterance: order, boundaries against the spoken span, and the final's audio.
fn check_utterance(
    tags: &[Tag],
    (from, to): (u64, u64),
    recorder: &Recorder,
) -> (u64, u64, u64, u64) {
    let Tag::S(started) = tags[0] else {
        panic!("{tags:?}")
    };
    let n = tags.len();
    let Tag::P(stopped) = tags[n - 2] else {
        panic!("{tags:?}")
    };
    let Tag::F(start, end, ref text) = tags[n - 1] else {
        panic!("{tags:?}")
    };
    assert!(
        tags[1..n - 2].iter().all(|t| matches!(t, Tag::I(..))),
        "{tags:?}"
    );
    // Rule: started = voice onset + 200 ms; stopped = last voice + 500 ms; audio from 300 ms
    // before the onset to 200 ms after the last voice. VAD and codec blur the edges a little.
    assert!(
        near(started, from + 200, 60),
        "started {started}, speech from {from}"
    );
    assert!(
        near(stopped, to + 500, 80),
        "stopped {stopped}, speech to {to}: {tags:?}"
    );
    assert!(
        near(start, from - 300, 60),
        "final starts {start}, speech from {from}"
    );
    assert!(near(end, to + 200, 80), "final ends {end}, speech to {to}");
    // The final's audio is the whole span, and the transcriber got exactly that audio.
    let samples = (end - start) as usize * 16;
    assert_eq!(text, &format!("{samples} samples"));
    assert!(recorder.calls.lock().unwrap().contains(&samples));
    (started, stopped, start, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_sentence_becomes_one_utterance_with_interims() {
    let (packets, span) = track(SENTENCE, 1_000);
    let recorder = Arc::new(Recorder::default());
    // A tenth of real time: 20 ms packets 2 ms apart.
    let (frames, stats) =
        run_paced(packets, recorder.clone(), Some(Duration::from_millis(2))).await;
    let tags = tags(&frames);
    check_utterance(&tags, span, &recorder);
    let spoken = span.1 - span.0;
    assert!(spoken > 3_000, "the sentence lasts {spoken} ms");
    // One interim request per second of speech; with an idle pool and an instant transcriber
    // each comes back while the utterance is live, so at least all but the last are shown.
    let interims = tags.iter().filter(|t| matches!(t, Tag::I(..))).count() as u64;
    assert!(
        interims >= spoken / 1_000 - 1,
        "{interims} interims for {spoken} ms of speech: {tags:?}"
    );
    // Each covers the utterance so far (up to the interim window).
    for tag in &tags[1..tags.len() - 2] {
        let (Tag::I(start, end), Tag::F(final_start, final_end, _)) = (tag, &tags[tags.len() - 1])
        else {
            panic!()
        };
        assert_eq!(start, final_start);
        assert!(
            end < final_end && (end - start) % 1_000 == 500,
            "interim {tag:?}"
        );
    }
    assert_eq!(PipelineStats::get(&stats.packets_lost), 0);
    assert_eq!(PipelineStats::get(&stats.jobs_dropped), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_packets_and_a_loss_give_the_same_boundaries() {
    let (packets, span) = track(SENTENCE, 1_000);
    let recorder = Arc::new(Recorder::default());
    let (clean, _) = run(packets.clone(), recorder.clone()).await;
    let clean = check_utterance(&tags(&clean), span, &recorder);

    let mut shuffled = packets;
    // Swap neighbours in three places, one of them across the sequence wrap (packet 35 is seq
    // 65535), move one packet 3 places late, and lose one in the middle of the speech.
    for i in [34, 60, 120] {
        shuffled.swap(i, i + 1);
    }
    let late = shuffled.remove(80);
    shuffled.insert(83, late);
    shuffled.remove(100);
    let recorder = Arc::new(Recorder::default());
    let (frames, stats) = run(shuffled, recorder.clone()).await;
    let rough = check_utterance(&tags(&frames), span, &recorder);
    assert_eq!(PipelineStats::get(&stats.packets_lost), 1);
    assert_eq!(PipelineStats::get(&stats.packets_late), 0);
    assert_eq!(PipelineStats::get(&stats.decode_errors), 0);
    let diffs = [
        clean.0.abs_diff(rough.0),
        clean.1.abs_diff(rough.1),
        clean.2.abs_diff(rough.2),
        clean.3.abs_diff(rough.3),
    ];
    assert!(
        diffs.iter().all(|&d| d <= 20),
        "clean {clean:?} vs reordered {rough:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ending_mid_sentence_still_finalises() {
    let mut pcm = vec![0i16; LEAD_MS as usize * 48];
    let speech = espeak_48k(SENTENCE);
    let (from, _) = voiced_span_ms(&speech);
    pcm.extend(&speech[..48 * 2_000]);
    let packets = rtp(&opus_packets(&pcm));
    let audio_end = T0 + 20 * packets.len() as u64;
    let (frames, _) = run(packets, Arc::new(Recorder::default())).await;
    let tags = tags(&frames);
    let n = tags.len();
    // Voice runs to the last packet, so speech stops where the audio ends, and all of it is kept.
    assert_eq!(tags[n - 2], Tag::P(audio_end), "{tags:?}");
    let Tag::F(start, end, _) = tags[n - 1] else {
        panic!("{tags:?}")
    };
    assert_eq!(end, audio_end);
    assert!(near(start, T0 + LEAD_MS + from - 300, 60), "{tags:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_going_quiet_mid_speech_ends_the_utterance() {
    // No packets after 2 s of the sentence, but the track stays open: the idle timer lets the
    // silence count, and the stop lands exactly end_ms after the last voice.
    let mut pcm = vec![0i16; LEAD_MS as usize * 48];
    pcm.extend(&espeak_48k(SENTENCE)[..48 * 2_000]);
    let stats = Arc::new(PipelineStats::default());
    let pool = TranscriptionPool::new(Arc::new(Recorder::default()), PoolConfig::default(), stats);
    let (frames_tx, mut frames_rx) = broadcast::channel(64);
    let (input, rx) = pipeline_input(200, Arc::clone(pool.stats()));
    let config = PipelineConfig::default();
    spawn_track_pipeline("dave".into(), room(), rx, Arc::new(pool), frames_tx, config).unwrap();
    for packet in rtp(&opus_packets(&pcm)) {
        assert_eq!(input.try_push(packet), PushOutcome::Queued);
    }
    let mut got = Vec::new();
    while !matches!(got.last(), Some(Frame::FinalTranscript(_))) {
        let frame = tokio::time::timeout(Duration::from_secs(5), frames_rx.recv()).await;
        got.push(
            frame
                .expect("the utterance ends without more packets")
                .unwrap(),
        );
    }
    let tags = tags(&got);
    let n = tags.len();
    let (Tag::P(stopped), Tag::F(_, end, _)) = (&tags[n - 2], &tags[n - 1]) else {
        panic!("{tags:?}")
    };
    assert_eq!(*stopped, *end - 200 + 500, "{tags:?}");
    assert!(near(*end, T0 + LEAD_MS + 2_000 + 200, 60), "{tags:?}");
    drop(input);
}

/// Blocks every call until the test drops the gate's sender.
struct Blocking {
    gate: Mutex<std_mpsc::Receiver<()>>,
    calls: AtomicU64,
}

impl Transcriber for Blocking {
    fn transcribe(&self, pcm: &[f32]) -> Result<String, TranscribeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.gate.lock().unwrap().recv();
        Ok(format!("{} samples", pcm.len()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_transcriber_drops_jobs_but_never_stalls_the_track() {
    let (gate, gate_rx) = std_mpsc::channel::<()>();
    let blocking = Arc::new(Blocking {
        gate: Mutex::new(gate_rx),
        calls: AtomicU64::new(0),
    });
    let stats = Arc::new(PipelineStats::default());
    let config = PoolConfig {
        workers: 1,
        max_per_server: 1,
        max_per_room: 1,
        deadline_factor: conclave_media::pool::DEFAULT_DEADLINE_FACTOR,
    };
    let pool = Arc::new(TranscriptionPool::new(
        blocking.clone(),
        config,
        Arc::clone(&stats),
    ));
    let (frames_tx, mut frames_rx) = broadcast::channel(256);

    // The sentence three times with a second of silence after each: three utterances.
    let speech = espeak_48k(SENTENCE);
    let mut pcm = vec![0i16; 24_000];
    for _ in 0..3 {
        pcm.extend(&speech);
        pcm.extend(vec![0i16; 48_000]);
    }
    let packets = rtp(&opus_packets(&pcm));
    let (input, rx) = pipeline_input(packets.len(), Arc::clone(&stats));
    let mut config = PipelineConfig::default();
    config.segment.interim_ms = 0;
    let task = spawn_track_pipeline("bob".into(), room(), rx, pool, frames_tx, config).unwrap();
    for packet in packets {
        assert_eq!(input.try_push(packet), PushOutcome::Queued);
    }
    drop(input);

    // All speech edges flow while the only worker is stuck on the first final, and the two
    // finals that could not be queued are reported as gaps, not silently lost.
    let (mut edges, mut gaps) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while edges < 6 || gaps.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, frames_rx.recv())
            .await
            .expect("speech edges and gaps arrive")
            .unwrap()
        {
            Frame::UserStartedSpeaking(_) | Frame::UserStoppedSpeaking(_) => edges += 1,
            Frame::TranscriptGap(g) => gaps.push(g),
            other => panic!("no transcript can be ready yet: {other:?}"),
        }
    }
    assert!(
        gaps.iter()
            .all(|g| g.reason == conclave_media::frames::GapReason::Dropped
                && g.speaker == "bob"
                && g.end_ms > g.start_ms + 1_000),
        "{gaps:?}"
    );
    assert!(gaps[0].end_ms <= gaps[1].start_ms, "in order: {gaps:?}");
    // The task submits the last final right after the last edge; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(blocking.calls.load(Ordering::SeqCst), 1, "one job running");
    assert_eq!(
        PipelineStats::get(&stats.jobs_dropped),
        2,
        "the other two finals were dropped"
    );
    assert!(
        !task.is_finished(),
        "the track waits for its one accepted final"
    );

    drop(gate);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("pipeline ends")
        .unwrap();
    let rest: Vec<Frame> = std::iter::from_fn(|| frames_rx.try_recv().ok()).collect();
    assert!(
        matches!(rest.as_slice(), [Frame::FinalTranscript(_)]),
        "{rest:?}"
    );
    assert_eq!(PipelineStats::get(&stats.transcriptions_done), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn try_push_never_waits_when_the_queue_is_full() {
    let stats = Arc::new(PipelineStats::default());
    let pool = Arc::new(TranscriptionPool::new(
        Arc::new(Recorder::default()),
        PoolConfig::default(),
        Arc::clone(&stats),
    ));
    let (frames_tx, _frames_rx) = broadcast::channel(16);
    let (input, rx) = pipeline_input(8, Arc::clone(&stats));
    let task = spawn_track_pipeline(
        "carol".into(),
        room(),
        rx,
        pool,
        frames_tx,
        PipelineConfig::default(),
    )
    .unwrap();
    let packets = rtp(&opus_packets(&vec![0i16; 48_000 * 20]));
    // On this single-threaded runtime the pipeline cannot run until the test yields, so the
    // queue takes 8 packets and the rest are dropped on the spot: a push that waited for room
    // would never return here, so finishing at all shows none did.
    let outcomes: Vec<PushOutcome> = packets.into_iter().map(|p| input.try_push(p)).collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|&&o| o == PushOutcome::Queued)
            .count(),
        8
    );
    assert_eq!(PipelineStats::get(&stats.input_dropped), 1_000 - 8);
    drop(input);
    task.await.unwrap();
    let (spare, _rx) = pipeline_input(1, Arc::clone(&stats));
    drop(_rx);
    assert_eq!(
        spare.try_push(RtpAudio {
            seq: 0,
            timestamp: 0,
            payload: Bytes::new(),
            arrival_ms: 0
        }),
        PushOutcome::Closed
    );
}

#[test]
fn the_per_packet_path_allocates_nothing() {
    let (packets, _) = track(SENTENCE, 1_000);
    let mut config = PipelineConfig::default();
    config.segment.interim_ms = 0;
    let mut track = TrackProcessor::new(&config, Arc::default()).unwrap();
    let mut packets = packets.into_iter();
    // Warm up on the leading silence, then measure through the start of speech and 2 s of it
    // (the utterance buffer holds 5 s before it first grows).
    for packet in packets.by_ref().take(10) {
        track.push_packet(packet);
    }
    let speech: Vec<RtpAudio> = packets.by_ref().take(120).collect();
    let before = allocations();
    for packet in speech {
        track.push_packet(packet);
    }
    let started = track.poll_event();
    assert_eq!(allocations() - before, 0);
    assert!(matches!(
        started,
        Some(conclave_media::segment::SegmentEvent::Started { .. })
    ));
}
