//! SRTP for the media plane's RTP, in place: no allocation per packet.
//!
//! `rtc`'s SRTP context returns a fresh buffer for every packet it protects or unprotects; on
//! the plane that was one allocation per forwarded packet per subscriber. This module does the
//! same transforms (RFC 3711 AES-128 counter mode with HMAC-SHA1-80, and RFC 7714
//! AEAD_AES_128_GCM) on a buffer the caller owns and reuses (see [`Pool`]). RTCP, rare next to
//! media, still goes through `rtc`'s context.
//!
//! Keys are derived once, from the DTLS-exported master key and salt (key derivation rate 0,
//! RFC 5764). The rollover counter (the high 32 bits of a packet's 48-bit index) is kept per
//! SSRC each way, estimated from the sequence number as RFC 3711 appendix A says; received
//! packets are checked against a 64-packet replay window before they are accepted.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit, StreamCipher, generic_array::GenericArray};
use bytes::BytesMut;
use ring::{aead, hmac};

/// SSRCs a context tracks each way; packets for more are refused (a client has a few streams;
/// a subscriber's context sees one SSRC per leg).
pub const MAX_SSRCS: usize = 1024;
/// Packets behind the highest index still accepted once (RFC 3711 suggests at least 64).
pub const REPLAY_WINDOW: u64 = 64;
/// The longest authentication tag either profile appends.
pub const MAX_TAG: usize = 16;

const HMAC_TAG: usize = 10;
const GCM_TAG: usize = 16;

/// The SRTP protection profile DTLS agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80`: 16-byte key, 14-byte salt, 10-byte tag.
    AesCmHmacSha1_80,
    /// `SRTP_AEAD_AES_128_GCM`: 16-byte key, 12-byte salt, 16-byte tag.
    AeadAes128Gcm,
}

impl Profile {
    /// Master salt length.
    pub fn salt_len(self) -> usize {
        match self {
            Profile::AesCmHmacSha1_80 => 14,
            Profile::AeadAes128Gcm => 12,
        }
    }

    /// Bytes appended to a protected packet.
    pub fn tag_len(self) -> usize {
        match self {
            Profile::AesCmHmacSha1_80 => HMAC_TAG,
            Profile::AeadAes128Gcm => GCM_TAG,
        }
    }
}

/// Why a packet was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrtpError {
    /// Shorter than its header and tag, or not RTP version 2.
    #[error("not an RTP packet")]
    Malformed,
    /// The tag did not verify: forged, corrupted or under other keys.
    #[error("SRTP authentication failed")]
    Auth,
    /// Already received, or older than the replay window.
    #[error("SRTP replay")]
    Replay,
    /// More SSRCs than [`MAX_SSRCS`].
    #[error("too many SSRCs")]
    TooManySsrcs,
    /// The master key or salt has the wrong length.
    #[error("bad SRTP key material")]
    Key,
}

/// The byte length of an RTP packet's header (fixed part, CSRCs, extension), checked against
/// the packet's length.
pub fn header_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let mut n = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(n + 2..n + 4)?;
        n += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (n <= packet.len()).then_some(n)
}

/// An RTP packet's SSRC and sequence number (the caller checked [`header_len`]).
fn ssrc_seq(packet: &[u8]) -> (u32, u16) {
    (
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        u16::from_be_bytes([packet[2], packet[3]]),
    )
}

/// One SSRC's place in its sequence: the highest index seen and which packets near it were.
#[derive(Clone, Copy)]
struct SsrcState {
    ssrc: u32,
    /// The highest 48-bit index so far.
    highest: u64,
    /// Bit `k` set: index `highest - k` was received (bit 0 is `highest` itself).
    seen: u64,
}

