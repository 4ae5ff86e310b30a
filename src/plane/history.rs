//! The last packets of a published video stream, kept so a subscriber's NACK can be answered
//! from the plane (RFC 4585 generic NACK): the plane forwards the publisher's sequence numbers
//! unchanged, so the sequence number a subscriber names is the one stored here.
//!
//! Slots are allocated once, when the stream is published; storing and finding a packet
//! allocate nothing. A slot is found by `seq % HISTORY` and holds the sequence number it was
//! written for, so a packet overwritten by a later one is a miss, not a wrong answer.

/// Packets kept per stream: about two seconds of 1.5 Mbit/s video (a NACK comes within a
/// round trip or two).
pub const HISTORY: usize = 256;
/// The longest packet kept (decrypted RTP, header included).
pub const PACKET_MAX: usize = 1500;

struct Slot {
    seq: u16,
    len: u16,
    data: [u8; PACKET_MAX],
}

/// One stream's recent packets.
pub struct History {
    slots: Box<[Slot]>,
}

impl Default for History {
    fn default() -> Self {
        let slots = (0..HISTORY)
            .map(|_| Slot {
                seq: 0,
                len: 0,
                data: [0; PACKET_MAX],
            })
            .collect();
        History { slots }
    }
}

impl History {
    /// Keeps `packet` (an RTP packet, decrypted) under its sequence number; one too long to
    /// keep is not kept (a later NACK for it is a miss).
    pub fn store(&mut self, seq: u16, packet: &[u8]) {
        let slot = &mut self.slots[usize::from(seq) % HISTORY];
        match slot.data.get_mut(..packet.len()) {
            Some(d) => {
                d.copy_from_slice(packet);
                slot.seq = seq;
                slot.len = packet.len() as u16;
            }
            None => slot.len = 0,
        }
    }

    /// The packet stored for `seq`, if it is still there.
    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        let slot = &self.slots[usize::from(seq) % HISTORY];
        (slot.len > 0 && slot.seq == seq).then(|| &slot.data[..usize::from(slot.len)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_found_until_a_later_one_takes_its_slot() {
        let mut h = History::default();
        assert_eq!(h.get(7), None, "nothing stored yet");
        h.store(7, &[1, 2, 3]);
        assert_eq!(h.get(7), Some(&[1, 2, 3][..]));
        assert_eq!(h.get(7 + HISTORY as u16), None, "same slot, other number");
        h.store(7 + HISTORY as u16, &[4]);
        assert_eq!(h.get(7), None, "overwritten: a miss, not the newer packet");
        assert_eq!(h.get(7 + HISTORY as u16), Some(&[4][..]));
        // Across the sequence wrap.
        h.store(65_535, &[9]);
        h.store(0, &[10]);
        assert_eq!(h.get(65_535), Some(&[9][..]));
        assert_eq!(h.get(0), Some(&[10][..]));
    }

    #[test]
    fn a_packet_too_long_to_keep_is_a_miss() {
        let mut h = History::default();
        h.store(3, &[1]);
        h.store(3, &[0; PACKET_MAX + 1]);
        assert_eq!(h.get(3), None, "not the older packet either");
        h.store(4, &[5; PACKET_MAX]);
        assert_eq!(h.get(4).map(<[u8]>::len), Some(PACKET_MAX));
    }
}
