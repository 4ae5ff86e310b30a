//! One published audio track's pipeline: RTP in, typed [`Frame`]s out.
//!
//! ```text
//! SFU ──try_push──▶ [bounded queue] ──▶ reorder ─▶ Opus decode ─▶ 48→16 kHz ─▶ VAD ─▶ segmenter
//!                                                                                   │
//!            broadcast<Frame> ◀── Started / Stopped now; Interim / Final when the pool replies
//! ```
//!
//! The DSP chain is [`TrackProcessor`]: synchronous, clock-free, testable without tokio. The
//! task around it only moves packets in, transcription jobs out, and frames onward. The SFU
//! never waits on any of it: [`PipelineInput::try_push`] drops (and counts) when the queue is
//! full.
//!
//! Time: the first packet's `arrival_ms` anchors the track on the caller's clock; from then on
//! audio time follows the RTP timestamps, so reordering and jitter do not move boundaries.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::decode::{DecodeError, OpusTrackDecoder};
use crate::frames::{EndOfTurn, Frame, Gap, GapReason, SpeakerId, SpeechEdge, Transcript};
use crate::pool::{JobKind, JobOutcome, PipelineStats, RoomKey, TranscriptionPool};
use crate::reorder::{ReorderBuffer, ReorderCounters};
use crate::resample::{Downsampler, ResampleError};
use crate::segment::{SegmentConfig, SegmentEvent, Segmenter, Utterance};
use crate::vad::{FRAME_SAMPLES, VoiceDetector};

/// One RTP packet of Opus audio, as the SFU hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpAudio {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp (48 kHz clock for Opus).
    pub timestamp: u32,
    /// The Opus payload.
    pub payload: Bytes,
    /// When it arrived, ms on the room's pipeline clock.
    pub arrival_ms: u64,
}

/// Settings for one track's pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Packets the input queue holds before `try_push` drops (50 = 1 s of 20 ms packets).
    pub input_capacity: usize,
    /// Packets held back while waiting for a missing one (5 = 100 ms of 20 ms packets).
    pub reorder_depth: usize,
    /// Longest hole filled by loss concealment; longer ones are skipped as silence.
    pub max_conceal_ms: u32,
    /// webrtc-vad aggressiveness, 0 (most voice) to 3 (least): used when `silero` is `None`.
    pub vad_aggressiveness: u8,
    /// Silero VAD, the detector of choice; `None` falls back to webrtc-vad.
    pub silero: Option<std::sync::Arc<crate::silero::SileroModel>>,
    /// Endpointing rule.
    pub segment: SegmentConfig,
    /// Wall time without packets after which held packets are released and the silence
    /// counts toward ending speech (checked only while something is pending).
    pub idle_ms: u64,
    /// End-of-turn verdicts at each pause, for rooms that want them (an agent listens).
    pub turn_analysis: Option<TurnAnalysis>,
}

/// The audio of an utterance an end-of-turn model looks at: its last 8 s.
pub const TURN_AUDIO_SAMPLES: usize = 8 * 16_000;

/// Runs an end-of-turn model (Smart Turn) on each finished utterance of a room whose `wanted`
/// flag is up, on a blocking thread, and publishes its verdict as [`Frame::EndOfTurn`].
/// At most `max_in_flight` run at once across every track sharing `in_flight`; pauses beyond
/// that get no verdict (counted in [`PipelineStats::turn_verdicts_skipped`]), and listeners
/// fall back to their silence rule.
#[derive(Debug, Clone)]
pub struct TurnAnalysis {
    /// The model.
    pub model: Arc<crate::smart_turn::SmartTurn>,
    /// Raised while someone in the room wants verdicts.
    pub wanted: Arc<AtomicBool>,
    /// Runs in progress, shared by every track of the server.
    pub in_flight: Arc<AtomicUsize>,
    /// Limit on `in_flight`.
    pub max_in_flight: usize,
}

