//! The transcription worker pool: a few OS threads running the (blocking, CPU-heavy)
//! [`Transcriber`], fed by per-room queues under per-room and per-server admission limits.
//!
//! Admission happens at submit time and never waits: a job over a limit is dropped and
//! counted. Results come back on a tokio oneshot channel, so async code awaits them without
//! touching a worker; a job whose receiver was dropped before a worker reached it is skipped.
//!
//! Which job a free worker takes:
//! - **Finals before interims.** An interim starts only when no final is queued in any room,
//!   so a final never waits behind a queued interim.
//! - **Rooms take turns, weighted by audio.** Finals are served by deficit round robin: each
//!   room with queued finals gets one second of audio credit per round ([`QUANTUM_SAMPLES`])
//!   and spends it on its oldest final, which costs its duration (at least one second). A
//!   backlogged room therefore gets the same seconds of transcription as any other, however
//!   many jobs it queues: a room with one utterance waits for about that utterance's length
//!   (plus a second and at most one job) of each other busy room's audio, never for a whole
//!   backlog. Within a room, finals run in the order they came.
//! - **Interims are bounded.** One is admitted only while a worker is idle (fewer jobs in
//!   flight than workers), they run oldest first, and the segmenter caps their audio at
//!   `interim_window_ms` (the last 10 s by default). A running job is never interrupted, so an
//!   interim delays a final by at most its own run time: once a final is queued no interim
//!   starts until every final queue is empty, and each interim already running finishes
//!   within the time of one capped window.
//!
//! Every job is bounded: it gets a deadline of [`DEADLINE_FLOOR`] plus
//! [`PoolConfig::deadline_factor`] × its audio, and is stopped midway (through the engine's
//! abort check) when the deadline passes or when nobody waits for its result any more (an
//! interim superseded by the utterance's end, a track that went away), counted in
//! `transcriptions_aborted`. So a final queued behind a running interim waits only until the
//! pipeline drops that interim, which it does when the utterance ends.
//!
//! Workers run one nice level below the rest of the process (Linux; inherited by the threads
//! whisper.cpp starts, about 45% of a normal thread's CPU share when both compete), so packet
//! forwarding on tokio threads wins ties for the CPU. Not more: against other processes on a
//! busy machine a nicer worker is starved. Measured with `scripts/caption-check.sh --load`
//! (a CPU hog per core): at 4 levels the loaded p95 from end of speech to caption was 3.3 s,
//! at 2 levels 3.3 s, at 1 level 2.6-2.7 s; at 10 levels finals were not done 20 s after the
//! speaker left. See
//! [`ThreadBudget`] for sizing the pool so that the two do not oversubscribe the cores in the
//! first place.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::transcribe::{Limits, TranscribeError, Transcriber};

/// Which room a job's audio belongs to, for the per-room limit and turns (the SFU passes its
/// room id).
pub type RoomKey = Arc<str>;

/// Audio credit a room with queued finals gets per round: one second of 16 kHz samples. Also
/// the least a final costs, since a short job still pays the engine's fixed overhead.
pub const QUANTUM_SAMPLES: usize = 16_000;

/// How many nice levels below the rest of the process the workers run.
const WORKER_NICE: i32 = 1;

/// A default split of the CPU between transcription and everything else (tokio's worker
/// threads, one per core by default, forwarding media), such that the two together do not
/// oversubscribe the cores: a quarter of the cores (at least one) is left to the rest, and
/// transcription gets the others as `workers` jobs of `threads_per_job` threads each.
///
/// Oversubscribing hurts both sides: whisper.cpp's threads spin at barriers between steps, so
/// a preempted one stalls its siblings, and the forwarding threads lose their core to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadBudget {
    /// Transcriptions run at once: [`PoolConfig::workers`].
    pub workers: usize,
    /// Threads per transcription: the `threads` of
    /// [`WhisperTranscriber::load`](crate::transcribe::WhisperTranscriber::load).
    pub threads_per_job: usize,
}

impl ThreadBudget {
    /// Threads transcription may use on `cores` cores: all but a quarter of them (at least
    /// one kept back), and at least one.
    pub fn transcription_threads(cores: usize) -> usize {
        let cores = cores.max(1);
        (cores - (cores / 4).max(1)).max(1)
    }

    /// The default for `cores` cores: two threads per transcription (low latency for one
    /// utterance) where the budget allows, and as many workers as fit.
    pub fn for_cores(cores: usize) -> Self {
        Self::with_threads_per_job(cores, Self::transcription_threads(cores).min(2))
    }

    /// As many workers of `threads_per_job` threads as fit on `cores` cores (at least one).
    pub fn with_threads_per_job(cores: usize, threads_per_job: usize) -> Self {
        let threads_per_job = threads_per_job.max(1);
        Self {
            workers: (Self::transcription_threads(cores) / threads_per_job).max(1),
            threads_per_job,
        }
    }

