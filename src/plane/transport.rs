//! One WebRTC client's transport as the media plane sees it: ICE-lite, DTLS, SRTP, sans-IO.
//!
//! The plane owns the sockets; a `Transport` is fed the datagrams that came from its client and
//! hands back the datagrams to send. What it does per datagram:
//!
//! * **STUN** (first byte 0-3): a Binding request whose USERNAME starts with our ufrag and whose
//!   MESSAGE-INTEGRITY checks with our password is answered (XOR-MAPPED-ADDRESS, integrity,
//!   fingerprint); its source becomes a validated address, and the one the client nominated
//!   (USE-CANDIDATE) the address media goes to. We are ICE-lite: we never send checks.
//! * **DTLS** (20-63), only from a validated address: we are the DTLS server (our answers say
//!   `a=setup:passive`); the client's certificate must match the fingerprint in its SDP. When
//!   the handshake completes, the SRTP keys are exported and both SRTP contexts made.
//! * **SRTP/SRTCP** (128-191): decrypted with the client's context and handed out as events.
//!   RTP is copied into a buffer of the caller's [`Pool`] and decrypted there, in place
//!   ([`super::srtp`]); RTCP goes through `rtc`'s SRTCP context.
//!
//! Sending RTP is [`Transport::send_rtp`]: header and payload are copied into a pooled buffer
//! and encrypted in place with our context; the datagram goes to the nominated address. Forwarded packets
//! never pass through a handler chain or a channel (docs/performance.md, "Choosing the media
//! plane").

use super::srtp::{self, Pool, RtpContext};
use bytes::BytesMut;
use rtc::crypto::{HashAlgorithm, RTCCryptoProvider};
use rtc::dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::TransportProtocol;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use rtc::stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter};
use rtc::stun::xoraddr::XorMappedAddress;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Addresses that passed a connectivity check, kept per transport (a client has a few
/// candidates; more are refused).
pub const MAX_VALIDATED: usize = 8;
/// Without a connectivity check (consent, RFC 7675) for this long, the transport fails.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a transport reports.
#[derive(Debug)]
pub enum TransportEvent {
    /// DTLS completed; SRTP is ready both ways.
    Connected,
    /// A decrypted RTP packet (header and payload, serialised).
    Rtp(BytesMut),
    /// A decrypted RTCP compound packet.
    Rtcp(BytesMut),
    /// Consent expired, DTLS failed, or the client closed.
    Failed(String),
}

/// Errors the transport reports to its caller for one call.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Not connected yet (no nominated address or no SRTP keys).
    #[error("the transport is not connected")]
    NotConnected,
    /// SRTP or DTLS said no.
    #[error("{0}")]
    Crypto(String),
}

/// This server's DTLS identity, shared by every transport of a process.
pub struct Identity {
    certificate: Certificate,
    /// `sha-256 AA:BB:...` as written in SDP.
    pub fingerprint: String,
    provider: Arc<dyn RTCCryptoProvider>,
}

impl Identity {
    /// Generates a self-signed ECDSA P-256 certificate.
    pub fn generate() -> Result<Self, TransportError> {
        let provider =
            rtc::crypto::default_provider().map_err(|e| TransportError::Crypto(e.to_string()))?;
        let certificate =
            Certificate::generate_self_signed(vec!["conclave".into()], provider.crypto())
                .map_err(|e| TransportError::Crypto(e.to_string()))?;
        let der = certificate.certificate[0].as_ref();
        let fingerprint = sha256_fingerprint(&*provider, der)?;
        Ok(Identity {
            certificate,
            fingerprint,
            provider,
        })
    }

    /// The certificate (a DTLS client made from this identity presents it too).
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The crypto provider the certificate was made with.
    pub fn provider(&self) -> &Arc<dyn RTCCryptoProvider> {
        &self.provider
    }
}

/// `AA:BB:...` (upper-case hex pairs) of a DER certificate, as SDP's `a=fingerprint` writes it.
pub fn sha256_fingerprint(
    provider: &dyn RTCCryptoProvider,
    der: &[u8],
) -> Result<String, TransportError> {
    let hash = provider
        .crypto()
        .hash(HashAlgorithm::Sha256, der)
        .map_err(|e| TransportError::Crypto(e.to_string()))?;
    let hex: Vec<String> = hash.iter().map(|b| format!("{b:02X}")).collect();
    Ok(hex.join(":"))
}

/// The ICE credentials and DTLS fingerprint each side put in its SDP.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Our ufrag (the first half of the client's USERNAME).
    pub local_ufrag: String,
    /// Our password (keys the client's MESSAGE-INTEGRITY).
    pub local_pwd: String,
    /// The client's `a=fingerprint` value for sha-256 (hex pairs, any case).
    pub remote_fingerprint: String,
}