impl PartialEq for TurnAnalysis {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.model, &other.model)
            && Arc::ptr_eq(&self.wanted, &other.wanted)
            && self.max_in_flight == other.max_in_flight
    }
}
impl Eq for TurnAnalysis {}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            input_capacity: 50,
            reorder_depth: 5,
            max_conceal_ms: 100,
            vad_aggressiveness: 2,
            silero: None,
            segment: SegmentConfig::default(),
            idle_ms: 100,
            turn_analysis: None,
        }
    }
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The Opus decoder could not be created.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The resampler could not be created.
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for the pipeline.
    Queued,
    /// The queue was full: dropped and counted in [`PipelineStats::input_dropped`].
    Dropped,
    /// The pipeline has ended.
    Closed,
}

/// The SFU's end of a track pipeline's input queue; dropping it ends the pipeline, which then
/// finishes any utterance in progress.
#[derive(Debug, Clone)]
pub struct PipelineInput {
    tx: mpsc::Sender<RtpAudio>,
    stats: Arc<PipelineStats>,
}

impl PipelineInput {
    /// Hands a packet to the pipeline without ever waiting.
    pub fn try_push(&self, packet: RtpAudio) -> PushOutcome {
        match self.tx.try_send(packet) {
            Ok(()) => PushOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                PipelineStats::add(&self.stats.input_dropped, 1);
                PushOutcome::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => PushOutcome::Closed,
        }
    }
}

/// A bounded input queue for one track: the SFU keeps the [`PipelineInput`], the receiver goes
/// to [`spawn_track_pipeline`].
pub fn pipeline_input(
    capacity: usize,
    stats: Arc<PipelineStats>,
) -> (PipelineInput, mpsc::Receiver<RtpAudio>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (PipelineInput { tx, stats }, rx)
}

/// The synchronous DSP chain of one track: reorder, decode, resample, VAD, segment.
#[derive(Debug)]
pub struct TrackProcessor {
    reorder: ReorderBuffer<RtpAudio>,
    reorder_seen: ReorderCounters,
    decoder: OpusTrackDecoder,
    resampler: Downsampler,
    vad: VoiceDetector,
    segmenter: Segmenter,
    stats: Arc<PipelineStats>,
    /// Track clock: arrival of the first packet, and 16 kHz samples since then.
    base_ms: Option<u64>,
    pos16: u64,
}

impl TrackProcessor {
    /// Builds the chain for one track.
    pub fn new(config: &PipelineConfig, stats: Arc<PipelineStats>) -> Result<Self, PipelineError> {
        Ok(Self {
            reorder: ReorderBuffer::new(config.reorder_depth),
            reorder_seen: ReorderCounters::default(),
            decoder: OpusTrackDecoder::new(config.max_conceal_ms)?,
            resampler: Downsampler::new(2 * 5_760)?,
            vad: VoiceDetector::with_model(config.silero.as_ref(), config.vad_aggressiveness),
            segmenter: Segmenter::new(config.segment.clone()),
            stats,
            base_ms: None,
            pos16: 0,
        })
    }

    /// Takes one packet; segment events become available from [`TrackProcessor::poll_event`].
    pub fn push_packet(&mut self, packet: RtpAudio) {
        self.base_ms.get_or_insert(packet.arrival_ms);
        self.reorder.push(packet.seq, packet);
        self.drain_reorder();
    }

    /// No packet for `silent_ms` since the last one: release held packets and let the silence
    /// count.
    pub fn idle(&mut self, silent_ms: u64) {
        self.reorder.flush();
        self.drain_reorder();
        if let Some(now) = self.now_ms() {
            self.segmenter.advance_to(now + silent_ms);
        }
    }

    /// The stream ended: release held packets and close any utterance in progress.
    pub fn finish(&mut self) {
        self.reorder.flush();
        self.drain_reorder();
        if let Some(now) = self.now_ms() {
            self.segmenter.finish(now);
        }
    }