    /// [`ThreadBudget::for_cores`] with this machine's available parallelism.
    pub fn detect() -> Self {
        Self::for_cores(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

/// Pool sizing and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Worker threads; default: [`ThreadBudget::detect`]'s workers (pair it with that
    /// budget's threads per job).
    pub workers: usize,
    /// Jobs queued or running across the server before new ones are dropped; default 16 per
    /// worker (a final waits rather than being lost, which is what a transcript needs).
    pub max_per_server: usize,
    /// Final jobs queued or running for one room before its new ones are dropped; default
    /// twice the workers, at least 8, so one busy room cannot take the whole queue.
    pub max_per_room: usize,
    /// A job is stopped after this many times its audio's length (plus
    /// [`DEADLINE_FLOOR`]): a normal transcription takes a tenth of it on an idle machine,
    /// so only a runaway decode (non-speech audio, repetition) or a starved worker reaches it.
    pub deadline_factor: f32,
}

/// Longest context prompt kept per room. Whisper reads at most half its 448-token context
/// from a prompt; 400 characters is about 100 tokens, which leaves the rest for the speech.
pub const MAX_PROMPT_CHARS: usize = 400;

/// Time every job gets on top of [`PoolConfig::deadline_factor`] × its audio.
pub const DEADLINE_FLOOR: Duration = Duration::from_secs(2);

/// Default of [`PoolConfig::deadline_factor`].
pub const DEFAULT_DEADLINE_FACTOR: f32 = 3.0;

/// How long a job of `samples` (16 kHz) may run.
pub fn job_deadline(config: &PoolConfig, samples: usize) -> Duration {
    let audio = samples as f32 / 16_000.0;
    DEADLINE_FLOOR + Duration::from_secs_f32((audio * config.deadline_factor.max(0.0)).min(600.0))
}

impl Default for PoolConfig {
    fn default() -> Self {
        let workers = ThreadBudget::detect().workers;
        Self {
            workers,
            max_per_server: workers * 16,
            max_per_room: (workers * 2).max(8),
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        }
    }
}
/// Counters for the whole audio pipeline, shared by every track and the pool.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// RTP packets dropped because a track's input queue was full.
    pub input_dropped: AtomicU64,
    /// RTP packets never received in time (concealed or skipped).
    pub packets_lost: AtomicU64,
    /// RTP packets that came too late for the reorder buffer, or twice.
    pub packets_late: AtomicU64,
    /// Opus payloads that failed to decode.
    pub decode_errors: AtomicU64,
    /// Final transcription jobs dropped by the pool's limits.
    pub jobs_dropped: AtomicU64,
    /// Interim transcription requests not run (pool busy, or one already in flight).
    pub interims_skipped: AtomicU64,
    /// Jobs skipped by a worker because nobody waited for the result any more.
    pub jobs_cancelled: AtomicU64,
    /// Transcriptions completed successfully.
    pub transcriptions_done: AtomicU64,
    /// Transcriptions that returned an error (or panicked).
    pub transcription_errors: AtomicU64,
    /// Transcriptions stopped midway: past their deadline, or abandoned while running.
    pub transcriptions_aborted: AtomicU64,
    /// Total time spent transcribing, in microseconds.
    pub transcription_micros: AtomicU64,
    /// Pauses an end-of-turn model judged.
    pub turn_verdicts: AtomicU64,
    /// Pauses left unjudged: the model was busy with others, or failed (logged).
    pub turn_verdicts_skipped: AtomicU64,
}

impl PipelineStats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Real-time or provisional: decides which admission limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A provisional transcript of speech still going on; admitted only while a worker is
    /// idle, and started only when no final is queued.
    Interim,
    /// The transcript of a finished utterance.
    Final,
}

/// Why a job was not accepted; it has been counted in [`PipelineStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The server-wide limit (or, for an interim, the idle-worker rule) refused it.
    #[error("transcription pool is full")]
    ServerBusy,
    /// The room's limit refused it.
    #[error("room has too many transcriptions in flight")]
    RoomBusy,
    /// The pool's workers are gone.
    #[error("transcription pool is shut down")]
    Closed,
}

/// What a worker returns for one job.
#[derive(Debug)]
pub struct JobOutcome {
    /// The text, or the engine's error.
    pub result: Result<String, TranscribeError>,
    /// How long the transcription took.
    pub elapsed: Duration,
}

struct Job {
    room: RoomKey,
    kind: JobKind,
    pcm: Vec<f32>,
    reply: oneshot::Sender<JobOutcome>,
}

impl Job {
    /// What the job costs a room's round-robin credit: its audio, at least one quantum.
    fn cost(&self) -> u64 {
        self.pcm.len().max(QUANTUM_SAMPLES) as u64
    }
}

/// One room's queued finals, oldest first, and its round-robin credit in samples.
struct RoomQueue {
    jobs: VecDeque<Job>,
    deficit: u64,
    /// Whether the room got its quantum for the turn it is having (it is at the front).
    credited: bool,
}