impl Credentials {
    /// Fresh random local credentials (ufrag 8 and password 24 characters, RFC 8839 minimums
    /// are 4 and 22) for a client whose fingerprint is `remote_fingerprint`.
    pub fn generate(provider: &dyn RTCCryptoProvider, remote_fingerprint: String) -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
        let mut bytes = [0u8; 32];
        let _ = provider.random().fill(&mut bytes);
        let text: String = bytes
            .iter()
            .map(|b| ALPHABET[(*b as usize) % 64] as char)
            .collect();
        Credentials {
            local_ufrag: text[..8].to_owned(),
            local_pwd: text[8..].to_owned(),
            remote_fingerprint,
        }
    }
}

/// The SRTP and SRTCP contexts of a completed DTLS handshake, either side's: "local" protects
/// what this end sends, "remote" checks what the other end sends (with a 64-packet replay
/// window). The load tool's light clients use it as the DTLS client.
pub struct SrtpContexts {
    /// Protects our RTCP.
    pub local_rtcp: Context,
    /// Checks the peer's RTCP.
    pub remote_rtcp: Context,
    /// Protects our RTP, in place.
    pub local_rtp: RtpContext,
    /// Checks the peer's RTP, in place.
    pub remote_rtp: RtpContext,
}

/// Derives [`SrtpContexts`] from a finished handshake (RFC 5764 key export).
pub fn srtp_contexts(
    state: &rtc::dtls::state::State,
    provider: &dyn RTCCryptoProvider,
) -> Result<SrtpContexts, String> {
    let profile = match state.srtp_protection_profile() {
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
            ProtectionProfile::Aes128CmHmacSha1_80
        }
        other => return Err(format!("unsupported SRTP profile {other:?}")),
    };
    let mut config = rtc::srtp::config::Config {
        profile,
        ..Default::default()
    };
    let err = |e: &dyn std::fmt::Display| format!("SRTP keys: {e}");
    let km = state
        .export_keying_material(
            rtc::srtp::config::LABEL_EXTRACTOR_DTLS_SRTP,
            &[],
            config.keying_material_len(),
        )
        .map_err(|e| err(&e))?;
    config
        .set_session_keys_from_keying_material(km.as_ref(), state.is_client())
        .map_err(|e| err(&e))?;
    let crypto = provider.crypto();
    let k = &config.keys;
    let local_rtcp = Context::new(
        &k.local_master_key,
        &k.local_master_salt,
        profile,
        None,
        None,
        crypto,
    )
    .map_err(|e| err(&e))?;
    let remote_rtcp = Context::new(
        &k.remote_master_key,
        &k.remote_master_salt,
        profile,
        Some(rtc::srtp::option::srtp_replay_protection(64)),
        Some(rtc::srtp::option::srtcp_replay_protection(64)),
        crypto,
    )
    .map_err(|e| err(&e))?;
    let ours = match profile {
        ProtectionProfile::AeadAes128Gcm => srtp::Profile::AeadAes128Gcm,
        _ => srtp::Profile::AesCmHmacSha1_80,
    };
    Ok(SrtpContexts {
        local_rtcp,
        remote_rtcp,
        local_rtp: RtpContext::new(ours, &k.local_master_key, &k.local_master_salt)
            .map_err(|e| err(&e))?,
        remote_rtp: RtpContext::new(ours, &k.remote_master_key, &k.remote_master_salt)
            .map_err(|e| err(&e))?,
    })
}

/// The DTLS configuration of one handshake with `identity`'s certificate: the server's
/// (`client_of` is `None`; the client must present a certificate) or, as the client of
/// `client_of`, the load tool's light clients'. Either way the peer's certificate must hash
/// to `remote_fingerprint` (its SDP's sha-256 `a=fingerprint`), and both SRTP profiles and the
/// extended master secret are required.
pub fn dtls_config(
    identity: &Identity,
    remote_fingerprint: &str,
    client_of: Option<SocketAddr>,
) -> Result<rtc::dtls::config::HandshakeConfig, TransportError> {
    let expected = remote_fingerprint.to_ascii_lowercase();
    let verify_provider = identity.provider.clone();
    let mut builder = ConfigBuilder::default()
        .with_crypto_provider(identity.provider.clone())
        .with_certificates(vec![identity.certificate.clone()])
        .with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ])
        .with_insecure_skip_verify(true)
        .with_verify_peer_certificate(Some(Arc::new(move |certs: &[Vec<u8>], _| {
            let Some(first) = certs.first() else {
                return Err(rtc::shared::error::Error::ErrNonCertificate);
            };
            let got = sha256_fingerprint(&*verify_provider, first)
                .map_err(|e| rtc::shared::error::Error::Other(e.to_string()))?;
            if got.to_ascii_lowercase() == expected {
                Ok(())
            } else {
                Err(rtc::shared::error::Error::ErrNoMatchingCertificateFingerprint)
            }
        })))
        .with_extended_master_secret(ExtendedMasterSecretType::Require);
    if client_of.is_none() {
        builder = builder.with_client_auth(ClientAuthType::RequireAnyClientCert);
    }
    builder
        .build(client_of.is_some(), client_of)
        .map_err(|e| TransportError::Crypto(e.to_string()))
}

