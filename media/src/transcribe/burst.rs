//! Using a second thread per transcription only while the machine has a core to spare.
//!
//! whisper.cpp's threads spin-wait at barriers, so a decode with more threads than free cores
//! collapses (one ~4 s sentence took ~17 s on a busy 2-core machine). On an idle machine,
//! though, a second thread nearly halves the time from end of speech to caption. So the base
//! thread count is what the budget allows under contention, and a job bursts to more only
//! when the machine was idle just before: a sampler reads `/proc/stat` and `/proc/self/stat`
//! four times a second, and only intervals during which no transcription ran count, so our
//! own decodes never make the machine look busy. Both must be quiet: other processes (under
//! a core) and this one's forwarding (under 0.6 of a core).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const SAMPLE: Duration = Duration::from_millis(250);
/// A reading older than this is not trusted: the job runs with the base thread count.
const FRESH: Duration = Duration::from_secs(3);
/// Burst only when the rest of the machine leaves at least one core beyond the base threads
/// free (on 2 cores: uses under one).
const IDLE_BELOW_CORES: f32 = 1.0;
/// ... and this process itself (forwarding media, mostly) uses under this much: a busy SFU
/// needs the core more than a caption needs to be 200 ms sooner. The cost where it does
/// burst beside other forwarded talkers (`cargo bench --bench forward_jitter`, BENCHMARKS.md):
/// forwarding p99 jitter about 2 ms -> 5-6 ms, no loss. `--whisper-threads 1` turns bursting off.
const OWN_BELOW_CORES: f32 = 0.6;

/// Shared between the transcriber (which counts running jobs and asks for a thread count)
/// and its sampler thread, which ends when the transcriber is dropped.
#[derive(Debug)]
pub struct Burst {
    base: usize,
    max: usize,
    cores: usize,
    running: AtomicUsize,
    /// Busy cores of the rest of the machine × 100, from the last quiet interval.
    busy_x100: AtomicU32,
    /// Busy cores of this process × 100 over the same interval.
    own_x100: AtomicU32,
    /// When that reading was taken, ms since `epoch`.
    read_at_ms: AtomicU64,
    epoch: Instant,
}

impl Burst {
    /// `base` threads normally, up to `max` while the machine is idle. `max <= base`, or no
    /// `/proc/stat`, means never bursting (and no sampler thread).
    pub fn start(base: usize, max: usize) -> Arc<Self> {
        let this = Self::unsampled(base, max);
        if this.max > this.base && cpu_ticks().is_some() {
            let weak = Arc::downgrade(&this);
            let _ = std::thread::Builder::new()
                .name("whisper-burst".into())
                .spawn(move || sample(weak));
        }
        this
    }

    /// Without a sampler: readings only come from whoever stores them (tests).
    fn unsampled(base: usize, max: usize) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Self {
            base: base.max(1),
            max: max.max(base).max(1),
            cores,
            running: AtomicUsize::new(0),
            busy_x100: AtomicU32::new(u32::MAX),
            own_x100: AtomicU32::new(u32::MAX),
            read_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Threads for a job starting now.
    pub fn threads(&self) -> usize {
        if self.max <= self.base {
            return self.base;
        }
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let read_at = self.read_at_ms.load(Ordering::Relaxed);
        let busy = self.busy_x100.load(Ordering::Relaxed);
        let own = self.own_x100.load(Ordering::Relaxed);
        let fresh = read_at > 0 && now_ms.saturating_sub(read_at) <= FRESH.as_millis() as u64;
        // Only one job bursts at a time: two bursting jobs would oversubscribe by themselves.
        let alone = self.running.load(Ordering::Relaxed) == 0;
        if fresh
            && alone
            && (busy as f32) < IDLE_BELOW_CORES * 100.0
            && (own as f32) < OWN_BELOW_CORES * 100.0
        {
            self.max.min(self.cores)
        } else {
            self.base
        }
    }

    /// Marks a job as running until the guard drops.
    pub fn running(&self) -> RunningGuard<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningGuard(self)
    }
}

/// See [`Burst::running`].
pub struct RunningGuard<'a>(&'a Burst);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// (busy, total) jiffies over all cores, from the first line of /proc/stat.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4]; // idle + iowait
    Some((total - idle, total))
}

/// utime + stime of this process, in the same clock ticks as /proc/stat.
fn own_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn sample(burst: Weak<Burst>) {
    let mut last = cpu_ticks();
    let mut last_own = own_ticks();
    loop {
        std::thread::sleep(SAMPLE);
        let Some(b) = burst.upgrade() else { return };
        let quiet_before = b.running.load(Ordering::Relaxed) == 0;
        let now = cpu_ticks();
        let now_own = own_ticks();
        if let (Some((busy0, total0)), Some((busy1, total1))) = (last, now)
            && quiet_before
            && b.running.load(Ordering::Relaxed) == 0
            && total1 > total0
        {
            let per_core = (total1 - total0) as f32 / b.cores as f32;
            let busy_cores = (busy1 - busy0) as f32 / per_core;
            let own_cores = match (last_own, now_own) {
                (Some(o0), Some(o1)) => o1.saturating_sub(o0) as f32 / per_core,
                _ => f32::MAX,
            };
            // The rest of the machine excludes this process.
            let others = (busy_cores - own_cores).max(0.0);
            b.busy_x100
                .store((others * 100.0) as u32, Ordering::Relaxed);
            b.own_x100.store(
                (own_cores * 100.0).min(u32::MAX as f32) as u32,
                Ordering::Relaxed,
            );
            b.read_at_ms.store(
                b.epoch.elapsed().as_millis().max(1) as u64,
                Ordering::Relaxed,
            );
        }
        last = now;
        last_own = now_own;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_burst_without_headroom_or_a_fresh_reading() {
        let fixed = Burst::start(1, 1);
        assert_eq!(fixed.threads(), 1);
        // No sampler: the readings below are the only ones.
        let b = Burst::unsampled(1, 2);
        // No reading yet: base.
        assert_eq!(b.threads(), 1);
        b.read_at_ms
            .store(b.epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        b.busy_x100.store(10, Ordering::Relaxed);
        b.own_x100.store(5, Ordering::Relaxed);
        let want = 2.min(b.cores);
        assert_eq!(b.threads(), want);
        {
            let _job = b.running();
            assert_eq!(b.threads(), 1, "a second concurrent job does not burst");
        }
        b.busy_x100.store(120, Ordering::Relaxed);
        assert_eq!(b.threads(), 1, "a busy machine gets the base count");
        b.busy_x100.store(10, Ordering::Relaxed);
        b.own_x100.store(80, Ordering::Relaxed);
        assert_eq!(b.threads(), 1, "a busy SFU keeps its core");
    }

    #[test]
    fn the_sampler_reads_proc_stat_and_stops_with_its_owner() {
        let b = Burst::start(1, 2);
        std::thread::sleep(SAMPLE * 3);
        assert!(
            b.read_at_ms.load(Ordering::Relaxed) > 0,
            "no reading after three samples"
        );
        let weak = Arc::downgrade(&b);
        drop(b);
        std::thread::sleep(SAMPLE * 2);
        assert!(weak.upgrade().is_none());
    }
}