impl RoomQueue {
    /// Rounds of credit the oldest job still needs.
    fn rounds_short(&self) -> u64 {
        let cost = self.jobs.front().map_or(0, Job::cost);
        cost.saturating_sub(self.deficit)
            .div_ceil(QUANTUM_SAMPLES as u64)
    }
}

/// The queues and the load, under one lock taken once or twice per job (never per packet).
#[derive(Default)]
struct Scheduler {
    /// Rooms with queued finals.
    queues: HashMap<RoomKey, RoomQueue>,
    /// The same rooms in round-robin order: it is the front one's turn.
    turns: VecDeque<RoomKey>,
    /// Queued interims, oldest first.
    interims: VecDeque<Job>,
    /// Jobs queued or running.
    total: usize,
    /// Finals queued or running, per room. Interims are not counted: they are bounded
    /// server-wide by the idle-worker rule, and must never be the reason a final (a transcript
    /// line) is dropped.
    room_finals: HashMap<RoomKey, usize>,
    /// Worker threads still running.
    live_workers: usize,
    /// The pool was dropped: workers drain the queues and exit.
    closed: bool,
}

impl Scheduler {
    fn admit(
        &mut self,
        cfg: &PoolConfig,
        room: &RoomKey,
        kind: JobKind,
    ) -> Result<(), SubmitError> {
        if self.closed || self.live_workers == 0 {
            return Err(SubmitError::Closed);
        }
        let server_limit = match kind {
            JobKind::Final => cfg.max_per_server,
            // Fewer jobs in flight than workers: one is idle.
            JobKind::Interim => cfg.workers.min(cfg.max_per_server),
        };
        if self.total >= server_limit {
            return Err(SubmitError::ServerBusy);
        }
        if kind == JobKind::Final {
            let in_room = self.room_finals.get(room).copied().unwrap_or(0);
            if in_room >= cfg.max_per_room {
                return Err(SubmitError::RoomBusy);
            }
            self.room_finals.insert(Arc::clone(room), in_room + 1);
        }
        self.total += 1;
        Ok(())
    }

    /// Queues an admitted job.
    fn push(&mut self, job: Job) {
        if job.kind == JobKind::Interim {
            self.interims.push_back(job);
            return;
        }
        match self.queues.get_mut(&job.room) {
            Some(queue) => queue.jobs.push_back(job),
            None => {
                // A room joins the round at the back, with no credit carried over.
                let room = Arc::clone(&job.room);
                self.turns.push_back(Arc::clone(&room));
                let queue = RoomQueue {
                    jobs: VecDeque::from([job]),
                    deficit: 0,
                    credited: false,
                };
                self.queues.insert(room, queue);
            }
        }
    }

    /// A job left the pool (done, skipped or abandoned).
    fn release(&mut self, room: &RoomKey, kind: JobKind) {
        self.total -= 1;
        if kind == JobKind::Interim {
            return;
        }
        if let Some(n) = self.room_finals.get_mut(room) {
            *n -= 1;
            if *n == 0 {
                self.room_finals.remove(room);
            }
        }
    }

    /// The job a free worker should run: finals first, by turns, then the oldest interim.
    /// Jobs nobody waits for any more are released and counted on the way.
    fn next(&mut self, stats: &PipelineStats) -> Option<Job> {
        if let Some(job) = self.next_final(stats) {
            return Some(job);
        }
        while let Some(job) = self.interims.pop_front() {
            if !self.skip_if_abandoned(&job, stats) {
                return Some(job);
            }
        }
        None
    }

    /// Deficit round robin over the rooms with queued finals.
    fn next_final(&mut self, stats: &PipelineStats) -> Option<Job> {
        // Turns in a row that ended without serving anything.
        let mut unserved = 0;
        loop {
            let key = Arc::clone(self.turns.front()?);
            let queue = self
                .queues
                .get_mut(&key)
                .expect("a room in turns has a queue");
            let head = queue.jobs.front().expect("a queue in turns is not empty");
            let (abandoned, cost) = (head.reply.is_closed(), head.cost());
            if abandoned {
                let job = queue.jobs.pop_front().expect("the head exists");
                let emptied = queue.jobs.is_empty();
                self.skip_if_abandoned(&job, stats);
                if emptied {
                    self.end_turns(&key);
                    unserved = 0;
                }
                continue;
            }
            if !queue.credited {
                queue.deficit += QUANTUM_SAMPLES as u64;
                queue.credited = true;
            }
            if cost <= queue.deficit {
                queue.deficit -= cost;
                let job = queue.jobs.pop_front().expect("the head exists");
                if queue.jobs.is_empty() {
                    self.end_turns(&key);
                }
                return Some(job);
            }
            // Not enough credit for the oldest job: the next room's turn.
            queue.credited = false;
            self.turns.rotate_left(1);
            unserved += 1;
            if unserved == self.turns.len() {
                // A whole round served nothing (long jobs): skip the further rounds that would
                // serve nothing either, crediting every room as they would have.
                let rounds = self.queues.values().map(RoomQueue::rounds_short).min();
                let skipped = rounds.unwrap_or(1).saturating_sub(1) * QUANTUM_SAMPLES as u64;
                for queue in self.queues.values_mut() {
                    queue.deficit += skipped;
                }
                unserved = 0;
            }
        }
    }

