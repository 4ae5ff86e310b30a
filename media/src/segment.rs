//! The speech/silence state machine: turns per-frame voice decisions into utterances.
//!
//! Pure and clock-injected: feed 10 ms frames of 16 kHz audio with their start time and the
//! VAD's verdict, tell it when time passes without audio, and drain [`SegmentEvent`]s.
//!
//! The rule, with times in ms on the caller's clock and frames covering `[t, t + 10)`:
//! - Speech **starts** when voiced frames have run unbroken for `start_ms`; `Started` carries
//!   the end of the frame that completed the run (the moment the rule fired).
//! - The utterance's audio begins `pre_roll_ms` before the run began (as far as the pre-roll
//!   history reaches), so the first syllable is not clipped.
//! - Speech **stops** once `end_ms` has passed since the last voiced frame ended; `Stopped`
//!   carries exactly that time (last voice + `end_ms`), whether frames or a gap brought it.
//! - The final utterance ends `post_roll_ms` after the last voiced frame.
//! - While speech lasts, an `Interim` of the utterance so far is asked for each time
//!   `interim_ms` of audio has passed since the start (or since the last interim or cut). It
//!   carries only the last `interim_window_ms` of that audio, so what it costs to transcribe
//!   stays bounded however long the utterance runs; the `Final` always has all of it.
//! - An utterance reaching `max_utterance_ms` is cut: a `Final` is emitted without `Stopped`,
//!   and the speech goes on as a new utterance starting at the cut.
//!
//! So events for one stretch of speech come as `Started, Interim*, (Final, Interim*)*, Stopped,
//! Final`. Time without audio (a gap in `push_frame` times, or [`Segmenter::advance_to`]) is
//! silence; inside speech it is filled with zeros so utterance audio stays aligned with time.

use std::collections::VecDeque;

use crate::vad::{FRAME_MS, FRAME_SAMPLES};

/// 16 kHz samples per millisecond.
const SAMPLES_PER_MS: u64 = 16;

/// Endpointing settings. All durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    /// Unbroken voice needed before speech counts as started.
    pub start_ms: u64,
    /// Silence after the last voice before speech counts as stopped.
    pub end_ms: u64,
    /// Audio kept from before the voice began, so first words are not clipped.
    pub pre_roll_ms: u64,
    /// Audio kept after the last voice (at most `end_ms`).
    pub post_roll_ms: u64,
    /// Audio between interim transcription requests; 0 turns interims off.
    pub interim_ms: u64,
    /// Most audio an interim carries: the latest this many ms of the utterance (at least one
    /// frame). Bounds the cost of re-transcribing a long utterance every `interim_ms`.
    pub interim_window_ms: u64,
    /// Longest utterance before it is cut and finalised.
    pub max_utterance_ms: u64,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            start_ms: 200,
            end_ms: 500,
            pre_roll_ms: 300,
            post_roll_ms: 200,
            interim_ms: 1_000,
            interim_window_ms: 10_000,
            max_utterance_ms: 30_000,
        }
    }
}

/// A stretch of one speaker's audio.
#[derive(Clone, PartialEq)]
pub struct Utterance {
    /// Where the audio starts, ms.
    pub start_ms: u64,
    /// Where the audio ends, ms.
    pub end_ms: u64,
    /// 16 kHz mono samples covering `start_ms..end_ms`.
    pub pcm: Vec<f32>,
}

impl std::fmt::Debug for Utterance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Samples would flood logs and test failures; their count is what matters there.
        f.debug_struct("Utterance")
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("samples", &self.pcm.len())
            .finish()
    }
}

impl Utterance {
    /// Duration of the audio in ms.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms - self.start_ms
    }
}

/// What the segmenter decided.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SegmentEvent {
    /// Speech started; `at_ms` is when the start rule fired.
    Started {
        /// When, ms.
        at_ms: u64,
    },
    /// The utterance so far (its last `interim_window_ms` at most), for a provisional
    /// transcript.
    Interim(Utterance),
    /// Speech stopped; `at_ms` is the last voice plus `end_ms`.
    Stopped {
        /// When, ms.
        at_ms: u64,
    },
    /// A finished utterance (after `Stopped`, or at the length cap).
    Final(Utterance),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle {
        voiced_run_ms: u64,
    },
    Speaking {
        last_voice_end_ms: u64,
        since_interim_ms: u64,
    },
}

/// Speech/silence state machine and utterance assembler for one speaker.
#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmentConfig,
    state: State,
    /// End of the audio (or silence) accounted for so far.
    clock_ms: Option<u64>,
    /// Recent audio while idle, ending at `clock_ms`: the pre-roll source.
    history: VecDeque<f32>,
    history_cap: usize,
    utterance: Vec<f32>,
    utterance_start_ms: u64,
    out: VecDeque<SegmentEvent>,
}

