//! What the load clients measure: the payload every packet carries, the measurement window,
//! per-subscriber counters and a fixed-bucket latency histogram (no allocation per packet).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Marks a load-tool payload, after its 8-byte codec prefix (an Opus TOC, or a VP8 payload
/// descriptor, frame tag and keyframe start code, which SFUs read to find keyframes).
pub const MAGIC: &[u8; 4] = b"CLT1";
/// Bytes of the header every payload starts with: prefix, magic, stream, send time.
pub const HEADER: usize = 8 + 4 + 2 + 8;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the tool started: the clock every send time and arrival is read on
/// (publishers and subscribers share the process, so one monotonic clock serves both).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Writes the header into `buf` (at least [`HEADER`] bytes).
pub fn stamp(buf: &mut [u8], prefix: &[u8; 8], stream: u16, sent_ns: u64) {
    buf[..8].copy_from_slice(prefix);
    buf[8..12].copy_from_slice(MAGIC);
    buf[12..14].copy_from_slice(&stream.to_be_bytes());
    buf[14..22].copy_from_slice(&sent_ns.to_be_bytes());
}

/// The stream index and send time of a payload made by [`stamp`].
pub fn read_stamp(payload: &[u8]) -> Option<(u16, u64)> {
    if payload.len() < HEADER || &payload[8..12] != MAGIC {
        return None;
    }
    let stream = u16::from_be_bytes([payload[12], payload[13]]);
    let sent = u64::from_be_bytes(payload[14..22].try_into().ok()?);
    Some((stream, sent))
}

/// The measurement window, on the [`now_ns`] clock: packets sent inside it count.
#[derive(Debug)]
pub struct Window {
    start: AtomicU64,
    end: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            start: AtomicU64::new(u64::MAX),
            end: AtomicU64::new(u64::MAX),
        }
    }
}

impl Window {
    /// Opens the window now.
    pub fn open(&self) {
        self.start.store(now_ns(), Ordering::SeqCst);
    }
    /// Closes it now.
    pub fn close(&self) {
        self.end.store(now_ns(), Ordering::SeqCst);
    }
    /// Whether a packet sent at `ns` counts.
    pub fn contains(&self, ns: u64) -> bool {
        ns >= self.start.load(Ordering::Relaxed) && ns < self.end.load(Ordering::Relaxed)
    }
    /// Its length (once closed).
    pub fn length(&self) -> Duration {
        Duration::from_nanos(
            self.end
                .load(Ordering::SeqCst)
                .saturating_sub(self.start.load(Ordering::SeqCst)),
        )
    }
}

/// Latency buckets of 10 µs up to 200 ms; later arrivals land in the last bucket (and `max`).
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 20_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u32]>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0u32; BUCKETS].into_boxed_slice(),
            total: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, us: u64) {
        let b = ((us / BUCKET_US) as usize).min(BUCKETS - 1);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }
    /// Adds another histogram's counts.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += o.total;
        self.max_us = self.max_us.max(o.max_us);
    }
    /// Recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }
    /// The `q` quantile (0..=1) in milliseconds (bucket upper edge).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                if i == BUCKETS - 1 {
                    return self.max_us as f64 / 1000.0;
                }
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }
    /// The largest value, ms.
    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1000.0
    }
}

/// What one subscriber saw.
#[derive(Default)]
pub struct Subscriber {
    inner: Mutex<SubscriberInner>,
}

#[derive(Default)]
struct SubscriberInner {
    /// When its signaling socket (or session) opened.
    opened: Option<Instant>,
    /// When the first media packet arrived.
    first_media: Option<Instant>,
    /// When the first video packet arrived (streams with odd indexes are video).
    first_video: Option<Instant>,
    /// Packets sent within the window that arrived.
    received: u64,
    /// Of those, video.
    received_video: u64,
    /// Packets of other kinds or without the tool's header.
    foreign: u64,
    latency: Histogram,
    /// Send to the moment the packet was queued to the subscriber's socket (kernel
    /// timestamp; light subscribers only): the latency without the client's own scheduling.
    latency_socket: Histogram,
}

impl Subscriber {
    /// Notes the moment its join started.
    pub fn opened(&self, at: Instant) {
        self.inner.lock().unwrap().opened = Some(at);
    }
    /// Records one arriving packet.
    pub fn packet(&self, payload: &[u8], window: &Window) {
        self.packet_at(payload, window, None);
    }
    /// Records one arriving packet that the kernel queued to the socket at `queued_ns` (on
    /// the [`now_ns`] clock), if known.
    pub fn packet_at(&self, payload: &[u8], window: &Window, queued_ns: Option<u64>) {
        let arrived = now_ns();
        let mut g = self.inner.lock().unwrap();
        if g.first_media.is_none() {
            g.first_media = Some(Instant::now());
        }
        let stamp = read_stamp(payload);
        if g.first_video.is_none() && matches!(stamp, Some((s, _)) if s % 2 == 1) {
            g.first_video = Some(Instant::now());
        }
        match stamp {
            Some((stream, sent)) if window.contains(sent) => {
                g.received += 1;
                g.received_video += u64::from(stream % 2 == 1);
                g.latency.record(arrived.saturating_sub(sent) / 1000);
                if let Some(q) = queued_ns {
                    g.latency_socket.record(q.saturating_sub(sent) / 1000);
                }
            }
            Some(_) => {}
            None => g.foreign += 1,
        }
    }
    /// Join time (socket open to first media), if it got media.
    pub fn join_time(&self) -> Option<Duration> {
        let g = self.inner.lock().unwrap();
        Some(g.first_media?.duration_since(g.opened?))
    }
    /// Join time to the first video packet, if any came.
    pub fn video_join_time(&self) -> Option<Duration> {
        let g = self.inner.lock().unwrap();
        Some(g.first_video?.duration_since(g.opened?))
    }
    /// Whether media has arrived (video too, if `video`).
    pub fn has_media(&self, video: bool) -> bool {
        let g = self.inner.lock().unwrap();
        g.first_media.is_some() && (!video || g.first_video.is_some())
    }
    /// Received in the window (all, video), foreign packets, and the latency histograms
    /// (arrival in the client, queued to its socket).
    pub fn take(&self) -> (u64, u64, u64, Histogram, Histogram) {
        let g = self.inner.lock().unwrap();
        (
            g.received,
            g.received_video,
            g.foreign,
            g.latency.clone(),
            g.latency_socket.clone(),
        )
    }
}

/// Quantile of a list of durations, in ms.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (((sorted.len() as f64) * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_and_foreign_payloads_do_not() {
        let mut buf = [0u8; 40];
        stamp(&mut buf, &[0x78, 0, 0, 0, 0, 0, 0, 0], 7, 123_456_789);
        assert_eq!(read_stamp(&buf), Some((7, 123_456_789)));
        assert_eq!(read_stamp(&[0u8; 40]), None);
        assert_eq!(read_stamp(&buf[..10]), None);
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(us); // 1 µs .. 1 ms
        }
        assert!(
            (h.quantile_ms(0.5) - 0.5).abs() <= 0.011,
            "{}",
            h.quantile_ms(0.5)
        );
        assert!((h.quantile_ms(0.99) - 0.99).abs() <= 0.011);
        h.record(900_000);
        assert_eq!(h.max_ms(), 900.0);
        assert_eq!(h.quantile_ms(1.0), 900.0);
    }
}