    /// The room at the front has no more queued finals: it leaves the round and its credit
    /// is forgotten.
    fn end_turns(&mut self, key: &RoomKey) {
        self.turns.pop_front();
        self.queues.remove(key);
    }

    /// Releases and counts `job` if its receiver is gone; says whether it was.
    fn skip_if_abandoned(&mut self, job: &Job, stats: &PipelineStats) -> bool {
        if !job.reply.is_closed() {
            return false;
        }
        self.release(&job.room, job.kind);
        PipelineStats::add(&stats.jobs_cancelled, 1);
        true
    }

    /// No worker is left to run queued jobs: drop them, so their receivers see it.
    fn abandon_all(&mut self, stats: &PipelineStats) {
        let finals = self.queues.drain().flat_map(|(_, q)| q.jobs);
        let jobs: Vec<Job> = finals.chain(self.interims.drain(..)).collect();
        self.turns.clear();
        for job in jobs {
            self.release(&job.room, job.kind);
            if job.kind == JobKind::Final {
                PipelineStats::add(&stats.jobs_dropped, 1);
            }
        }
    }
}

struct Shared {
    transcriber: Arc<dyn Transcriber>,
    config: PoolConfig,
    scheduler: Mutex<Scheduler>,
    /// Signalled when a job is queued or the pool closes.
    ready: Condvar,
    stats: Arc<PipelineStats>,
    /// Each room's context prompt; read once per job, written when a room's members change.
    prompts: Mutex<HashMap<RoomKey, Arc<str>>>,
}

impl Shared {
    fn prompt(&self, room: &RoomKey) -> Option<Arc<str>> {
        self.prompts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .cloned()
    }

    fn scheduler(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the next job; `None` once the pool is dropped and nothing is queued.
    fn next_job(&self) -> Option<Job> {
        let mut scheduler = self.scheduler();
        loop {
            if let Some(job) = scheduler.next(&self.stats) {
                return Some(job);
            }
            if scheduler.closed {
                return None;
            }
            scheduler = self
                .ready
                .wait(scheduler)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A fixed set of transcription threads shared by every track on the server.
pub struct TranscriptionPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TranscriptionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptionPool")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl TranscriptionPool {
    /// Starts `config.workers` threads (at least one) running `transcriber`. They exit once the
    /// pool is dropped and the queues are drained.
    pub fn new(
        transcriber: Arc<dyn Transcriber>,
        mut config: PoolConfig,
        stats: Arc<PipelineStats>,
    ) -> Self {
        config.workers = config.workers.max(1);
        let threads = config.workers;
        Self::start(transcriber, config, stats, threads)
    }

    /// The pool with `threads` worker threads, whatever `config.workers` says (tests use
    /// fewer, to see queued interims).
    fn start(
        transcriber: Arc<dyn Transcriber>,
        mut config: PoolConfig,
        stats: Arc<PipelineStats>,
        threads: usize,
    ) -> Self {
        config.max_per_server = config.max_per_server.max(1);
        config.max_per_room = config.max_per_room.max(1);
        let shared = Arc::new(Shared {
            transcriber,
            config,
            scheduler: Mutex::new(Scheduler {
                live_workers: threads,
                ..Scheduler::default()
            }),
            ready: Condvar::new(),
            stats,
            prompts: Mutex::new(HashMap::new()),
        });
        for i in 0..threads {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("transcribe-{i}"))
                .spawn(move || work(&shared))
                .expect("spawn a transcription worker");
        }
        Self { shared }
    }

    /// The limits in force.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.shared.stats
    }

    /// Sets (or with `None` clears) the context prompt of `room`'s jobs, cut to
    /// [`MAX_PROMPT_CHARS`] at a word boundary.
    pub fn set_prompt(&self, room: &RoomKey, prompt: Option<&str>) {
        let mut prompts = self
            .shared
            .prompts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match prompt.map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => {
                let mut cut = p;
                if cut.chars().count() > MAX_PROMPT_CHARS {
                    let end = cut
                        .char_indices()
                        .nth(MAX_PROMPT_CHARS)
                        .map_or(cut.len(), |(i, _)| i);
                    cut = &cut[..end];
                    if let Some(space) = cut.rfind(' ') {
                        cut = &cut[..space];
                    }
                }
                prompts.insert(Arc::clone(room), Arc::from(cut));
            }
            None => {
                prompts.remove(room);
            }
        }
    }

    /// The prompt `room`'s jobs get now.
    pub fn prompt(&self, room: &RoomKey) -> Option<Arc<str>> {
        self.shared.prompt(room)
    }

