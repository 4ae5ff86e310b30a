//! A small reorder buffer keyed by RTP sequence number.
//!
//! Packets come out in sequence order. In the common case (no loss, no reordering) a packet
//! leaves as soon as it arrives; only a hole in the sequence holds packets back, and at most
//! `depth` sequence numbers ahead of the hole. When a packet would fall outside that window the
//! hole is given up on and reported as lost, so the decoder can conceal it.
//!
//! Clock-free: the only notion of "too late" is distance in sequence numbers, plus an explicit
//! [`ReorderBuffer::flush`] the owner calls when the stream goes quiet.

use std::collections::VecDeque;

/// Sequence distance beyond which a packet is taken as a stream restart, not as reordering.
const RESTART_DISTANCE: i32 = 1_000;

/// A packet leaving the buffer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered<T> {
    /// Its RTP sequence number.
    pub seq: u16,
    /// How many sequence numbers right before this one never arrived in time.
    pub lost_before: u16,
    /// The packet.
    pub item: T,
}

/// Counters a reorder buffer keeps about its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderCounters {
    /// Sequence numbers given up on.
    pub lost: u64,
    /// Packets that arrived after their slot was given up on, or twice; they were discarded.
    pub late_or_duplicate: u64,
    /// Sequence jumps taken as a stream restart.
    pub restarts: u64,
}

/// Puts packets back into RTP sequence order within a bounded window.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    /// Slot `ext % depth` holds the packet whose extended (wrap-free) sequence number is `ext`,
    /// for `ext` in `[next, next + depth)`.
    slots: Vec<Option<(u16, T)>>,
    next: Option<u64>,
    lost_run: u16,
    buffered: usize,
    out: VecDeque<Ordered<T>>,
    counters: ReorderCounters,
}

impl<T> ReorderBuffer<T> {
    /// A buffer that holds back at most `depth` packets (at least 1) while waiting for a hole.
    pub fn new(depth: usize) -> Self {
        let depth = depth.max(1);
        let mut slots = Vec::with_capacity(depth);
        slots.resize_with(depth, || None);
        Self {
            slots,
            next: None,
            lost_run: 0,
            buffered: 0,
            out: VecDeque::with_capacity(depth * 2 + 1),
            counters: ReorderCounters::default(),
        }
    }

    /// How many packets the buffer may hold back.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// Packets currently held back waiting for a hole to fill.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// What the buffer has seen so far.
    pub fn counters(&self) -> ReorderCounters {
        self.counters
    }

    /// Accepts a packet; ready packets are then available from [`ReorderBuffer::pop`].
    pub fn push(&mut self, seq: u16, item: T) {
        // Start the extended numbering high so it never has to go below zero.
        let next = *self.next.get_or_insert(u64::from(seq) + (1 << 32));
        let ahead = i32::from(seq.wrapping_sub(next as u16) as i16);
        let mut ext = next.wrapping_add_signed(i64::from(ahead));
        if ahead.abs() >= RESTART_DISTANCE {
            self.counters.restarts += 1;
            self.flush();
            // Renumber from a fresh 2^16 block so extended numbers keep growing.
            ext = (((self.next.unwrap_or(next) >> 16) + 1) << 16) | u64::from(seq);
            self.next = Some(ext);
        } else if ahead < 0 {
            self.counters.late_or_duplicate += 1;
            return;
        } else if ahead as usize >= self.depth() {
            self.give_up_until(ext);
        }
        let slot = self.slot(ext);
        if self.slots[slot].is_some() {
            self.counters.late_or_duplicate += 1;
            return;
        }
        self.slots[slot] = Some((seq, item));
        self.buffered += 1;
        self.release_ready();
    }

    /// Takes the next in-order packet, if one is ready.
    pub fn pop(&mut self) -> Option<Ordered<T>> {
        self.out.pop_front()
    }

    /// Gives up on every hole and releases all held packets (call when the stream goes quiet).
    pub fn flush(&mut self) {
        while self.buffered > 0 {
            self.skip_one();
            self.release_ready();
        }
    }

    fn slot(&self, ext: u64) -> usize {
        (ext % self.depth() as u64) as usize
    }

    /// Moves the window forward until `ext` fits in it, releasing or giving up on each slot.
    fn give_up_until(&mut self, ext: u64) {
        while let Some(next) = self.next {
            if ext - next < self.depth() as u64 {
                return;
            }
            if self.slots[self.slot(next)].is_some() {
                self.release_ready();
            } else {
                self.skip_one();
            }
        }
    }