impl Segmenter {
    /// A segmenter with these settings (`post_roll_ms` is capped at `end_ms`).
    pub fn new(mut cfg: SegmentConfig) -> Self {
        cfg.post_roll_ms = cfg.post_roll_ms.min(cfg.end_ms);
        cfg.max_utterance_ms = cfg.max_utterance_ms.max(FRAME_MS);
        cfg.interim_window_ms = cfg.interim_window_ms.max(FRAME_MS);
        let history_cap = ((cfg.pre_roll_ms + cfg.start_ms) * SAMPLES_PER_MS) as usize;
        // Room for a few seconds up front; longer utterances grow it once.
        let initial = (cfg.max_utterance_ms.min(5_000) * SAMPLES_PER_MS) as usize;
        Self {
            cfg,
            state: State::Idle { voiced_run_ms: 0 },
            clock_ms: None,
            history: VecDeque::with_capacity(history_cap + FRAME_SAMPLES),
            history_cap,
            utterance: Vec::with_capacity(initial),
            utterance_start_ms: 0,
            out: VecDeque::with_capacity(8),
        }
    }

    /// Whether speech is in progress.
    pub fn is_speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// The time up to which audio or silence has been accounted for.
    pub fn clock_ms(&self) -> Option<u64> {
        self.clock_ms
    }

    /// While speaking: the time at which, absent more voice, speech will count as stopped.
    /// Call [`Segmenter::advance_to`] then if no audio has come.
    pub fn deadline_ms(&self) -> Option<u64> {
        match self.state {
            State::Speaking {
                last_voice_end_ms, ..
            } => Some(last_voice_end_ms + self.cfg.end_ms),
            State::Idle { .. } => None,
        }
    }

    /// Feeds one 10 ms frame (160 samples at 16 kHz) starting at `at_ms`, with the VAD's verdict.
    /// A start earlier than the clock is taken as the clock (time never goes back).
    pub fn push_frame(&mut self, at_ms: u64, voiced: bool, pcm: &[f32]) {
        debug_assert_eq!(pcm.len(), FRAME_SAMPLES, "segmenter frames are 10 ms");
        let start = self.clock_ms.map_or(at_ms, |clock| at_ms.max(clock));
        self.advance_to(start);
        let end = start + FRAME_MS;
        self.clock_ms = Some(end);
        match &mut self.state {
            State::Idle { voiced_run_ms } => {
                *voiced_run_ms = if voiced { *voiced_run_ms + FRAME_MS } else { 0 };
                let run = *voiced_run_ms;
                self.remember(pcm);
                if run >= self.cfg.start_ms {
                    self.start(end);
                }
            }
            State::Speaking {
                last_voice_end_ms,
                since_interim_ms,
            } => {
                self.utterance.extend_from_slice(pcm);
                if voiced {
                    *last_voice_end_ms = end;
                }
                *since_interim_ms += FRAME_MS;
                let (last_voice, since_interim) = (*last_voice_end_ms, *since_interim_ms);
                if end - last_voice >= self.cfg.end_ms {
                    self.stop(last_voice + self.cfg.end_ms);
                } else if end - self.utterance_start_ms >= self.cfg.max_utterance_ms {
                    self.cut(end);
                } else if self.cfg.interim_ms > 0 && since_interim >= self.cfg.interim_ms {
                    self.interim(end);
                }
            }
        }
    }

    /// Time has reached `now_ms` with no audio since the last frame: it counts as silence.
    pub fn advance_to(&mut self, now_ms: u64) {
        let Some(clock) = self.clock_ms else {
            self.clock_ms = Some(now_ms);
            return;
        };
        if now_ms <= clock {
            return;
        }
        match self.state {
            State::Idle { .. } => {
                // Audio before a hole is not pre-roll for anything after it.
                self.history.clear();
                self.state = State::Idle { voiced_run_ms: 0 };
            }
            State::Speaking {
                last_voice_end_ms,
                since_interim_ms,
            } => {
                let stop_at = last_voice_end_ms + self.cfg.end_ms;
                self.pad_silence(now_ms.min(stop_at).saturating_sub(clock));
                if now_ms >= stop_at {
                    self.clock_ms = Some(stop_at);
                    self.stop(stop_at);
                } else {
                    let since_interim_ms = since_interim_ms + (now_ms - clock);
                    self.state = State::Speaking {
                        last_voice_end_ms,
                        since_interim_ms,
                    };
                }
            }
        }
        self.clock_ms = Some(now_ms);
    }