    /// Jobs queued or running right now.
    pub fn in_flight(&self) -> usize {
        self.shared.scheduler().total
    }

    /// Queues `pcm` (16 kHz mono) for transcription, or drops and counts it if a limit is
    /// reached. Never blocks (beyond the pool's lock, held for a few map operations).
    pub fn submit(
        &self,
        room: &RoomKey,
        kind: JobKind,
        pcm: Vec<f32>,
    ) -> Result<oneshot::Receiver<JobOutcome>, SubmitError> {
        let mut scheduler = self.shared.scheduler();
        if let Err(e) = scheduler.admit(&self.shared.config, room, kind) {
            drop(scheduler);
            let stats = &self.shared.stats;
            PipelineStats::add(
                if kind == JobKind::Final {
                    &stats.jobs_dropped
                } else {
                    &stats.interims_skipped
                },
                1,
            );
            return Err(e);
        }
        let (reply, rx) = oneshot::channel();
        scheduler.push(Job {
            room: Arc::clone(room),
            kind,
            pcm,
            reply,
        });
        drop(scheduler);
        self.shared.ready.notify_one();
        Ok(rx)
    }
}

impl Drop for TranscriptionPool {
    fn drop(&mut self) {
        self.shared.scheduler().closed = true;
        self.shared.ready.notify_all();
    }
}

/// Counts a worker out when it ends, however it ends.
struct Alive<'a>(&'a Shared);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        let mut scheduler = self.0.scheduler();
        scheduler.live_workers -= 1;
        if scheduler.live_workers == 0 {
            scheduler.abandon_all(&self.0.stats);
        }
    }
}

/// A worker: runs jobs until the pool is dropped and the queues are empty.
fn work(shared: &Shared) {
    let _alive = Alive(shared);
    lower_priority();
    while let Some(job) = shared.next_job() {
        let started = Instant::now();
        let prompt = shared.prompt(&job.room);
        let limits = Limits {
            deadline: Some(started + job_deadline(&shared.config, job.pcm.len())),
            interim: job.kind == JobKind::Interim,
            abandoned: &|| job.reply.is_closed(),
            prompt: prompt.as_deref(),
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            shared.transcriber.transcribe_within(&job.pcm, &limits)
        }))
        .unwrap_or_else(|_| Err(TranscribeError::Engine("the transcriber panicked".into())));
        let elapsed = started.elapsed();
        let stats = &shared.stats;
        PipelineStats::add(&stats.transcription_micros, elapsed.as_micros() as u64);
        PipelineStats::add(
            match &result {
                Ok(_) => &stats.transcriptions_done,
                Err(TranscribeError::Aborted(_)) => &stats.transcriptions_aborted,
                Err(_) => &stats.transcription_errors,
            },
            1,
        );
        shared.scheduler().release(&job.room, job.kind);
        let _ = job.reply.send(JobOutcome { result, elapsed });
    }
}