    /// Whether [`TrackProcessor::idle`] could change anything (packets held, or speech going).
    pub fn wants_idle(&self) -> bool {
        self.reorder.buffered() > 0 || self.segmenter.is_speaking()
    }

    /// Takes the next segment event.
    pub fn poll_event(&mut self) -> Option<SegmentEvent> {
        self.segmenter.poll_event()
    }

    /// The track clock: end of the audio processed so far, ms.
    pub fn now_ms(&self) -> Option<u64> {
        self.base_ms.map(|base| base + self.pos16 / 16)
    }

    fn drain_reorder(&mut self) {
        while let Some(ordered) = self.reorder.pop() {
            let packet = ordered.item;
            match self
                .decoder
                .decode(packet.timestamp, &packet.payload, ordered.lost_before)
            {
                Ok(decoded) => {
                    if decoded.skipped > 0 {
                        // A long hole: drop the partial block before it and move the clock on.
                        let partial = self.resampler.pending() as u64;
                        self.resampler.clear_pending();
                        self.pos16 += (u64::from(decoded.skipped) + partial) / 3;
                    }
                    let Some(base) = self.base_ms else { continue };
                    let Ok(pcm16) = self.resampler.process(decoded.pcm) else {
                        continue;
                    };
                    for frame in pcm16.chunks_exact(FRAME_SAMPLES) {
                        let voiced = self.vad.is_voice(frame);
                        self.segmenter
                            .push_frame(base + self.pos16 / 16, voiced, frame);
                        self.pos16 += FRAME_SAMPLES as u64;
                    }
                }
                Err(_) => PipelineStats::add(&self.stats.decode_errors, 1),
            }
        }
        let seen = self.reorder.counters();
        PipelineStats::add(&self.stats.packets_lost, seen.lost - self.reorder_seen.lost);
        let late = seen.late_or_duplicate - self.reorder_seen.late_or_duplicate;
        PipelineStats::add(&self.stats.packets_late, late);
        self.reorder_seen = seen;
    }
}

/// Starts the pipeline task for one published audio track. It runs until the
/// [`PipelineInput`] paired with `input` is dropped, then finishes the utterance in progress,
/// waits for outstanding final transcripts, publishes them and ends.
///
/// Frames for one utterance come as `UserStartedSpeaking`, `InterimTranscript`*,
/// `UserStoppedSpeaking`, `FinalTranscript`; a final whose job the pool dropped is missing.
pub fn spawn_track_pipeline(
    speaker: SpeakerId,
    room: RoomKey,
    input: mpsc::Receiver<RtpAudio>,
    pool: Arc<TranscriptionPool>,
    frames: broadcast::Sender<Frame>,
    config: PipelineConfig,
) -> Result<JoinHandle<()>, PipelineError> {
    let processor = TrackProcessor::new(&config, Arc::clone(pool.stats()))?;
    let task = TrackTask {
        speaker,
        room,
        pool,
        frames,
        idle: Duration::from_millis(config.idle_ms.max(1)),
        processor,
        segment: 0,
        live: None,
        interim: None,
        finals: VecDeque::new(),
        gaps: 0,
        turn_analysis: config.turn_analysis,
    };
    Ok(tokio::spawn(task.run(input)))
}

/// A transcription the task is waiting for, with the audio span it covers.
struct Pending {
    segment: u64,
    start_ms: u64,
    end_ms: u64,
    reply: oneshot::Receiver<JobOutcome>,
}

struct TrackTask {
    speaker: SpeakerId,
    room: RoomKey,
    pool: Arc<TranscriptionPool>,
    frames: broadcast::Sender<Frame>,
    idle: Duration,
    processor: TrackProcessor,
    /// Numbers utterance segments (a new one at each start and each length cut).
    segment: u64,
    /// The segment still being spoken, whose interims may be shown.
    live: Option<u64>,
    interim: Option<Pending>,
    /// Final jobs, published strictly in order.
    finals: VecDeque<Pending>,
    /// Finals of this track left without a transcript.
    gaps: u64,
    turn_analysis: Option<TurnAnalysis>,
}