    /// The stream ended at `now_ms`: any speech in progress stops there.
    pub fn finish(&mut self, now_ms: u64) {
        self.advance_to(now_ms);
        if self.is_speaking() {
            let at = self.clock_ms.unwrap_or(now_ms);
            self.stop(at);
        }
    }

    /// Takes the next event, oldest first.
    pub fn poll_event(&mut self) -> Option<SegmentEvent> {
        self.out.pop_front()
    }

    fn remember(&mut self, pcm: &[f32]) {
        self.history.extend(pcm.iter().copied());
        let excess = self.history.len().saturating_sub(self.history_cap);
        self.history.drain(..excess);
    }

    fn pad_silence(&mut self, ms: u64) {
        let len = self.utterance.len() + (ms * SAMPLES_PER_MS) as usize;
        self.utterance.resize(len, 0.0);
    }

    fn start(&mut self, now: u64) {
        let onset = now - self.cfg.start_ms;
        let history_start = now - self.history.len() as u64 / SAMPLES_PER_MS;
        let start = onset
            .saturating_sub(self.cfg.pre_roll_ms)
            .max(history_start);
        let skip = ((start - history_start) * SAMPLES_PER_MS) as usize;
        self.utterance.clear();
        self.utterance
            .extend(self.history.iter().skip(skip).copied());
        self.history.clear();
        self.utterance_start_ms = start;
        self.state = State::Speaking {
            last_voice_end_ms: now,
            since_interim_ms: 0,
        };
        self.out.push_back(SegmentEvent::Started { at_ms: now });
    }

    fn stop(&mut self, at: u64) {
        let State::Speaking {
            last_voice_end_ms, ..
        } = self.state
        else {
            return;
        };
        let clock = self.clock_ms.unwrap_or(at);
        let end = (last_voice_end_ms + self.cfg.post_roll_ms)
            .min(clock)
            .max(self.utterance_start_ms);
        let utterance = self.take_utterance(end);
        self.state = State::Idle { voiced_run_ms: 0 };
        self.history.clear();
        self.out.push_back(SegmentEvent::Stopped { at_ms: at });
        self.out.push_back(SegmentEvent::Final(utterance));
    }

    fn cut(&mut self, now: u64) {
        let utterance = self.take_utterance(now);
        self.utterance.clear();
        self.utterance_start_ms = now;
        if let State::Speaking {
            since_interim_ms, ..
        } = &mut self.state
        {
            *since_interim_ms = 0;
        }
        self.out.push_back(SegmentEvent::Final(utterance));
    }

    fn interim(&mut self, now: u64) {
        let from = now.saturating_sub(self.cfg.interim_window_ms);
        let utterance = self.snapshot(from, now);
        if let State::Speaking {
            since_interim_ms, ..
        } = &mut self.state
        {
            *since_interim_ms = 0;
        }
        self.out.push_back(SegmentEvent::Interim(utterance));
    }

    /// Copies the utterance audio from `from` (or its start, if later) up to `end`.
    fn snapshot(&self, from: u64, end: u64) -> Utterance {
        let start = from.max(self.utterance_start_ms).min(end);
        let offset = |t: u64| {
            let at = ((t - self.utterance_start_ms) * SAMPLES_PER_MS) as usize;
            at.min(self.utterance.len())
        };
        let pcm = self.utterance[offset(start)..offset(end)].to_vec();
        Utterance {
            start_ms: start,
            end_ms: end,
            pcm,
        }
    }

    fn take_utterance(&mut self, end: u64) -> Utterance {
        let utterance = self.snapshot(self.utterance_start_ms, end);
        self.utterance.clear();
        utterance
    }
}

#[cfg(test)]
mod tests {
    use super::SegmentEvent::{Final, Interim, Started, Stopped};
    use super::*;
    use E::{Fin, Int, Start, Stop};

    /// Frames whose samples all hold the frame's start time, so tests can see which audio an
    /// utterance carries.
    fn frame(t: u64) -> [f32; FRAME_SAMPLES] {
        [t as f32; FRAME_SAMPLES]
    }

    /// Feeds contiguous frames from `t`: each `(ms, voiced)` run in turn. Returns the end time.
    fn feed(seg: &mut Segmenter, mut t: u64, runs: &[(u64, bool)]) -> u64 {
        for &(ms, voiced) in runs {
            for _ in 0..ms / FRAME_MS {
                seg.push_frame(t, voiced, &frame(t));
                t += FRAME_MS;
            }
        }
        t
    }