/// One client's ICE-lite + DTLS + SRTP state.
pub struct Transport {
    local_addr: SocketAddr,
    credentials: Credentials,
    provider: Arc<dyn RTCCryptoProvider>,
    dtls: Endpoint,
    /// Addresses that passed a check, with when they last did.
    validated: Vec<(SocketAddr, Instant)>,
    /// Where media goes: the address the client nominated (or the first validated one).
    selected: Option<SocketAddr>,
    nominated: bool,
    /// SRTCP (ours, the client's) once DTLS is done.
    srtcp: Option<(Context, Context)>,
    /// SRTP for RTP (ours, the client's), in place.
    rtp: Option<(RtpContext, RtpContext)>,
    transmits: VecDeque<(SocketAddr, BytesMut)>,
    events: VecDeque<TransportEvent>,
    /// SRTP/SRTCP packets refused (forged, replayed, malformed) since the owner last asked.
    refused: u64,
    failed: bool,
    created: Instant,
}

impl Transport {
    /// A transport answering on `local_addr` (the plane's socket) with `identity`.
    pub fn new(
        identity: &Identity,
        credentials: Credentials,
        local_addr: SocketAddr,
        now: Instant,
    ) -> Result<Self, TransportError> {
        let provider = identity.provider.clone();
        let config = dtls_config(identity, &credentials.remote_fingerprint, None)?;
        Ok(Transport {
            local_addr,
            credentials,
            provider,
            dtls: Endpoint::new(local_addr, TransportProtocol::UDP, Some(Arc::new(config))),
            validated: Vec::new(),
            selected: None,
            nominated: false,
            srtcp: None,
            rtp: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            refused: 0,
            failed: false,
            created: now,
        })
    }

    /// Our ufrag: the plane routes Binding requests from unknown addresses by it.
    pub fn local_ufrag(&self) -> &str {
        &self.credentials.local_ufrag
    }

    /// Where media goes, once a check passed.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether `addr` passed a connectivity check (the plane only routes such addresses here).
    pub fn is_validated(&self, addr: SocketAddr) -> bool {
        self.validated.iter().any(|(a, _)| *a == addr)
    }

    /// Whether SRTP is up.
    pub fn is_connected(&self) -> bool {
        self.rtp.is_some() && self.selected.is_some()
    }