/// Makes the calling worker thread [`WORKER_NICE`] levels nicer than it was (at most 19);
/// threads it starts later (whisper.cpp's) inherit that. Failing only costs priority, so it
/// is logged at debug.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid, getpriority and setpriority have no memory preconditions; with
    // PRIO_PROCESS and a thread id, Linux applies them to that one thread. errno is
    // thread-local, and is cleared first because -1 is a valid priority.
    let outcome = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if current == -1 && *libc::__errno_location() != 0 {
            Err(std::io::Error::last_os_error())
        } else {
            let target = (current + WORKER_NICE).min(19);
            if target > current && libc::setpriority(libc::PRIO_PROCESS, tid, target) != 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, "transcription worker keeps its CPU priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{self, Receiver, Sender};

    /// Reports each call's sample count on `started`, then waits for a go on `gate`.
    struct Gated {
        started: Mutex<Sender<usize>>,
        gate: Mutex<Receiver<()>>,
    }

    impl Transcriber for Gated {
        fn transcribe(&self, pcm: &[f32]) -> Result<String, TranscribeError> {
            self.started.lock().unwrap().send(pcm.len()).unwrap();
            self.gate
                .lock()
                .unwrap()
                .recv()
                .map_err(|_| TranscribeError::Engine("closed".into()))?;
            Ok(format!("{} samples", pcm.len()))
        }
    }

    fn gated(config: PoolConfig) -> (TranscriptionPool, Receiver<usize>, Sender<()>) {
        let threads = config.workers;
        gated_with_threads(config, threads)
    }

    /// A gated pool with `threads` worker threads, whatever `config.workers` says.
    fn gated_with_threads(
        config: PoolConfig,
        threads: usize,
    ) -> (TranscriptionPool, Receiver<usize>, Sender<()>) {
        let (started_tx, started) = mpsc::channel();
        let (gate, gate_rx) = mpsc::channel();
        let t = Gated {
            started: Mutex::new(started_tx),
            gate: Mutex::new(gate_rx),
        };
        (
            TranscriptionPool::start(Arc::new(t), config, Arc::default(), threads),
            started,
            gate,
        )
    }

    /// Lets the running job finish and returns the sample count of the next one to start.
    fn next_started(started: &Receiver<usize>, gate: &Sender<()>) -> usize {
        gate.send(()).unwrap();
        started.recv().unwrap()
    }

    fn room(name: &str) -> RoomKey {
        Arc::from(name)
    }

    #[test]
    fn runs_a_job_and_replies() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 2,
            max_per_room: 2,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated(cfg);
        let rx = pool
            .submit(&room("a"), JobKind::Final, vec![0.0; 1600])
            .unwrap();
        assert_eq!(started.recv().unwrap(), 1600);
        gate.send(()).unwrap();
        let outcome = rx.blocking_recv().unwrap();
        assert_eq!(outcome.result.unwrap(), "1600 samples");
        assert_eq!(PipelineStats::get(&pool.stats().transcriptions_done), 1);
        assert_eq!(pool.in_flight(), 0);
    }

    #[test]
    fn over_the_server_limit_jobs_are_dropped_and_counted() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 2,
            max_per_room: 10,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated(cfg);
        let a = pool
            .submit(&room("a"), JobKind::Final, vec![0.0; 1])
            .unwrap();
        started.recv().unwrap();
        let b = pool
            .submit(&room("b"), JobKind::Final, vec![0.0; 2])
            .unwrap();
        for _ in 0..3 {
            assert_eq!(
                pool.submit(&room("c"), JobKind::Final, vec![0.0; 3])
                    .unwrap_err(),
                SubmitError::ServerBusy
            );
        }
        assert_eq!(PipelineStats::get(&pool.stats().jobs_dropped), 3);
        gate.send(()).unwrap();
        gate.send(()).unwrap();
        assert!(a.blocking_recv().unwrap().result.is_ok());
        assert!(b.blocking_recv().unwrap().result.is_ok());
        assert_eq!(pool.in_flight(), 0);
    }

    #[test]
    fn one_room_cannot_take_the_whole_pool() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 4,
            max_per_room: 1,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated(cfg);
        let _a = pool
            .submit(&room("a"), JobKind::Final, vec![0.0; 1])
            .unwrap();
        started.recv().unwrap();
        assert_eq!(
            pool.submit(&room("a"), JobKind::Final, vec![]).unwrap_err(),
            SubmitError::RoomBusy
        );
        let _b = pool
            .submit(&room("b"), JobKind::Final, vec![0.0; 2])
            .unwrap();
        gate.send(()).unwrap();
        assert_eq!(started.recv().unwrap(), 2, "room b's job ran");
        gate.send(()).unwrap();
    }

    #[test]
    fn a_busy_room_cannot_park_its_finals_ahead_of_another_rooms() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 32,
            max_per_room: 16,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated(cfg);
        // Room a's first final is running; nine more queue behind it, then room b's one.
        // Half a second each (a quantum's worth of credit), told apart by length.
        let mut replies = vec![
            pool.submit(&room("a"), JobKind::Final, vec![0.0; 8_000])
                .unwrap(),
        ];
        assert_eq!(started.recv().unwrap(), 8_000);
        for i in 1..10 {
            let pcm = vec![0.0; 8_000 + i];
            replies.push(pool.submit(&room("a"), JobKind::Final, pcm).unwrap());
        }
        replies.push(
            pool.submit(&room("b"), JobKind::Final, vec![0.0; 4_000])
                .unwrap(),
        );
        let order: Vec<usize> = (0..10).map(|_| next_started(&started, &gate)).collect();
        gate.send(()).unwrap();
        let mut want = vec![8_001, 4_000];
        want.extend(8_002..8_010);
        assert_eq!(order, want, "b's final goes after one of a's, not all nine");
        for rx in replies {
            assert!(rx.blocking_recv().unwrap().result.is_ok());
        }
        assert_eq!(pool.in_flight(), 0);
    }

    #[test]
    fn turns_are_weighted_by_audio_not_by_jobs() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 32,
            max_per_room: 16,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated(cfg);
        let _x = pool
            .submit(&room("x"), JobKind::Final, vec![0.0; 1])
            .unwrap();
        assert_eq!(started.recv().unwrap(), 1);
        // Room l queues three finals of just under 4 s, room s eight of just under 1 s.
        let long = |i: usize| 64_000 - i;
        let short = |i: usize| 16_000 - i;
        let mut replies = Vec::new();
        for i in 1..=3 {
            replies.push(pool.submit(&room("l"), JobKind::Final, vec![0.0; long(i)]));
        }
        for i in 1..=8 {
            replies.push(pool.submit(&room("s"), JobKind::Final, vec![0.0; short(i)]));
        }
        let order: Vec<usize> = (0..11).map(|_| next_started(&started, &gate)).collect();
        gate.send(()).unwrap();
        // While both have a backlog, s runs four 1 s jobs for each 4 s job of l (the first
        // round l has no credit yet); l's last job, alone, does not wait for credit.
        let (s, l) = (short, long);
        let want = [
            s(1),
            s(2),
            s(3),
            l(1),
            s(4),
            s(5),
            s(6),
            s(7),
            l(2),
            s(8),
            l(3),
        ];
        assert_eq!(order, want);
        for rx in replies {
            assert!(rx.unwrap().blocking_recv().unwrap().result.is_ok());
        }
    }

    #[test]
    fn finals_go_before_queued_interims() {
        // Two workers' worth of admission but one thread: an interim admitted while a worker
        // was idle can still be queued when a final arrives.
        let cfg = PoolConfig {
            workers: 2,
            max_per_server: 8,
            max_per_room: 4,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated_with_threads(cfg, 1);
        let _f0 = pool
            .submit(&room("a"), JobKind::Final, vec![0.0; 1])
            .unwrap();
        assert_eq!(started.recv().unwrap(), 1);
        let interim = pool
            .submit(&room("a"), JobKind::Interim, vec![0.0; 2])
            .expect("a worker's worth of room for an interim");
        let _f1 = pool
            .submit(&room("b"), JobKind::Final, vec![0.0; 3])
            .unwrap();
        assert_eq!(next_started(&started, &gate), 3, "the final went first");
        assert_eq!(next_started(&started, &gate), 2, "then the interim");
        gate.send(()).unwrap();
        assert!(interim.blocking_recv().unwrap().result.is_ok());
    }

    #[test]
    fn a_running_interim_never_crowds_out_a_final() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 4,
            max_per_room: 1,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated(cfg);
        let _interim = pool
            .submit(&room("a"), JobKind::Interim, vec![0.0; 1])
            .unwrap();
        started.recv().unwrap();
        let _final = pool
            .submit(&room("a"), JobKind::Final, vec![0.0; 2])
            .expect("the room's final budget is for finals only");
        assert_eq!(PipelineStats::get(&pool.stats().jobs_dropped), 0);
        gate.send(()).unwrap();
        assert_eq!(
            started.recv().unwrap(),
            2,
            "the final ran after the interim"
        );
        gate.send(()).unwrap();
    }

    #[test]
    fn interims_only_run_on_an_idle_worker() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 4,
            max_per_room: 4,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated(cfg);
        let _i = pool
            .submit(&room("a"), JobKind::Interim, vec![0.0; 1])
            .unwrap();
        started.recv().unwrap();
        assert_eq!(
            pool.submit(&room("a"), JobKind::Interim, vec![])
                .unwrap_err(),
            SubmitError::ServerBusy
        );
        assert!(
            pool.submit(&room("a"), JobKind::Final, vec![0.0; 2])
                .is_ok(),
            "finals may queue"
        );
        assert_eq!(PipelineStats::get(&pool.stats().interims_skipped), 1);
        gate.send(()).unwrap();
        gate.send(()).unwrap();
    }

    #[test]
    fn abandoned_jobs_are_skipped() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 4,
            max_per_room: 4,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated(cfg);
        let _a = pool
            .submit(&room("a"), JobKind::Final, vec![0.0; 1])
            .unwrap();
        started.recv().unwrap();
        drop(
            pool.submit(&room("a"), JobKind::Final, vec![0.0; 2])
                .unwrap(),
        );
        let c = pool
            .submit(&room("a"), JobKind::Final, vec![0.0; 3])
            .unwrap();
        gate.send(()).unwrap();
        assert_eq!(started.recv().unwrap(), 3, "the abandoned job never ran");
        gate.send(()).unwrap();
        assert!(c.blocking_recv().unwrap().result.is_ok());
        assert_eq!(PipelineStats::get(&pool.stats().jobs_cancelled), 1);
        assert_eq!(pool.in_flight(), 0);
    }

    #[test]
    fn workers_drain_the_queues_and_exit_when_the_pool_is_dropped() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 4,
            max_per_room: 4,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let (pool, started, gate) = gated(cfg);
        let a = pool
            .submit(&room("a"), JobKind::Final, vec![0.0; 1])
            .unwrap();
        assert_eq!(started.recv().unwrap(), 1);
        let b = pool
            .submit(&room("b"), JobKind::Final, vec![0.0; 2])
            .unwrap();
        drop(pool);
        assert_eq!(next_started(&started, &gate), 2, "queued work still runs");
        gate.send(()).unwrap();
        assert!(a.blocking_recv().unwrap().result.is_ok());
        assert!(b.blocking_recv().unwrap().result.is_ok());
        // The last worker to exit drops the transcriber, and with it the `started` sender.
        assert!(started.recv().is_err(), "the workers are gone");
    }

    struct Panics;
    impl Transcriber for Panics {
        fn transcribe(&self, _: &[f32]) -> Result<String, TranscribeError> {
            panic!("engine bug")
        }
    }

    #[test]
    fn a_panicking_engine_is_an_error_not_a_dead_worker() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 2,
            max_per_room: 2,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let pool = TranscriptionPool::new(Arc::new(Panics), cfg, Arc::default());
        for _ in 0..2 {
            let rx = pool
                .submit(&room("a"), JobKind::Final, vec![0.0; 1])
                .unwrap();
            assert!(rx.blocking_recv().unwrap().result.is_err());
        }
        assert_eq!(PipelineStats::get(&pool.stats().transcription_errors), 2);
    }

    #[test]
    fn the_thread_budget_leaves_cores_for_forwarding() {
        let budget = |cores| {
            let b = ThreadBudget::for_cores(cores);
            (b.workers, b.threads_per_job)
        };
        assert_eq!(budget(0), (1, 1));
        assert_eq!(budget(1), (1, 1));
        assert_eq!(budget(2), (1, 1));
        assert_eq!(budget(4), (1, 2));
        assert_eq!(budget(8), (3, 2));
        assert_eq!(budget(16), (6, 2));
        for cores in 2..=256 {
            let b = ThreadBudget::for_cores(cores);
            assert!(
                b.workers * b.threads_per_job < cores,
                "{cores} cores: {b:?}"
            );
        }
        assert_eq!(ThreadBudget::with_threads_per_job(8, 1).workers, 6);
        assert_eq!(ThreadBudget::with_threads_per_job(8, 4).workers, 1);
        assert_eq!(ThreadBudget::with_threads_per_job(8, 0).threads_per_job, 1);
    }

    #[cfg(target_os = "linux")]
    fn nice_of_this_thread() -> i32 {
        // SAFETY: as in lower_priority.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    /// Answers with the worker's nice value and that of a thread it starts.
    #[cfg(target_os = "linux")]
    struct Nice;

    #[cfg(target_os = "linux")]
    impl Transcriber for Nice {
        fn transcribe(&self, _: &[f32]) -> Result<String, TranscribeError> {
            let child = std::thread::spawn(nice_of_this_thread).join().unwrap();
            Ok(format!("{} {child}", nice_of_this_thread()))
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn workers_and_their_threads_run_at_a_lower_priority() {
        let pool = TranscriptionPool::new(Arc::new(Nice), PoolConfig::default(), Arc::default());
        let rx = pool.submit(&room("a"), JobKind::Final, vec![]).unwrap();
        let text = rx.blocking_recv().unwrap().result.unwrap();
        let ours = nice_of_this_thread();
        let want = (ours + WORKER_NICE).min(19);
        assert_eq!(text, format!("{want} {want}"), "this thread: {ours}");
        assert_eq!(nice_of_this_thread(), ours, "only the workers changed");
    }

    /// Works until told to stop, as a decode stuck on non-speech audio would.
    struct Spinner {
        started: Mutex<Sender<usize>>,
    }

    impl Transcriber for Spinner {
        fn transcribe(&self, _: &[f32]) -> Result<String, TranscribeError> {
            unreachable!("the pool always passes limits")
        }

        fn transcribe_within(
            &self,
            pcm: &[f32],
            limits: &Limits<'_>,
        ) -> Result<String, TranscribeError> {
            self.started.lock().unwrap().send(pcm.len()).unwrap();
            loop {
                if let Some(why) = limits.stop_reason() {
                    return Err(TranscribeError::Aborted(why));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn a_running_job_nobody_waits_for_is_stopped_and_the_next_one_runs() {
        let (started_tx, started) = mpsc::channel();
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 4,
            max_per_room: 4,
            deadline_factor: DEFAULT_DEADLINE_FACTOR,
        };
        let pool = TranscriptionPool::new(
            Arc::new(Spinner {
                started: Mutex::new(started_tx),
            }),
            cfg,
            Arc::default(),
        );
        let first = pool
            .submit(&room("a"), JobKind::Interim, vec![0.0; 1])
            .unwrap();
        assert_eq!(started.recv().unwrap(), 1);
        // The utterance moved on: the interim's reader is dropped while it runs.
        drop(first);
        let second = pool
            .submit(&room("a"), JobKind::Final, vec![0.0; 2])
            .unwrap();
        assert_eq!(started.recv().unwrap(), 2, "the worker was freed");
        assert_eq!(PipelineStats::get(&pool.stats().transcriptions_aborted), 1);
        drop(second);
    }

    #[test]
    fn deadlines_grow_with_the_audio() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 1,
            max_per_room: 1,
            deadline_factor: 3.0,
        };
        assert_eq!(job_deadline(&cfg, 0), DEADLINE_FLOOR);
        assert_eq!(
            job_deadline(&cfg, 16_000 * 4),
            DEADLINE_FLOOR + Duration::from_secs(12)
        );
        let none = PoolConfig {
            deadline_factor: -1.0,
            ..cfg
        };
        assert_eq!(job_deadline(&none, 16_000 * 4), DEADLINE_FLOOR);
    }
}