impl TrackTask {
    async fn run(mut self, mut input: mpsc::Receiver<RtpAudio>) {
        let mut last_packet = Instant::now();
        let mut idle_at = last_packet + self.idle;
        loop {
            let want_idle = self.processor.wants_idle();
            tokio::select! {
                packet = input.recv() => {
                    let Some(packet) = packet else { break };
                    self.processor.push_packet(packet);
                    last_packet = Instant::now();
                    idle_at = last_packet + self.idle;
                }
                outcome = reply_of(self.finals.front_mut()), if !self.finals.is_empty() => {
                    let pending = self.finals.pop_front().expect("front was polled");
                    self.publish(&pending, outcome, JobKind::Final);
                }
                outcome = reply_of(self.interim.as_mut()), if self.interim.is_some() => {
                    let pending = self.interim.take().expect("interim was polled");
                    if self.live == Some(pending.segment) {
                        self.publish(&pending, outcome, JobKind::Interim);
                    }
                }
                () = tokio::time::sleep_until(idle_at), if want_idle => {
                    let silent_ms = last_packet.elapsed().as_millis() as u64;
                    self.processor.idle(silent_ms);
                    idle_at = Instant::now() + self.idle;
                }
            }
            self.handle_events();
        }
        self.processor.finish();
        self.handle_events();
        self.interim = None;
        while let Some(mut pending) = self.finals.pop_front() {
            let outcome = reply_of(Some(&mut pending)).await;
            self.publish(&pending, outcome, JobKind::Final);
        }
    }

    fn handle_events(&mut self) {
        while let Some(event) = self.processor.poll_event() {
            tracing::trace!(speaker = %self.speaker, ?event, "segment event");
            match event {
                SegmentEvent::Started { at_ms } => {
                    self.segment += 1;
                    self.live = Some(self.segment);
                    self.send(Frame::UserStartedSpeaking(SpeechEdge {
                        speaker: self.speaker.clone(),
                        at_ms,
                    }));
                }
                SegmentEvent::Stopped { at_ms } => {
                    self.live = None;
                    self.interim = None;
                    self.send(Frame::UserStoppedSpeaking(SpeechEdge {
                        speaker: self.speaker.clone(),
                        at_ms,
                    }));
                }
                SegmentEvent::Interim(utterance) => {
                    if self.interim.is_some() {
                        PipelineStats::add(&self.pool.stats().interims_skipped, 1);
                    } else {
                        self.interim = self.submit(JobKind::Interim, utterance);
                    }
                }
                SegmentEvent::Final(utterance) => {
                    // A length cut finalises one segment while speech goes on in the next.
                    self.interim = None;
                    if self.live.is_none() {
                        self.judge_turn(&utterance);
                    }
                    if let Some(pending) = self.submit(JobKind::Final, utterance) {
                        self.finals.push_back(pending);
                    }
                    if self.live.is_some() {
                        self.segment += 1;
                        self.live = Some(self.segment);
                    }
                }
            }
        }
    }