    fn events(seg: &mut Segmenter) -> Vec<SegmentEvent> {
        std::iter::from_fn(|| seg.poll_event()).collect()
    }

    /// Events with utterances reduced to their bounds, for compact assertions.
    #[derive(Debug, PartialEq)]
    enum E {
        Start(u64),
        Int(u64, u64),
        Stop(u64),
        Fin(u64, u64),
    }

    fn summary(seg: &mut Segmenter) -> Vec<E> {
        let checked = |u: Utterance| {
            let expected = u.duration_ms() * SAMPLES_PER_MS;
            assert_eq!(u.pcm.len() as u64, expected, "{}..{}", u.start_ms, u.end_ms);
            (u.start_ms, u.end_ms)
        };
        let summarise = |e: SegmentEvent| match e {
            Started { at_ms } => Start(at_ms),
            Stopped { at_ms } => Stop(at_ms),
            Interim(u) => {
                let (from, to) = checked(u);
                Int(from, to)
            }
            Final(u) => {
                let (from, to) = checked(u);
                Fin(from, to)
            }
        };
        events(seg).into_iter().map(summarise).collect()
    }

    /// Feeds `runs` from time 0 with `interim_ms` set, and summarises what came out.
    fn run(interim_ms: u64, runs: &[(u64, bool)]) -> Vec<E> {
        let mut seg = Segmenter::new(SegmentConfig {
            interim_ms,
            ..SegmentConfig::default()
        });
        feed(&mut seg, 0, runs);
        summary(&mut seg)
    }

    const V: bool = true;
    const S: bool = false;

    #[test]
    fn voice_300_then_silence_600() {
        let got = run(1000, &[(300, V), (600, S)]);
        assert_eq!(got, [Start(200), Stop(800), Fin(0, 500)]);
    }

    #[test]
    fn a_blip_shorter_than_start_ms_is_ignored() {
        let got = run(1000, &[(190, V), (1000, S), (190, V), (10, S), (190, V)]);
        assert_eq!(got, []);
    }

    #[test]
    fn one_unvoiced_frame_restarts_the_run() {
        let got = run(0, &[(150, V), (10, S), (200, V), (500, S)]);
        assert_eq!(got, [Start(360), Stop(860), Fin(0, 560)]);
    }

    #[test]
    fn pauses_shorter_than_end_ms_keep_one_utterance() {
        let got = run(0, &[(500, V), (490, S), (300, V), (500, S)]);
        assert_eq!(got, [Start(200), Stop(1790), Fin(0, 1490)]);
    }