impl SsrcState {
    /// The packet's 48-bit index, from its sequence number and the highest so far (RFC 3711,
    /// appendix A: the guess that puts it nearest the highest index).
    fn estimate(&self, seq: u16) -> u64 {
        let roc = self.highest >> 16;
        let s_l = (self.highest & 0xffff) as u16;
        let guess = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                roc.wrapping_sub(1)
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc + 1
        } else {
            roc
        };
        // Before the first wrap there is no earlier cycle to go back to.
        if guess > (1u64 << 32) - 1 {
            u64::from(seq)
        } else {
            (guess << 16) | u64::from(seq)
        }
    }

    fn replayed(&self, index: u64) -> bool {
        if index > self.highest {
            return false;
        }
        let behind = self.highest - index;
        behind >= REPLAY_WINDOW || self.seen & (1 << behind) != 0
    }

    fn accept(&mut self, index: u64) {
        if index > self.highest {
            let ahead = index - self.highest;
            self.seen = if ahead >= 64 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.highest = index;
        } else {
            self.seen |= 1 << (self.highest - index);
        }
    }
}

/// SSRC states, a short list searched in order (a transport has few SSRCs each way).
#[derive(Default)]
struct States(Vec<SsrcState>);

impl States {
    /// The SSRC's state, or a fresh one (its first packet starts its first cycle; nothing
    /// before it was seen) if there is room for it; `None` says it is not stored yet.
    fn find(&self, ssrc: u32, seq: u16) -> Result<(Option<usize>, SsrcState), SrtpError> {
        if let Some(i) = self.0.iter().position(|s| s.ssrc == ssrc) {
            return Ok((Some(i), self.0[i]));
        }
        if self.0.len() >= MAX_SSRCS {
            return Err(SrtpError::TooManySsrcs);
        }
        let fresh = SsrcState {
            ssrc,
            highest: u64::from(seq),
            seen: 0,
        };
        Ok((None, fresh))
    }

    fn store(&mut self, at: Option<usize>, state: SsrcState) {
        match at {
            Some(i) => self.0[i] = state,
            None => self.0.push(state),
        }
    }
}

enum Keys {
    Cm {
        aes: Aes128,
        salt: [u8; 14],
        auth: hmac::Key,
    },
    Gcm {
        key: aead::LessSafeKey,
        salt: [u8; 12],
    },
}

/// One direction's SRTP context for RTP: ours for what we send, the client's for what we
/// receive.
pub struct RtpContext {
    profile: Profile,
    keys: Keys,
    states: States,
}