    /// Asks the end-of-turn model about the pause that ended `utterance`, if wanted.
    fn judge_turn(&self, utterance: &Utterance) {
        let Some(t) = &self.turn_analysis else {
            return;
        };
        if !t.wanted.load(Ordering::Relaxed) {
            return;
        }
        let stats = Arc::clone(self.pool.stats());
        if t.in_flight.fetch_add(1, Ordering::AcqRel) >= t.max_in_flight {
            t.in_flight.fetch_sub(1, Ordering::AcqRel);
            PipelineStats::add(&stats.turn_verdicts_skipped, 1);
            tracing::debug!(speaker = %self.speaker, "end-of-turn model busy; pause not judged");
            return;
        }
        let tail = &utterance.pcm[utterance.pcm.len().saturating_sub(TURN_AUDIO_SAMPLES)..];
        let audio = tail.to_vec();
        let (model, in_flight) = (Arc::clone(&t.model), Arc::clone(&t.in_flight));
        let frames = self.frames.clone();
        let speaker = self.speaker.clone();
        let at_ms = utterance.end_ms;
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = model.end_of_turn_probability(&audio);
            in_flight.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(probability) => {
                    PipelineStats::add(&stats.turn_verdicts, 1);
                    tracing::debug!(%speaker, probability, ms = started.elapsed().as_millis() as u64, "end-of-turn verdict");
                    let _ = frames.send(Frame::EndOfTurn(EndOfTurn {
                        speaker,
                        at_ms,
                        probability,
                    }));
                }
                Err(e) => {
                    PipelineStats::add(&stats.turn_verdicts_skipped, 1);
                    tracing::warn!(%speaker, error = %e, "end-of-turn model failed");
                }
            }
        });
    }

    fn submit(&mut self, kind: JobKind, utterance: Utterance) -> Option<Pending> {
        let Utterance {
            start_ms,
            end_ms,
            pcm,
        } = utterance;
        match self.pool.submit(&self.room, kind, pcm) {
            Ok(reply) => Some(Pending {
                segment: self.segment,
                start_ms,
                end_ms,
                reply,
            }),
            Err(e) if kind == JobKind::Final => {
                self.gap(start_ms, end_ms, GapReason::Dropped, &e.to_string());
                None
            }
            Err(e) => {
                tracing::debug!(speaker = %self.speaker, error = %e, "interim not queued");
                None
            }
        }
    }

    /// Speech that will have no transcript: said so in the frames, logged (the first, then
    /// every tenth of a track's gaps, so a busy server does not flood its log).
    fn gap(&mut self, start_ms: u64, end_ms: u64, reason: GapReason, why: &str) {
        self.gaps += 1;
        if self.gaps == 1 || self.gaps.is_multiple_of(10) {
            tracing::warn!(speaker = %self.speaker, room = %self.room, gaps = self.gaps, start_ms, end_ms, ?reason, %why, "speech left without a transcript");
        }
        self.send(Frame::TranscriptGap(Gap {
            speaker: self.speaker.clone(),
            start_ms,
            end_ms,
            reason,
        }));
    }

    fn publish(&mut self, pending: &Pending, outcome: Option<JobOutcome>, kind: JobKind) {
        let is_final = kind == JobKind::Final;
        match outcome.map(|o| o.result) {
            Some(Ok(text)) => {
                let t = Transcript {
                    speaker: self.speaker.clone(),
                    start_ms: pending.start_ms,
                    end_ms: pending.end_ms,
                    text,
                };
                self.send(if is_final {
                    Frame::FinalTranscript(t)
                } else {
                    Frame::InterimTranscript(t)
                })
            }
            Some(Err(e)) if is_final => self.gap(
                pending.start_ms,
                pending.end_ms,
                GapReason::Failed,
                &e.to_string(),
            ),
            Some(Err(e)) => tracing::debug!(speaker = %self.speaker, error = %e, "interim failed"),
            None if is_final => self.gap(
                pending.start_ms,
                pending.end_ms,
                GapReason::Failed,
                "the transcription worker went away",
            ),
            None => {}
        }
    }

    fn send(&self, frame: Frame) {
        // Nobody listening is fine: frames are a live feed, not a log.
        let _ = self.frames.send(frame);
    }
}