    fn skip_one(&mut self) {
        if let Some(next) = self.next {
            self.lost_run = self.lost_run.saturating_add(1);
            self.counters.lost += 1;
            self.next = Some(next + 1);
        }
    }

    fn release_ready(&mut self) {
        while let Some(next) = self.next {
            let slot = self.slot(next);
            let Some((seq, item)) = self.slots[slot].take() else {
                return;
            };
            self.buffered -= 1;
            self.out.push_back(Ordered {
                seq,
                lost_before: self.lost_run,
                item,
            });
            self.lost_run = 0;
            self.next = Some(next + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rb: &mut ReorderBuffer<u16>) -> Vec<(u16, u16)> {
        std::iter::from_fn(|| rb.pop())
            .map(|o| (o.seq, o.lost_before))
            .collect()
    }

    #[test]
    fn in_order_packets_pass_straight_through() {
        let mut rb = ReorderBuffer::new(5);
        for seq in 10..15 {
            rb.push(seq, seq);
            assert_eq!(drain(&mut rb), vec![(seq, 0)]);
        }
        assert_eq!(rb.buffered(), 0);
    }

    #[test]
    fn swapped_packets_come_out_in_order() {
        let mut rb = ReorderBuffer::new(5);
        rb.push(1, 1);
        rb.push(3, 3);
        rb.push(2, 2);
        rb.push(4, 4);
        assert_eq!(drain(&mut rb), vec![(1, 0), (2, 0), (3, 0), (4, 0)]);
        assert_eq!(rb.counters(), ReorderCounters::default());
    }

    #[test]
    fn a_hole_is_given_up_on_when_the_window_is_exceeded() {
        let mut rb = ReorderBuffer::new(3);
        rb.push(1, 1);
        for seq in 3..=4 {
            rb.push(seq, seq);
        }
        assert_eq!(drain(&mut rb), vec![(1, 0)], "3 and 4 wait for 2");
        rb.push(5, 5);
        assert_eq!(drain(&mut rb), vec![(3, 1), (4, 0), (5, 0)]);
        assert_eq!(rb.counters().lost, 1);
        rb.push(2, 2);
        assert!(drain(&mut rb).is_empty(), "2 arrives too late");
        assert_eq!(rb.counters().late_or_duplicate, 1);
    }

    #[test]
    fn a_far_jump_gives_up_several_holes_at_once() {
        let mut rb = ReorderBuffer::new(4);
        rb.push(1, 1);
        rb.push(3, 3);
        rb.push(9, 9);
        assert_eq!(drain(&mut rb), vec![(1, 0), (3, 1)]);
        rb.push(6, 6);
        rb.push(7, 7);
        rb.push(8, 8);
        assert_eq!(drain(&mut rb), vec![(6, 2), (7, 0), (8, 0), (9, 0)]);
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let mut rb = ReorderBuffer::new(5);
        rb.push(65534, 65534);
        rb.push(0, 0);
        rb.push(65535, 65535);
        rb.push(2, 2);
        rb.push(1, 1);
        assert_eq!(
            drain(&mut rb),
            vec![(65534, 0), (65535, 0), (0, 0), (1, 0), (2, 0)]
        );
    }

    #[test]
    fn flush_releases_everything_and_reports_holes() {
        let mut rb = ReorderBuffer::new(5);
        rb.push(1, 1);
        rb.push(4, 4);
        rb.push(6, 6);
        assert_eq!(drain(&mut rb), vec![(1, 0)]);
        rb.flush();
        assert_eq!(drain(&mut rb), vec![(4, 2), (6, 1)]);
        assert_eq!(rb.buffered(), 0);
        rb.push(7, 7);
        assert_eq!(drain(&mut rb), vec![(7, 0)]);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut rb = ReorderBuffer::new(5);
        rb.push(1, 1);
        rb.push(3, 3);
        rb.push(3, 3);
        rb.push(1, 1);
        assert_eq!(rb.counters().late_or_duplicate, 2);
        rb.push(2, 2);
        assert_eq!(drain(&mut rb), vec![(1, 0), (2, 0), (3, 0)]);
    }

    #[test]
    fn a_restart_flushes_and_resyncs() {
        let mut rb = ReorderBuffer::new(5);
        rb.push(100, 100);
        rb.push(102, 102);
        rb.push(30_000, 30_000);
        rb.push(30_001, 30_001);
        assert_eq!(
            drain(&mut rb),
            vec![(100, 0), (102, 1), (30_000, 0), (30_001, 0)]
        );
        assert_eq!(rb.counters().restarts, 1);
    }
}