    #[test]
    fn interims_every_second_then_final() {
        let got = run(1000, &[(2500, V), (600, S)]);
        let want = [
            Start(200),
            Int(0, 1200),
            Int(0, 2200),
            Stop(3000),
            Fin(0, 2700),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn interims_of_a_long_utterance_carry_only_the_last_window() {
        let mut seg = Segmenter::new(SegmentConfig::default());
        let end = feed(&mut seg, 0, &[(29_900, V)]);
        seg.finish(end);
        let evs = events(&mut seg);
        let interims: Vec<&Utterance> = evs
            .iter()
            .filter_map(|e| match e {
                Interim(u) => Some(u),
                _ => None,
            })
            .collect();
        assert_eq!(interims.len(), 29, "one a second after the start");
        for u in &interims {
            assert!(u.pcm.len() <= 160_000, "{u:?}");
            assert_eq!(
                u.pcm.len() as u64,
                u.duration_ms() * SAMPLES_PER_MS,
                "{u:?}"
            );
            // The latest audio: samples hold their frame's start time.
            assert_eq!(u.start_ms, u.end_ms.saturating_sub(10_000), "{u:?}");
            assert_eq!(u.pcm[0], u.start_ms as f32, "{u:?}");
            assert_eq!(
                u.pcm[u.pcm.len() - 1],
                (u.end_ms - FRAME_MS) as f32,
                "{u:?}"
            );
        }
        let last = interims[interims.len() - 1];
        assert_eq!((last.start_ms, last.end_ms), (19_200, 29_200));
        let Some(Final(u)) = evs.last() else {
            panic!("{evs:?}")
        };
        assert_eq!((u.start_ms, u.end_ms, u.pcm.len()), (0, 29_900, 478_400));
    }

    #[test]
    fn speech_past_the_length_cap_is_cut_with_windowed_interims() {
        let mut seg = Segmenter::new(SegmentConfig::default());
        feed(&mut seg, 0, &[(45_000, V), (500, S)]);
        let got = summary(&mut seg);
        let finals: Vec<&E> = got.iter().filter(|e| matches!(e, Fin(..))).collect();
        assert_eq!(finals, [&Fin(0, 30_000), &Fin(30_000, 45_200)]);
        for e in &got {
            if let Int(from, to) = e {
                assert!(to - from <= 10_000, "{e:?}");
            }
        }
    }

    #[test]
    fn long_speech_is_cut_at_the_cap() {
        let cfg = SegmentConfig {
            max_utterance_ms: 1000,
            interim_ms: 0,
            ..Default::default()
        };
        let mut seg = Segmenter::new(cfg);
        feed(&mut seg, 0, &[(2500, V), (500, S)]);
        let want = [
            Start(200),
            Fin(0, 1000),
            Fin(1000, 2000),
            Stop(3000),
            Fin(2000, 2700),
        ];
        assert_eq!(summary(&mut seg), want);
    }

    #[test]
    fn pre_roll_reaches_back_before_the_voice() {
        let mut seg = Segmenter::new(SegmentConfig::default());
        let end = feed(&mut seg, 0, &[(1000, S), (300, V)]);
        assert_eq!(seg.poll_event(), Some(Started { at_ms: 1200 }));
        feed(&mut seg, end, &[(600, S)]);
        let evs = events(&mut seg);
        assert_eq!(evs[0], Stopped { at_ms: 1800 });
        let Final(u) = &evs[1] else { panic!("{evs:?}") };
        assert_eq!((u.start_ms, u.end_ms, u.pcm.len()), (700, 1500, 12_800));
        assert_eq!(
            (u.pcm[0], u.pcm[12_799]),
            (700.0, 1490.0),
            "audio aligned with time"
        );
    }

    #[test]
    fn a_hole_in_the_input_ends_speech_at_the_exact_time() {
        let mut seg = Segmenter::new(SegmentConfig::default());
        feed(&mut seg, 0, &[(400, V)]);
        feed(&mut seg, 5000, &[(100, S)]);
        let evs = events(&mut seg);
        assert_eq!(evs[1], Stopped { at_ms: 900 });
        let Final(u) = &evs[2] else { panic!("{evs:?}") };
        assert_eq!((u.start_ms, u.end_ms), (0, 600));
        let edge = (u.pcm[6_399], u.pcm[6_400], u.pcm.len());
        assert_eq!(edge, (390.0, 0.0, 9_600), "zeros fill the hole");
        assert_eq!(seg.clock_ms(), Some(5100));
    }

    #[test]
    fn a_short_hole_inside_speech_is_silence_padding() {
        let mut seg = Segmenter::new(SegmentConfig {
            interim_ms: 0,
            ..Default::default()
        });
        feed(&mut seg, 0, &[(400, V)]);
        feed(&mut seg, 700, &[(300, V), (500, S)]);
        assert_eq!(summary(&mut seg), [Start(200), Stop(1500), Fin(0, 1200)]);
    }

    #[test]
    fn a_hole_while_idle_breaks_the_voiced_run_and_the_pre_roll() {
        let mut seg = Segmenter::new(SegmentConfig::default());
        feed(&mut seg, 0, &[(150, V)]);
        feed(&mut seg, 300, &[(200, V), (500, S)]);
        assert_eq!(summary(&mut seg), [Start(500), Stop(1000), Fin(300, 700)]);
    }

    #[test]
    fn advance_to_without_audio_stops_at_the_deadline() {
        let mut seg = Segmenter::new(SegmentConfig::default());
        feed(&mut seg, 0, &[(400, V)]);
        assert_eq!(seg.deadline_ms(), Some(900));
        seg.advance_to(700);
        assert_eq!(summary(&mut seg), [Start(200)]);
        seg.advance_to(2000);
        assert_eq!(summary(&mut seg), [Stop(900), Fin(0, 600)]);
        assert_eq!(seg.deadline_ms(), None);
    }

    #[test]
    fn finish_closes_speech_in_progress() {
        let mut seg = Segmenter::new(SegmentConfig::default());
        let end = feed(&mut seg, 0, &[(400, V)]);
        seg.finish(end);
        assert_eq!(summary(&mut seg), [Start(200), Stop(400), Fin(0, 400)]);
        seg.finish(end + 1000);
        assert_eq!(summary(&mut seg), []);
    }

    #[test]
    fn frames_from_the_past_are_placed_at_the_clock() {
        let mut seg = Segmenter::new(SegmentConfig::default());
        feed(&mut seg, 1000, &[(300, V)]);
        feed(&mut seg, 1100, &[(500, S)]);
        assert_eq!(
            summary(&mut seg),
            [Start(1200), Stop(1800), Fin(1000, 1500)]
        );
    }
}
