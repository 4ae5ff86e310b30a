//! What the plane tells a publisher about the stream it receives: RTCP receiver reports
//! (RFC 3550 6.4.2: loss, highest sequence number, jitter, and the last sender report with the
//! delay since, from which the publisher measures the round trip) and, for video, a REMB
//! (draft-alvestrand-rmcat-remb) with the plane's ceiling. Without them a browser's congestion
//! control never leaves its start rate (300 kbit/s in Chromium): it has no feedback to raise it on.
//!
//! [`ReceiveStats`] is updated per packet with a few integer and float operations and no
//! allocation; the report is built once a second.

use std::time::{Duration, Instant};

/// How often each published stream gets its report.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// The bitrate the plane lets a video publisher send (bits/s), announced by REMB. One layer
/// goes to every subscriber, so this is also what each subscriber receives at most.
pub const VIDEO_BITRATE_MAX: f32 = 2_000_000.0;

/// One stream's reception, as RFC 3550 appendix A.3 and A.8 count it.
pub struct ReceiveStats {
    clock_rate: f64,
    epoch: Instant,
    started: bool,
    base: u32,
    /// Highest sequence number, extended with the wrap count in the high 16 bits.
    max: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Interarrival jitter in timestamp units.
    jitter: f64,
    last_transit: f64,
    /// The middle 32 bits of the last sender report's NTP time, and when it came.
    last_sr: Option<(u32, Instant)>,
}

/// A receiver report block's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Lost since the first packet (24 bits).
    pub total_lost: u32,
    /// The extended highest sequence number received.
    pub highest: u32,
    /// Interarrival jitter, timestamp units.
    pub jitter: u32,
    /// The middle 32 bits of the last sender report's NTP time (0: none yet).
    pub last_sr: u32,
    /// Since that report, in 1/65536 s.
    pub delay_since_sr: u32,
}

impl ReceiveStats {
    /// A stream whose RTP timestamps run at `clock_rate` Hz.
    pub fn new(clock_rate: u32, epoch: Instant) -> Self {
        ReceiveStats {
            clock_rate: f64::from(clock_rate),
            epoch,
            started: false,
            base: 0,
            max: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter: 0.0,
            last_transit: 0.0,
            last_sr: None,
        }
    }

    /// Whether any packet was received.
    pub fn started(&self) -> bool {
        self.started
    }

    /// One packet, arrived at `now`.
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, now: Instant) {
        let arrival = now.duration_since(self.epoch).as_secs_f64() * self.clock_rate;
        let transit = arrival - f64::from(timestamp);
        if !self.started {
            self.started = true;
            self.base = u32::from(seq);
            self.max = u32::from(seq);
            self.last_transit = transit;
        } else {
            let cycles = self.max & 0xffff_0000;
            let high = self.max as u16;
            let delta = seq.wrapping_sub(high);
            if delta != 0 && delta < 0x8000 {
                // Ahead (possibly across the wrap).
                let wrapped = seq < high;
                self.max = (cycles + if wrapped { 0x1_0000 } else { 0 }) | u32::from(seq);
            }
            // The timestamp wraps too: the difference is taken modulo 2^32.
            let mut d = (transit - self.last_transit).abs();
            if d > 2_147_483_648.0 {
                d = 4_294_967_296.0 - d;
            }
            self.last_transit = transit;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.received = self.received.wrapping_add(1);
    }

    /// A sender report for this stream, with its 64-bit NTP time.
    pub fn on_sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// The report block for now; the fraction lost counts since the previous call.
    pub fn report(&mut self, now: Instant) -> Report {
        let expected = self.max.wrapping_sub(self.base).wrapping_add(1);
        let total_lost = expected.saturating_sub(self.received).min(0x7f_ffff);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((u64::from(lost_interval) << 8) / u64::from(expected_interval)).min(255) as u8
        };
        let (last_sr, delay_since_sr) = match self.last_sr {
            Some((lsr, at)) => {
                // In units of 1/65536 s.
                let d = now.duration_since(at).as_secs_f64() * 65_536.0;
                (lsr, d.min(f64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        Report {
            fraction_lost,
            total_lost,
            highest: self.max,
            jitter: self.jitter as u32,
            last_sr,
            delay_since_sr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_counted_per_interval_and_in_total_across_a_wrap() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(48_000, t0);
        // 65,530 .. 65,535, 0 .. 9 with 3 and 4 lost: 16 expected, 14 received.
        let seqs: Vec<u16> = (65_530..=65_535)
            .chain((0..10).filter(|s| *s != 3 && *s != 4))
            .collect();
        for (i, seq) in seqs.iter().enumerate() {
            s.on_packet(
                *seq,
                i as u32 * 960,
                t0 + Duration::from_millis(20 * i as u64),
            );
        }
        let r = s.report(t0 + Duration::from_secs(1));
        assert_eq!(r.highest, 0x1_0009, "one wrap, then 9");
        assert_eq!(r.total_lost, 2);
        assert_eq!(r.fraction_lost, (2 * 256 / 16) as u8);
        // Nothing lost since: the fraction goes back to 0, the total stays.
        for seq in 10..20u16 {
            s.on_packet(
                seq,
                u32::from(seq) * 960,
                t0 + Duration::from_millis(20 * u64::from(seq)),
            );
        }
        let r = s.report(t0 + Duration::from_secs(2));
        assert_eq!((r.fraction_lost, r.total_lost, r.highest), (0, 2, 0x1_0013));
    }

    #[test]
    fn a_late_packet_does_not_move_the_highest_and_is_not_counted_lost() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(90_000, t0);
        for seq in [100u16, 101, 103, 102] {
            s.on_packet(seq, u32::from(seq) * 3000, t0);
        }
        let r = s.report(t0);
        assert_eq!(r.highest, 103);
        assert_eq!(r.total_lost, 0, "102 came late, not lost");
    }

    #[test]
    fn jitter_follows_uneven_arrival_and_stays_near_zero_for_even_arrival() {
        let t0 = Instant::now();
        let mut even = ReceiveStats::new(48_000, t0);
        let mut uneven = ReceiveStats::new(48_000, t0);
        for i in 0..200u32 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            even.on_packet(i as u16, i * 960, at);
            // Every other packet 10 ms late: 480 timestamp units of transit difference.
            let late = if i % 2 == 1 {
                Duration::from_millis(10)
            } else {
                Duration::ZERO
            };
            uneven.on_packet(i as u16, i * 960, at + late);
        }
        assert!(even.report(t0).jitter <= 1, "{:?}", even.report(t0));
        let j = uneven.report(t0).jitter;
        assert!((400..=500).contains(&j), "jitter {j}, about 480 expected");
    }

    #[test]
    fn the_last_sender_report_and_the_delay_since_are_reported() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(90_000, t0);
        s.on_packet(1, 0, t0);
        assert_eq!(s.report(t0).last_sr, 0, "none yet");
        s.on_sender_report(0x1234_5678_9abc_def0, t0);
        let r = s.report(t0 + Duration::from_millis(500));
        assert_eq!(r.last_sr, 0x5678_9abc);
        assert!((32_700..=32_800).contains(&r.delay_since_sr), "{r:?}");
    }
}