/// RFC 3711 4.3.1 with a key derivation rate of 0: AES-CM of the salt with the label in byte 7.
fn derive(master: &Aes128, salt: &[u8], label: u8, out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = [0u8; 16];
        block[..salt.len()].copy_from_slice(salt);
        block[7] ^= label;
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        let mut b = GenericArray::from(block);
        master.encrypt_block(&mut b);
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

impl RtpContext {
    /// A context from a master key (16 bytes) and salt (the profile's length).
    pub fn new(profile: Profile, master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        if master_key.len() != 16 || master_salt.len() != profile.salt_len() {
            return Err(SrtpError::Key);
        }
        let master = Aes128::new(GenericArray::from_slice(master_key));
        let mut session_key = [0u8; 16];
        derive(&master, master_salt, 0x00, &mut session_key);
        let keys = match profile {
            Profile::AesCmHmacSha1_80 => {
                let mut auth = [0u8; 20];
                derive(&master, master_salt, 0x01, &mut auth);
                let mut salt = [0u8; 14];
                derive(&master, master_salt, 0x02, &mut salt);
                Keys::Cm {
                    aes: Aes128::new(GenericArray::from_slice(&session_key)),
                    salt,
                    auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth),
                }
            }
            Profile::AeadAes128Gcm => {
                let mut salt = [0u8; 12];
                derive(&master, master_salt, 0x02, &mut salt);
                let unbound = aead::UnboundKey::new(&aead::AES_128_GCM, &session_key)
                    .map_err(|_| SrtpError::Key)?;
                Keys::Gcm {
                    key: aead::LessSafeKey::new(unbound),
                    salt,
                }
            }
        };
        Ok(RtpContext {
            profile,
            keys,
            states: States::default(),
        })
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Protects the RTP packet in `buf` in place: the payload is encrypted and the tag
    /// appended. `buf` should have [`MAX_TAG`] bytes of spare capacity, or it grows.
    pub fn protect(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        let hl = header_len(buf).ok_or(SrtpError::Malformed)?;
        let (ssrc, seq) = ssrc_seq(buf);
        let (at, mut state) = self.states.find(ssrc, seq)?;
        let index = state.estimate(seq);
        state.accept(index);
        self.states.store(at, state);
        let roc = (index >> 16) as u32;
        match &self.keys {
            Keys::Cm { aes, salt, auth } => {
                cm_keystream(aes, salt, ssrc, index, &mut buf[hl..]);
                let tag = cm_tag(auth, buf, roc);
                buf.extend_from_slice(&tag.as_ref()[..HMAC_TAG]);
            }
            Keys::Gcm { key, salt } => {
                let nonce = gcm_nonce(salt, ssrc, roc, seq);
                let (aad, body) = buf.split_at_mut(hl);
                let tag = key
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(&*aad), body)
                    .map_err(|_| SrtpError::Key)?;
                buf.extend_from_slice(tag.as_ref());
            }
        }
        Ok(())
    }

    /// Checks and decrypts the SRTP packet in `buf` in place, leaving the RTP packet (the tag
    /// removed). A packet refused leaves the context as it was.
    pub fn unprotect(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        let tag_len = self.profile.tag_len();
        if buf.len() < 12 + tag_len {
            return Err(SrtpError::Malformed);
        }
        let body_end = buf.len() - tag_len;
        let hl = header_len(&buf[..body_end]).ok_or(SrtpError::Malformed)?;
        let (ssrc, seq) = ssrc_seq(buf);
        let (at, mut state) = self.states.find(ssrc, seq)?;
        let index = state.estimate(seq);
        if state.replayed(index) {
            return Err(SrtpError::Replay);
        }
        let roc = (index >> 16) as u32;
        match &self.keys {
            Keys::Cm { aes, salt, auth } => {
                let want = cm_tag(auth, &buf[..body_end], roc);
                if !constant_time_eq(&want.as_ref()[..HMAC_TAG], &buf[body_end..]) {
                    return Err(SrtpError::Auth);
                }
                cm_keystream(aes, salt, ssrc, index, &mut buf[hl..body_end]);
            }
            Keys::Gcm { key, salt } => {
                let nonce = gcm_nonce(salt, ssrc, roc, seq);
                let (aad, body) = buf.split_at_mut(hl);
                key.open_in_place(nonce, aead::Aad::from(&*aad), body)
                    .map_err(|_| SrtpError::Auth)?;
            }
        }
        buf.truncate(body_end);
        state.accept(index);
        self.states.store(at, state);
        Ok(())
    }
}

/// AES-CM: the keystream starts at (salt << 16) XOR (SSRC << 64) XOR (index << 16).
fn cm_keystream(aes: &Aes128, salt: &[u8; 14], ssrc: u32, index: u64, data: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, x) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= x;
    }
    // The 48-bit index, shifted left 16, lands in bytes 8..14.
    for (b, x) in iv[6..14].iter_mut().zip(index.to_be_bytes()) {
        *b ^= x;
    }
    let core = ctr::CtrCore::<Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(
        aes.clone(),
        &GenericArray::from(iv),
    );
    ctr::Ctr128BE::<Aes128>::from_core(core).apply_keystream(data);
}

/// HMAC-SHA1 over the packet and the rollover counter.
fn cm_tag(auth: &hmac::Key, packet: &[u8], roc: u32) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(auth);
    ctx.update(packet);
    ctx.update(&roc.to_be_bytes());
    ctx.sign()
}

