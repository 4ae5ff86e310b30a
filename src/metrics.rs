//! Prometheus metrics, kept as plain atomics so the hot path pays one relaxed add.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Process-wide counters and gauges, rendered in Prometheus text format at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Rooms open now.
    pub rooms: AtomicI64,
    /// Participants connected now.
    pub participants: AtomicI64,
    /// Tracks published now.
    pub tracks: AtomicI64,
    /// RTP packets received from publishers.
    pub packets_in: AtomicU64,
    /// RTP packets written to subscriber legs.
    pub packets_out: AtomicU64,
    /// RTP packets dropped because a subscriber's queue was full.
    pub packets_dropped: AtomicU64,
    /// Keyframe requests relayed to publishers.
    pub keyframe_requests: AtomicU64,
    /// Signaling messages refused as bad input.
    pub signaling_errors: AtomicU64,
    /// Joins refused (bad token, unknown room, ...).
    pub joins_refused: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let gauges = [
            ("conclave_rooms", "Rooms open now.", &self.rooms),
            ("conclave_participants", "Participants connected now.", &self.participants),
            ("conclave_tracks", "Tracks published now.", &self.tracks),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", v.load(Ordering::Relaxed));
        }
        let counters = [
            ("conclave_rtp_packets_in_total", "RTP packets received from publishers.", &self.packets_in),
            ("conclave_rtp_packets_out_total", "RTP packets written to subscribers.", &self.packets_out),
            ("conclave_rtp_packets_dropped_total", "RTP packets dropped at a full subscriber queue.", &self.packets_dropped),
            ("conclave_keyframe_requests_total", "Keyframe requests relayed to publishers.", &self.keyframe_requests),
            ("conclave_signaling_errors_total", "Signaling messages refused as bad input.", &self.signaling_errors),
            ("conclave_joins_refused_total", "Joins refused.", &self.joins_refused),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        out
    }
}