    /// SRTP and SRTCP packets refused since the last call (the engine counts them).
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// One datagram from `from`; a decrypted RTP packet is handed out in a buffer of `pool`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        pool: &mut Pool,
    ) {
        if self.failed {
            return;
        }
        match data.first() {
            Some(0..=3) => self.handle_stun(now, from, data),
            Some(20..=63) if self.is_validated(from) => self.handle_dtls(now, from, data),
            Some(128..=191) if self.is_validated(from) => self.handle_srtp(data, pool),
            _ => {} // unchecked source or not ours: dropped (the plane counts it)
        }
    }

    fn handle_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut m = Message::new();
        if m.unmarshal_binary(data).is_err() || m.typ != BINDING_REQUEST {
            return;
        }
        let Ok(username) = m.get(ATTR_USERNAME) else {
            return;
        };
        let ours = self.credentials.local_ufrag.as_bytes();
        if username.len() <= ours.len()
            || &username[..ours.len()] != ours
            || username[ours.len()] != b':'
        {
            return;
        }
        if MessageIntegrity::check(
            &mut m,
            self.credentials.local_pwd.as_bytes(),
            self.provider.crypto(),
        )
        .is_err()
        {
            return;
        }
        let mut out = Message::new();
        let setters: [Box<dyn Setter + '_>; 5] = [
            Box::new(m.clone()),
            Box::new(BINDING_SUCCESS),
            Box::new(XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                self.credentials.local_pwd.clone(),
                self.provider.crypto(),
            )),
            Box::new(FINGERPRINT),
        ];
        if out.build(&setters).is_err() {
            return;
        }
        self.transmits
            .push_back((from, BytesMut::from(&out.raw[..])));
        if let Some(entry) = self.validated.iter_mut().find(|(a, _)| *a == from) {
            entry.1 = now;
        } else if self.validated.len() < MAX_VALIDATED {
            self.validated.push((from, now));
        } else {
            return;
        }
        let nominates = m.contains(ATTR_USE_CANDIDATE);
        if self.selected.is_none()
            || (nominates && (!self.nominated || self.selected != Some(from)))
        {
            self.selected = Some(from);
            self.nominated |= nominates;
        }
    }

    fn handle_dtls(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let result = self.dtls.read(now, from, None, BytesMut::from(data));
        self.drain_dtls();
        match result {
            Ok(events) => {
                for ev in events {
                    match ev {
                        EndpointEvent::HandshakeComplete => self.on_handshake(from),
                        EndpointEvent::PeerClosed => self.fail("the client closed DTLS".into()),
                        _ => {}
                    }
                }
            }
            Err(e) => self.fail(format!("DTLS: {e}")),
        }
    }

    fn on_handshake(&mut self, from: SocketAddr) {
        let Some(state) = self.dtls.get_connection_state(from) else {
            return;
        };
        match srtp_contexts(state, &*self.provider) {
            Ok(c) => {
                self.srtcp = Some((c.local_rtcp, c.remote_rtcp));
                self.rtp = Some((c.local_rtp, c.remote_rtp));
                self.events.push_back(TransportEvent::Connected);
            }
            Err(e) => self.fail(e),
        }
    }

    fn handle_srtp(&mut self, data: &[u8], pool: &mut Pool) {
        let (Some((_, rtcp)), Some((_, rtp))) = (&mut self.srtcp, &mut self.rtp) else {
            return;
        };
        // RTCP packet types 192-223 sit in the second byte (RFC 5761 demultiplexing).
        if data.len() > 1 && (192..=223).contains(&data[1]) {
            match rtcp.decrypt_rtcp(data) {
                Ok(p) => self.events.push_back(TransportEvent::Rtcp(p)),
                Err(_) => self.refused += 1,
            }
            return;
        }
        let mut b = pool.take();
        b.extend_from_slice(data);
        match rtp.unprotect(&mut b) {
            Ok(()) => self.events.push_back(TransportEvent::Rtp(b)),
            Err(_) => {
                self.refused += 1;
                pool.give(b);
            }
        }
    }

    /// Encrypts one RTP packet (`header` serialised as it should go out, `payload` unchanged)
    /// in a buffer of `pool` and queues it for the selected address.
    pub fn send_rtp(
        &mut self,
        pool: &mut Pool,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), TransportError> {
        let (Some(to), Some((local, _))) = (self.selected, &mut self.rtp) else {
            return Err(TransportError::NotConnected);
        };
        let mut b = pool.take();
        b.extend_from_slice(header);
        b.extend_from_slice(payload);
        if let Err(e) = local.protect(&mut b) {
            pool.give(b);
            return Err(TransportError::Crypto(e.to_string()));
        }
        self.transmits.push_back((to, b));
        Ok(())
    }

    /// Encrypts one serialised RTCP compound packet and queues it.
    pub fn send_rtcp(&mut self, packet: &[u8]) -> Result<(), TransportError> {
        let (Some(to), Some((local, _))) = (self.selected, &mut self.srtcp) else {
            return Err(TransportError::NotConnected);
        };
        let out = local
            .encrypt_rtcp(packet)
            .map_err(|e| TransportError::Crypto(e.to_string()))?;
        self.transmits.push_back((to, out));
        Ok(())
    }

    fn drain_dtls(&mut self) {
        while let Some(t) = self.dtls.poll_transmit() {
            self.transmits.push_back((t.transport.peer_addr, t.message));
        }
    }

    fn fail(&mut self, why: String) {
        if !self.failed {
            self.failed = true;
            self.events.push_back(TransportEvent::Failed(why));
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        self.events.pop_front()
    }

    /// When [`Transport::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        let consent = self.last_consent() + CONSENT_TIMEOUT;
        let dtls = self.selected.and_then(|s| self.dtls.poll_timeout(&s));
        Some(dtls.map_or(consent, |d| d.min(consent)))
    }

    fn last_consent(&self) -> Instant {
        self.validated
            .iter()
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(self.created)
    }

    /// Retransmits DTLS flights and expires consent.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        if now >= self.last_consent() + CONSENT_TIMEOUT {
            return self.fail("no connectivity check for 30 s".into());
        }
        if let Some(s) = self.selected
            && let Err(e) = self.dtls.handle_timeout(s, now)
            && !matches!(e, rtc::shared::error::Error::InvalidRemoteAddress(_))
        {
            self.fail(format!("DTLS: {e}"));
        }
        self.drain_dtls();
    }

    /// The address the plane's socket has (for the SDP's candidate line).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}