/// RFC 7714 8.1: (0x0000 || SSRC || ROC || SEQ) XOR salt.
fn gcm_nonce(salt: &[u8; 12], ssrc: u32, roc: u32, seq: u16) -> aead::Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&roc.to_be_bytes());
    iv[10..12].copy_from_slice(&seq.to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    aead::Nonce::assume_unique_for_key(iv)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Packet buffers reused across packets: taken for a datagram received or a packet to send,
/// given back once it has been read or handed to the kernel. Allocates only when every buffer
/// is out (counted) or one was kept by whoever took it.
pub struct Pool {
    free: Vec<BytesMut>,
    /// Buffers allocated because none was free.
    pub allocated: u64,
}

/// Each buffer's capacity: a full-size datagram with room for the tag.
pub const BUFFER: usize = 1500 + MAX_TAG + 64;
/// Free buffers kept at most (more are freed).
pub const POOL_MAX: usize = 4096;

impl Default for Pool {
    fn default() -> Self {
        Pool {
            free: Vec::with_capacity(POOL_MAX),
            allocated: 0,
        }
    }
}

impl Pool {
    /// An empty buffer of [`BUFFER`] capacity.
    pub fn take(&mut self) -> BytesMut {
        self.free.pop().unwrap_or_else(|| {
            self.allocated += 1;
            BytesMut::with_capacity(BUFFER)
        })
    }

    /// Gives a buffer back (dropped if the pool is full or it lost its capacity).
    pub fn give(&mut self, mut b: BytesMut) {
        b.clear();
        if self.free.len() < POOL_MAX && b.capacity() >= BUFFER {
            self.free.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Marshal;
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;

    const KEY: [u8; 16] = *b"0123456789abcdef";
    const SALT: [u8; 14] = *b"saltsaltsalt14";

    fn packet(seq: u16, ssrc: u32, extension: bool) -> BytesMut {
        let mut header = rtc::rtp::header::Header {
            version: 2,
            payload_type: 111,
            sequence_number: seq,
            timestamp: u32::from(seq) * 960,
            ssrc,
            marker: seq % 7 == 0,
            ..Default::default()
        };
        if extension {
            header
                .set_extension(1, bytes::Bytes::from_static(&[0x90]))
                .unwrap();
            header
                .set_extension(3, bytes::Bytes::from_static(&[1, 2, 3]))
                .unwrap();
        }
        let p = rtc::rtp::Packet {
            header,
            payload: bytes::Bytes::from(vec![seq as u8; 20 + usize::from(seq % 200)]),
        };
        BytesMut::from(&p.marshal().unwrap()[..])
    }

    fn theirs(profile: Profile) -> (Context, Context) {
        let p = match profile {
            Profile::AesCmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Profile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        };
        let provider = rtc::crypto::default_provider().unwrap();
        let salt = &SALT[..profile.salt_len()];
        let make = || Context::new(&KEY, salt, p, None, None, provider.crypto()).unwrap();
        (make(), make())
    }

    fn ours(profile: Profile) -> RtpContext {
        RtpContext::new(profile, &KEY, &SALT[..profile.salt_len()]).unwrap()
    }

    /// Sequence numbers across a wrap (the rollover counter goes to 1), with reordering.
    fn sequence() -> Vec<u16> {
        let mut s: Vec<u16> = (65_500..=65_535).chain(0..40).collect();
        s.swap(35, 38); // 65535 after 2, from the previous cycle
        s
    }

    #[test]
    fn what_we_protect_rtc_unprotects_and_the_other_way_round_across_a_wrap() {
        for profile in [Profile::AesCmHmacSha1_80, Profile::AeadAes128Gcm] {
            for ext in [false, true] {
                let (mut their_out, mut their_in) = theirs(profile);
                let (mut our_out, mut our_in) = (ours(profile), ours(profile));
                for seq in sequence() {
                    let plain = packet(seq, 0xdead_beef, ext);
                    let mut mine = plain.clone();
                    our_out.protect(&mut mine).unwrap();
                    assert_eq!(mine.len(), plain.len() + profile.tag_len());
                    let by_them = their_in.decrypt_rtp(&mine).unwrap();
                    assert_eq!(&by_them[..], &plain[..], "{profile:?} seq {seq}");
                    let mut from_them = their_out.encrypt_rtp(&plain).unwrap();
                    assert_eq!(
                        &from_them[..],
                        &mine[..],
                        "{profile:?} seq {seq}: same bytes"
                    );
                    our_in.unprotect(&mut from_them).unwrap();
                    assert_eq!(&from_them[..], &plain[..]);
                }
            }
        }
    }

    #[test]
    fn forged_replayed_and_truncated_packets_are_refused_and_change_nothing() {
        for profile in [Profile::AesCmHmacSha1_80, Profile::AeadAes128Gcm] {
            let mut out = ours(profile);
            let mut inn = ours(profile);
            let mut protected: Vec<BytesMut> = (100..200u16)
                .map(|s| {
                    let mut p = packet(s, 7, true);
                    out.protect(&mut p).unwrap();
                    p
                })
                .collect();
            let mut first = protected[0].clone();
            inn.unprotect(&mut first).unwrap();
            // A flipped payload bit, a flipped header bit: refused.
            let mut forged = protected[1].clone();
            let last = forged.len() - 20;
            forged[last] ^= 1;
            assert_eq!(inn.unprotect(&mut forged), Err(SrtpError::Auth));
            let mut forged = protected[1].clone();
            forged[1] ^= 0x01;
            assert_eq!(inn.unprotect(&mut forged), Err(SrtpError::Auth));
            // Nothing was spoiled by the forgeries: the real one still goes through.
            inn.unprotect(&mut protected[1]).unwrap();
            // A replay of either is refused.
            let mut again = protected[0].clone();
            assert_eq!(inn.unprotect(&mut again), Err(SrtpError::Replay));
            // Skip ahead past the window; the old ones are then too old.
            for p in protected[2..].iter_mut().skip(80) {
                inn.unprotect(p).unwrap();
            }
            let mut old = protected[3].clone();
            assert_eq!(inn.unprotect(&mut old), Err(SrtpError::Replay));
            // Within the window, a late one is still accepted once.
            let mut late = protected[60].clone();
            inn.unprotect(&mut late).unwrap();
            let mut late = protected[60].clone();
            assert_eq!(inn.unprotect(&mut late), Err(SrtpError::Replay));
            // Too short, not RTP.
            let mut short = BytesMut::from(&[0x80u8; 10][..]);
            assert_eq!(inn.unprotect(&mut short), Err(SrtpError::Malformed));
            let mut junk = BytesMut::from(&[0x00u8; 40][..]);
            assert_eq!(inn.unprotect(&mut junk), Err(SrtpError::Malformed));
        }
    }

    #[test]
    fn ssrcs_are_bounded() {
        let mut out = ours(Profile::AeadAes128Gcm);
        for ssrc in 0..MAX_SSRCS as u32 {
            out.protect(&mut packet(1, ssrc, false)).unwrap();
        }
        assert_eq!(
            out.protect(&mut packet(1, u32::MAX, false)),
            Err(SrtpError::TooManySsrcs)
        );
    }

    #[test]
    fn header_lengths() {
        assert_eq!(header_len(&packet(1, 1, false)), Some(12));
        // One-byte extensions: 4-byte preamble and two words of elements.
        assert_eq!(header_len(&packet(1, 1, true)), Some(12 + 4 + 8));
        let mut p = packet(1, 1, true);
        p.truncate(14);
        assert_eq!(header_len(&p), None);
    }

    #[test]
    fn a_pool_reuses_its_buffers() {
        let mut pool = Pool::default();
        let a = pool.take();
        pool.give(a);
        for _ in 0..10 {
            let mut b = pool.take();
            b.extend_from_slice(&[0u8; 1200]);
            pool.give(b);
        }
        assert_eq!(pool.allocated, 1);
    }
}
