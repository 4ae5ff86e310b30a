//! The transcription worker pool: a few OS threads running the (blocking, CPU-heavy)
//! [`Transcriber`], fed by a bounded queue with per-room and per-server admission limits.
//!
//! Admission happens at submit time and never waits: a job over a limit is dropped and
//! counted. Final transcriptions may use the whole queue; interim ones are only admitted when a
//! worker is idle, so they never delay a final. Results come back on a tokio oneshot channel,
//! so async code awaits them without touching a worker; a job whose receiver was dropped
//! before a worker reached it is skipped.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::transcribe::{TranscribeError, Transcriber};

/// Which room a job's audio belongs to, for the per-room limit (the SFU passes its room id).
pub type RoomKey = Arc<str>;

/// Pool sizing and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Worker threads; default: the machine's available parallelism.
    pub workers: usize,
    /// Jobs queued or running across the server before new ones are dropped; default 16 per
    /// worker (a final waits rather than being lost, which is what a transcript needs).
    pub max_per_server: usize,
    /// Final jobs queued or running for one room before its new ones are dropped; default
    /// twice the workers, at least 8, so one busy room cannot take the whole queue.
    pub max_per_room: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            workers,
            max_per_server: workers * 16,
            max_per_room: (workers * 2).max(8),
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
    /// Total time spent transcribing, in microseconds.
    pub transcription_micros: AtomicU64,
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
    /// A provisional transcript of speech still going on; only run on an idle worker.
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

/// Jobs queued or running, overall and per room. The per-room count is of finals only:
/// interims are bounded server-wide by the idle-worker rule, and must never be the reason a
/// final (a transcript line) is dropped.
#[derive(Default)]
struct Load {
    total: usize,
    rooms: HashMap<RoomKey, usize>,
}

struct Shared {
    transcriber: Arc<dyn Transcriber>,
    config: PoolConfig,
    load: Mutex<Load>,
    stats: Arc<PipelineStats>,
}

impl Shared {
    fn load(&self) -> MutexGuard<'_, Load> {
        self.load.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, room: &RoomKey, kind: JobKind) {
        let mut load = self.load();
        load.total -= 1;
        if kind == JobKind::Interim {
            return;
        }
        if let Some(n) = load.rooms.get_mut(room) {
            *n -= 1;
            if *n == 0 {
                load.rooms.remove(room);
            }
        }
    }
}

/// A fixed set of transcription threads shared by every track on the server.
pub struct TranscriptionPool {
    shared: Arc<Shared>,
    tx: SyncSender<Job>,
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
    /// pool is dropped and the queue is drained.
    pub fn new(
        transcriber: Arc<dyn Transcriber>,
        mut config: PoolConfig,
        stats: Arc<PipelineStats>,
    ) -> Self {
        config.workers = config.workers.max(1);
        config.max_per_server = config.max_per_server.max(1);
        config.max_per_room = config.max_per_room.max(1);
        // Admission keeps jobs in flight within max_per_server, so this queue never fills.
        let (tx, rx) = mpsc::sync_channel(config.max_per_server);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            transcriber,
            config,
            load: Mutex::default(),
            stats,
        });
        for i in 0..shared.config.workers {
            let (shared, rx) = (Arc::clone(&shared), Arc::clone(&rx));
            std::thread::Builder::new()
                .name(format!("transcribe-{i}"))
                .spawn(move || work(&shared, &rx))
                .expect("spawn a transcription worker");
        }
        Self { shared, tx }
    }

    /// The limits in force.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.shared.stats
    }

    /// Jobs queued or running right now.
    pub fn in_flight(&self) -> usize {
        self.shared.load().total
    }

    /// Queues `pcm` (16 kHz mono) for transcription, or drops and counts it if a limit is
    /// reached. Never blocks.
    pub fn submit(
        &self,
        room: &RoomKey,
        kind: JobKind,
        pcm: Vec<f32>,
    ) -> Result<oneshot::Receiver<JobOutcome>, SubmitError> {
        let admitted = self.admit(room, kind);
        if let Err(e) = admitted {
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
        match self.tx.try_send(Job {
            room: Arc::clone(room),
            kind,
            pcm,
            reply,
        }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.shared.release(&job.room, job.kind);
                PipelineStats::add(&self.shared.stats.jobs_dropped, 1);
                Err(SubmitError::Closed)
            }
        }
    }

    fn admit(&self, room: &RoomKey, kind: JobKind) -> Result<(), SubmitError> {
        let cfg = &self.shared.config;
        let mut load = self.shared.load();
        let server_limit = match kind {
            JobKind::Final => cfg.max_per_server,
            JobKind::Interim => cfg.workers.min(cfg.max_per_server),
        };
        if load.total >= server_limit {
            return Err(SubmitError::ServerBusy);
        }
        load.total += 1;
        if kind == JobKind::Interim {
            return Ok(());
        }
        let in_room = load.rooms.get(room).copied().unwrap_or(0);
        if in_room >= cfg.max_per_room {
            load.total -= 1;
            return Err(SubmitError::RoomBusy);
        }
        load.rooms.insert(Arc::clone(room), in_room + 1);
        Ok(())
    }
}

/// A worker: takes jobs until the pool is dropped.
fn work(shared: &Shared, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if job.reply.is_closed() {
            shared.release(&job.room, job.kind);
            PipelineStats::add(&shared.stats.jobs_cancelled, 1);
            continue;
        }
        let started = Instant::now();
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| shared.transcriber.transcribe(&job.pcm)))
                .unwrap_or_else(|_| {
                    Err(TranscribeError::Engine("the transcriber panicked".into()))
                });
        let elapsed = started.elapsed();
        let stats = &shared.stats;
        PipelineStats::add(&stats.transcription_micros, elapsed.as_micros() as u64);
        PipelineStats::add(
            if result.is_ok() {
                &stats.transcriptions_done
            } else {
                &stats.transcription_errors
            },
            1,
        );
        shared.release(&job.room, job.kind);
        let _ = job.reply.send(JobOutcome { result, elapsed });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Receiver, Sender};

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
        let (started_tx, started) = mpsc::channel();
        let (gate, gate_rx) = mpsc::channel();
        let t = Gated {
            started: Mutex::new(started_tx),
            gate: Mutex::new(gate_rx),
        };
        (
            TranscriptionPool::new(Arc::new(t), config, Arc::default()),
            started,
            gate,
        )
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
    fn a_running_interim_never_crowds_out_a_final() {
        let cfg = PoolConfig {
            workers: 1,
            max_per_server: 4,
            max_per_room: 1,
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
}