/// Awaits a pending job's reply (`None` if the worker dropped it).
async fn reply_of(pending: Option<&mut Pending>) -> Option<JobOutcome> {
    match pending {
        Some(p) => (&mut p.reply).await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vad::tests::{speech_like, white_noise};

    /// `ms` of silence, speech-like sound or loud noise at 48 kHz.
    fn silence(ms: usize) -> Vec<f32> {
        vec![0.0; ms * 48]
    }

    /// RTP packets (20 ms Opus) for `pcm`, arriving from `t0`; `ts_jumps` adds extra RTP time
    /// before the given packet indices (a sender that stopped sending, as with DTX).
    fn packets(pcm: &[f32], t0: u64, ts_jumps: &[(usize, u32)]) -> Vec<RtpAudio> {
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .expect("encoder");
        let mut ts = 1_000u32;
        pcm.chunks_exact(960)
            .enumerate()
            .map(|(i, frame)| {
                ts += ts_jumps
                    .iter()
                    .filter(|j| j.0 == i)
                    .map(|j| j.1)
                    .sum::<u32>();
                let payload = Bytes::from(enc.encode_vec_float(frame, 1500).expect("encode"));
                let packet = RtpAudio {
                    seq: i as u16,
                    timestamp: ts,
                    payload,
                    arrival_ms: t0,
                };
                ts = ts.wrapping_add(960);
                packet
            })
            .collect()
    }

    fn run(packets: Vec<RtpAudio>) -> Vec<SegmentEvent> {
        let mut config = PipelineConfig::default();
        config.segment.interim_ms = 0;
        let mut track = TrackProcessor::new(&config, Arc::default()).expect("builds");
        for packet in packets {
            track.push_packet(packet);
        }
        track.finish();
        std::iter::from_fn(|| track.poll_event()).collect()
    }

    fn bounds(events: &[SegmentEvent]) -> Vec<(u64, u64)> {
        let edges = events.iter().filter_map(|e| match e {
            SegmentEvent::Started { at_ms } | SegmentEvent::Stopped { at_ms } => Some(*at_ms),
            _ => None,
        });
        let edges: Vec<u64> = edges.collect();
        edges.chunks(2).map(|pair| (pair[0], pair[1])).collect()
    }

    #[test]
    fn silence_gives_no_events() {
        assert_eq!(run(packets(&silence(3_000), 0, &[])), []);
    }

    #[test]
    fn speech_like_sound_is_one_utterance_on_the_track_clock() {
        let mut pcm = silence(1_000);
        pcm.extend(speech_like(48_000.0, 72_000));
        pcm.extend(silence(1_000));
        let events = run(packets(&pcm, 5_000, &[]));
        // Voice from 6000 to 7500 ms on the track clock (first arrival 5000).
        let [(started, stopped)] = bounds(&events)[..] else {
            panic!("{events:?}")
        };
        assert!((6_200..=6_240).contains(&started), "{events:?}");
        // The VAD's hangover keeps "voice" 100-150 ms past the sound.
        assert!((8_000..=8_160).contains(&stopped), "{events:?}");
        let Some(SegmentEvent::Final(u)) = events.last() else {
            panic!("{events:?}")
        };
        assert!(u.start_ms.abs_diff(5_700) <= 20 && (7_700..=7_860).contains(&u.end_ms));
        assert_eq!(u.pcm.len() as u64, u.duration_ms() * 16);
    }

    #[test]
    fn loud_noise_reads_as_speech() {
        // Documented VAD limitation: broadband noise at -10 dBFS is "voice".
        let mut pcm = silence(500);
        pcm.extend(white_noise(48_000, 0.3, 3));
        pcm.extend(silence(1_000));
        assert_eq!(bounds(&run(packets(&pcm, 0, &[]))).len(), 1);
    }

    #[test]
    fn time_follows_rtp_timestamps_across_a_sending_gap() {
        // 1 s of speech, then the sender goes quiet for 3 s of RTP time (no packets), then
        // speaks again: the first utterance stops at the exact rule time, the second starts
        // 3 s later than packet count alone would say.
        let speech = speech_like(48_000.0, 48_000);
        let mut pcm = speech.clone();
        pcm.extend(&speech);
        pcm.extend(silence(1_000));
        let events = run(packets(&pcm, 0, &[(50, 3 * 48_000)]));
        let got = bounds(&events);
        assert_eq!(got.len(), 2, "{events:?}");
        assert!((1_480..=1_520).contains(&got[0].1), "{got:?}");
        assert!((4_200..=4_240).contains(&got[1].0), "{got:?}");
    }
}
