//! The plane's transport against a standard WebRTC stack: a webrtc-rs `rtc` client offers to
//! receive audio, the plane answers with its own SDP, and the two connect in memory (ICE-lite
//! checks, DTLS with fingerprints checked both ways, SRTP keys exported) before the plane sends
//! RTP the client must decrypt and deliver on its track.

use super::sdp::{self, Sending};
use super::srtp::Pool;
use super::transport::{Credentials, Identity, Transport, TransportEvent};
use bytes::BytesMut;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Marshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PLANE: &str = "127.0.0.1:41000";
const CLIENT: &str = "127.0.0.1:41001";

/// A webrtc-rs peer whose one host candidate is `addr`. The server's keyframe-request tap is
/// in its chain, so PLI and FIR reach the test as RTCP messages.
/// Hands every inbound RTCP packet to the test (webrtc-rs keeps RTCP no interceptor marks for
/// the application; the product's `KeyframeRequestTap` marks only PLI and FIR).
#[derive(Default)]
struct DeliverRtcp {
    reads: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
    writes: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
}

impl Protocol<rtc::interceptor::TaggedPacket, rtc::interceptor::TaggedPacket, ()> for DeliverRtcp {
    type Rout = rtc::interceptor::TaggedPacket;
    type Wout = rtc::interceptor::TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, rtc::interceptor::Packet::Rtcp(_)) {
            msg.message
                .add(rtc::interceptor::Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }
    fn handle_write(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl rtc::interceptor::Interceptor for DeliverRtcp {
    fn bind_local_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
}

fn peer_at(addr: SocketAddr) -> RTCPeerConnection {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = rtc::interceptor::Registry::new().with(
        rtc::interceptor::Slot::from(crate::peer::rtcp::KEYFRAME_SLOT),
        DeliverRtcp::default(),
    );
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .unwrap();
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .unwrap();
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json().unwrap())
        .unwrap();
    pc
}

/// The in-memory client: at [`CLIENT`], receiving one audio track.
fn client() -> RTCPeerConnection {
    let mut pc = peer_at(CLIENT.parse().unwrap());
    receiving(&mut pc, RtpCodecKind::Audio);
    pc
}

struct Pair {
    client: RTCPeerConnection,
    plane: Transport,
    pool: Pool,
    client_up: bool,
    plane_up: bool,
    received: Vec<rtp::Packet>,
    tracks: usize,
}

impl Pair {
    fn new(tamper_fingerprint: bool) -> Pair {
        let identity = Identity::generate().unwrap();
        let mut client = client();
        let offer = client.create_offer(None).unwrap();
        client
            .set_local_description(Instant::now(), offer.clone())
            .unwrap();
        let parsed = sdp::parse_offer(&offer.sdp).unwrap();
        let mut fingerprint = parsed.fingerprint.clone();
        if tamper_fingerprint {
            // Another certificate's fingerprint: the plane must refuse this client's DTLS.
            fingerprint = Identity::generate().unwrap().fingerprint;
        }
        let provider = rtc::crypto::default_provider().unwrap();
        let creds = Credentials::generate(&*provider, fingerprint);
        let plane_addr: SocketAddr = PLANE.parse().unwrap();
        let sending = Sending {
            codec: "opus/48000".into(),
            ssrc: 0xC0FFEE,
            msid: ("stream".into(), "track".into()),
        };
        let answer = sdp::answer(
            &parsed,
            &[sdp::Answered::Send(sending)],
            &creds.local_ufrag,
            &creds.local_pwd,
            &identity.fingerprint,
            plane_addr,
        );
        let plane = Transport::new(&identity, creds, plane_addr, Instant::now()).unwrap();
        client
            .set_remote_description(
                Instant::now(),
                RTCSessionDescription::answer(answer).unwrap(),
            )
            .unwrap();
        Pair {
            client,
            plane,
            pool: Pool::default(),
            client_up: false,
            plane_up: false,
            received: Vec::new(),
            tracks: 0,
        }
    }

    /// Sends one RTP packet from the plane's side.
    fn send(&mut self, header: &rtp::header::Header, payload: &[u8]) {
        let mut h = [0u8; 128];
        let n = header.marshal_to(&mut h).unwrap();
        self.plane
            .send_rtp(&mut self.pool, &h[..n], payload)
            .unwrap();
    }

    fn step(&mut self) -> Option<String> {
        let now = Instant::now();
        let (plane_addr, client_addr): (SocketAddr, SocketAddr) =
            (PLANE.parse().unwrap(), CLIENT.parse().unwrap());
        while let Some(msg) = self.client.poll_write() {
            self.plane
                .handle_datagram(now, msg.transport.local_addr, &msg.message, &mut self.pool);
        }
        while let Some((to, data)) = self.plane.poll_transmit() {
            assert_eq!(to, client_addr, "the plane answers where checks came from");
            let _ = self.client.handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: client_addr,
                    peer_addr: plane_addr,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: data,
            });
        }
        while let Some(ev) = self.plane.poll_event() {
            match ev {
                TransportEvent::Connected => self.plane_up = true,
                TransportEvent::Failed(why) => return Some(why),
                _ => {}
            }
        }
        while let Some(ev) = self.client.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => {
                    self.client_up = s == RTCPeerConnectionState::Connected;
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(_)) => self.tracks += 1,
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.client.poll_read() {
            if let RTCMessage::RtpPacket(_, p) = message {
                self.received.push(p);
            }
        }
        let _ = self.client.handle_timeout(now);
        if self.plane.poll_timeout().is_some_and(|t| t <= now) {
            self.plane.handle_timeout(now);
        }
        None
    }

    fn run_until(&mut self, deadline: Duration, done: impl Fn(&Pair) -> bool) -> Option<String> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Some(failed) = self.step() {
                return Some(failed);
            }
            if done(self) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Some("timed out".into())
    }
}

#[test]
fn a_webrtc_client_connects_to_the_plane_and_receives_its_rtp() {
    let mut pair = Pair::new(false);
    assert_eq!(
        pair.run_until(Duration::from_secs(10), |p| p.client_up && p.plane_up),
        None,
        "both ends connected"
    );
    assert_eq!(pair.plane.selected(), Some(CLIENT.parse().unwrap()));
    for seq in 0..50u16 {
        let header = rtp::header::Header {
            version: 2,
            payload_type: 111,
            sequence_number: 1000 + seq,
            timestamp: u32::from(seq) * 960,
            ssrc: 0xC0FFEE,
            ..Default::default()
        };
        let payload = [seq as u8; 80];
        pair.send(&header, &payload);
    }
    assert_eq!(
        pair.run_until(Duration::from_secs(5), |p| p.received.len() >= 50),
        None
    );
    assert_eq!(pair.tracks, 1, "the client saw one track");
    for (i, p) in pair.received.iter().enumerate() {
        assert_eq!(p.header.sequence_number, 1000 + i as u16);
        assert_eq!(p.header.ssrc, 0xC0FFEE);
        assert_eq!(&p.payload[..], &[i as u8; 80][..], "payload intact");
    }
}

#[test]
fn a_client_whose_certificate_does_not_match_its_sdp_is_refused() {
    let mut pair = Pair::new(true);
    let failed = pair.run_until(Duration::from_secs(10), |p| p.plane_up);
    assert!(
        failed.as_deref().is_some_and(|w| w.contains("DTLS")),
        "the plane refused the handshake: {failed:?}"
    );
    assert!(!pair.plane.is_connected());
}

#[test]
fn checks_with_the_wrong_password_are_not_answered() {
    let identity = Identity::generate().unwrap();
    let provider = rtc::crypto::default_provider().unwrap();
    let creds = Credentials::generate(&*provider, "AA".into());
    let mut pool = Pool::default();
    let mut plane = Transport::new(
        &identity,
        creds.clone(),
        PLANE.parse().unwrap(),
        Instant::now(),
    )
    .unwrap();
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{BINDING_REQUEST, Message, Setter};
    use rtc::stun::textattrs::TextAttribute;
    let from: SocketAddr = CLIENT.parse().unwrap();
    let request = |pwd: &str| {
        let mut m = Message::new();
        let setters: [Box<dyn Setter + '_>; 4] = [
            Box::new(BINDING_REQUEST),
            Box::new(rtc::stun::message::TransactionId::new()),
            Box::new(TextAttribute::new(
                rtc::stun::attributes::ATTR_USERNAME,
                format!("{}:client", creds.local_ufrag),
            )),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.to_owned(),
                provider.crypto(),
            )),
        ];
        m.build(&setters).unwrap();
        BytesMut::from(&m.raw[..])
    };
    plane.handle_datagram(
        Instant::now(),
        from,
        &request("not the password"),
        &mut pool,
    );
    assert!(
        plane.poll_transmit().is_none(),
        "no answer to a forged check"
    );
    assert!(!plane.is_validated(from));
    // DTLS from an address no check validated is ignored.
    plane.handle_datagram(Instant::now(), from, &[22, 254, 253, 0, 0], &mut pool);
    assert!(plane.poll_transmit().is_none());
    plane.handle_datagram(Instant::now(), from, &request(&creds.local_pwd), &mut pool);
    assert!(
        plane.poll_transmit().is_some(),
        "the right password is answered"
    );
    assert!(plane.is_validated(from));
}

/// A session's renegotiation against webrtc-rs: after the first exchange the plane offers a
/// second track; the client answers, and packets on the new SSRC arrive as a second track.
#[test]
fn the_plane_offers_a_new_track_after_the_first_exchange() {
    use super::sdp::Local;
    use super::session::Session;
    let identity = Identity::generate().unwrap();
    let mut client = client();
    let offer = client.create_offer(None).unwrap();
    client
        .set_local_description(Instant::now(), offer.clone())
        .unwrap();
    let parsed = sdp::parse_offer(&offer.sdp).unwrap();
    let provider = rtc::crypto::default_provider().unwrap();
    let creds = Credentials::generate(&*provider, parsed.fingerprint.clone());
    let plane_addr: SocketAddr = PLANE.parse().unwrap();
    let (ufrag, pwd) = (creds.local_ufrag.clone(), creds.local_pwd.clone());
    let local = Local {
        ufrag: &ufrag,
        pwd: &pwd,
        fingerprint: &identity.fingerprint,
        candidate: plane_addr,
    };
    let mut session = Session::new();
    let first = Sending {
        codec: "opus/48000".into(),
        ssrc: 0xC0FFEE,
        msid: ("stream".into(), "track".into()),
    };
    let answer = session
        .answer(&parsed, |_, _| sdp::Answered::Send(first.clone()), &local)
        .unwrap();
    client
        .set_remote_description(
            Instant::now(),
            RTCSessionDescription::answer(answer).unwrap(),
        )
        .unwrap();
    let plane = Transport::new(&identity, creds, plane_addr, Instant::now()).unwrap();
    let mut pair = Pair {
        client,
        plane,
        pool: Pool::default(),
        client_up: false,
        plane_up: false,
        received: Vec::new(),
        tracks: 0,
    };
    assert_eq!(
        pair.run_until(Duration::from_secs(10), |p| p.client_up && p.plane_up),
        None
    );

    // A second track: the plane offers, the client answers.
    let mid = session
        .add_send(
            "audio",
            Sending {
                codec: "opus/48000".into(),
                ssrc: 0xBEEF,
                msid: ("stream2".into(), "track2".into()),
            },
        )
        .unwrap();
    assert_eq!(mid, "1");
    let offer = session.offer(&local);
    assert!(session.offer_outstanding());
    pair.client
        .set_remote_description(Instant::now(), RTCSessionDescription::offer(offer).unwrap())
        .unwrap();
    let answer = pair.client.create_answer(None).unwrap();
    pair.client
        .set_local_description(Instant::now(), answer.clone())
        .unwrap();
    session.apply_answer(&answer.sdp).unwrap();
    assert!(!session.offer_outstanding());
    assert_eq!(session.sections().len(), 2);

    for (i, ssrc) in [0xC0FFEEu32, 0xBEEF].into_iter().enumerate() {
        for seq in 0..20u16 {
            let header = rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: 100 * i as u16 + seq,
                timestamp: u32::from(seq) * 960,
                ssrc,
                ..Default::default()
            };
            pair.send(&header, &[i as u8; 40]);
        }
    }
    assert_eq!(
        pair.run_until(Duration::from_secs(5), |p| p.received.len() >= 40),
        None
    );
    assert_eq!(pair.tracks, 2, "the client saw both tracks");
    let on_new: Vec<_> = pair
        .received
        .iter()
        .filter(|p| p.header.ssrc == 0xBEEF)
        .collect();
    assert_eq!(on_new.len(), 20);
    assert!(on_new.iter().all(|p| &p.payload[..] == &[1u8; 40][..]));

    // An answer with no offer outstanding is refused; so is a client offer that drops a section.
    assert_eq!(
        session.apply_answer(&answer.sdp),
        Err(super::session::NegotiationError::NoOffer)
    );
    let dropped = sdp::parse_offer(&offer_with_first_section_only(&answer.sdp)).unwrap();
    assert!(matches!(
        session.answer(&dropped, |_, _| sdp::Answered::Reject, &local),
        Err(super::session::NegotiationError::SectionsChanged(_))
    ));
}

/// `sdp` cut after its first media section.
fn offer_with_first_section_only(sdp: &str) -> String {
    let mut out = String::new();
    let mut sections = 0;
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            sections += 1;
        }
        if sections <= 1 {
            out.push_str(line);
        }
    }
    out
}

/// A webrtc-rs client on its own UDP socket, pumped by the test.
struct UdpClient {
    pc: RTCPeerConnection,
    socket: std::net::UdpSocket,
    addr: SocketAddr,
    up: bool,
    received: Vec<rtp::Packet>,
    rtcp: Vec<Box<dyn rtc::rtcp::Packet>>,
    /// RTP sequence numbers lost on the way in, once each (read from the SRTP header, which
    /// is not encrypted).
    drop_rtp: Vec<u16>,
}

impl UdpClient {
    fn new() -> UdpClient {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let pc = peer_at(addr);
        UdpClient {
            pc,
            socket,
            addr,
            up: false,
            received: Vec::new(),
            rtcp: Vec::new(),
            drop_rtp: Vec::new(),
        }
    }

    fn pump(&mut self) {
        let now = Instant::now();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            let rtp = n > 12 && buf[0] >> 6 == 2 && !(192..=223).contains(&buf[1]);
            if rtp
                && let Some(i) = self
                    .drop_rtp
                    .iter()
                    .position(|&s| s.to_be_bytes() == buf[2..4])
            {
                self.drop_rtp.swap_remove(i);
                continue;
            }
            let _ = self.pc.handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: self.addr,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(&buf[..n]),
            });
        }
        while let Some(msg) = self.pc.poll_write() {
            let _ = self.socket.send_to(&msg.message, msg.transport.peer_addr);
        }
        while let Some(ev) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                self.up = s == RTCPeerConnectionState::Connected;
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_, p) => self.received.push(p),
                RTCMessage::RtcpPacket(_, p) => self.rtcp.extend(p),
                _ => {}
            }
        }
        let _ = self.pc.handle_timeout(now);
    }

    /// Offers, has `worker` answer with `section`, and hands the worker the transport.
    /// Returns its key, the payload type the client offered for `codec`, and its events.
    fn connect(
        &mut self,
        worker: &super::worker::Worker,
        identity: &Identity,
        section: sdp::Answered,
        codec: &str,
    ) -> (
        super::worker::Key,
        u8,
        tokio::sync::mpsc::Receiver<super::worker::Event>,
    ) {
        let now = Instant::now();
        let offer = self.pc.create_offer(None).unwrap();
        self.pc.set_local_description(now, offer.clone()).unwrap();
        let parsed = sdp::parse_offer(&offer.sdp).unwrap();
        let pt = parsed.media[0]
            .codecs
            .iter()
            .find(|(_, c)| c.to_ascii_lowercase().starts_with(codec))
            .map(|(pt, _)| *pt)
            .unwrap();
        let provider = rtc::crypto::default_provider().unwrap();
        let creds = Credentials::generate(&*provider, parsed.fingerprint.clone());
        let answer = sdp::answer(
            &parsed,
            &[section],
            &creds.local_ufrag,
            &creds.local_pwd,
            &identity.fingerprint,
            worker.local_addr(),
        );
        let t = Transport::new(identity, creds, worker.local_addr(), now).unwrap();
        self.pc
            .set_remote_description(now, RTCSessionDescription::answer(answer).unwrap())
            .unwrap();
        let key = worker.key();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        worker
            .send(super::worker::Command::Add {
                key,
                transport: Box::new(t),
                events: tx,
            })
            .unwrap();
        (key, pt, rx)
    }
}

fn sending_track(kind: RtpCodecKind, ssrc: u32) -> rtc::media_stream::MediaStreamTrack {
    use rtc::rtp_transceiver::rtp_sender::{
        RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    };
    let codec = match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    };
    rtc::media_stream::MediaStreamTrack::new(
        format!("s{ssrc}"),
        format!("t{ssrc}"),
        format!("t{ssrc}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

fn receiving(pc: &mut RTCPeerConnection, kind: RtpCodecKind) {
    pc.add_transceiver_from_kind(
        kind,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            streams: vec![],
            send_encodings: vec![],
        }),
    )
    .unwrap();
}

/// Runs `step` every 2 ms until it says done or `secs` pass; at least once, so `secs == 0`
/// flushes what is queued.
fn until(secs: u64, mut step: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if step() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn pump_until(
    clients: &mut [&mut UdpClient],
    secs: u64,
    done: impl Fn(&[&mut UdpClient]) -> bool,
) -> bool {
    until(secs, || {
        for c in clients.iter_mut() {
            c.pump();
        }
        done(clients)
    })
}

/// One audio publisher (SSRC 0xA11CE, with a tap as the room has) and `n` subscribers
/// (SSRCs 0x5000 + k) on `worker`, all connected.
struct AudioFanout {
    publisher: UdpClient,
    sender: rtc::rtp_transceiver::RTCRtpSenderId,
    pub_key: super::worker::Key,
    pub_events: tokio::sync::mpsc::Receiver<super::worker::Event>,
    tap: tokio::sync::mpsc::Receiver<super::worker::Tapped>,
    subs: Vec<(UdpClient, super::worker::Key)>,
}

impl AudioFanout {
    fn start(worker: &super::worker::Worker, n: u32) -> AudioFanout {
        use super::worker::Command;
        let identity = Identity::generate().unwrap();
        let mut publisher = UdpClient::new();
        let sender = publisher
            .pc
            .add_track(sending_track(RtpCodecKind::Audio, 0xA11CE))
            .unwrap();
        let (pub_key, _, pub_events) = publisher.connect(
            worker,
            &identity,
            sdp::Answered::Receive("opus/48000".into()),
            "opus/48000",
        );
        let (tap_tx, tap) = tokio::sync::mpsc::channel(1024);
        worker
            .send(Command::Publish {
                key: pub_key,
                ssrc: 0xA11CE,
                video: None,
                tap: Some(tap_tx),
            })
            .unwrap();
        let mut subs: Vec<(UdpClient, super::worker::Key)> = Vec::new();
        for k in 0..n {
            let mut c = UdpClient::new();
            receiving(&mut c.pc, RtpCodecKind::Audio);
            let (key, pt, _events) = c.connect(
                worker,
                &identity,
                sdp::Answered::Send(Sending {
                    codec: "opus/48000".into(),
                    ssrc: 0x5000 + k,
                    msid: (format!("m{k}"), format!("a{k}")),
                }),
                "opus/48000",
            );
            worker
                .send(Command::Subscribe {
                    from: pub_key,
                    source_ssrc: 0xA11CE,
                    to: key,
                    ssrc: 0x5000 + k,
                    payload_type: pt,
                })
                .unwrap();
            subs.push((c, key));
        }
        let mut f = AudioFanout {
            publisher,
            sender,
            pub_key,
            pub_events,
            tap,
            subs,
        };
        assert!(
            f.pump_until(15, |f| f.publisher.up && f.subs.iter().all(|(c, _)| c.up)),
            "every client connected"
        );
        f
    }

    /// Sends the publisher's packet `seq` (80 bytes of `seq as u8`).
    fn send(&mut self, seq: u16) {
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: seq,
                timestamp: u32::from(seq) * 960,
                ssrc: 0xA11CE,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![seq as u8; 80]),
        };
        let _ = self
            .publisher
            .pc
            .rtp_sender(self.sender)
            .unwrap()
            .write_rtp(Instant::now(), packet);
    }

    /// Pumps every client (at least once) until `done` or `secs` pass.
    fn pump_until(&mut self, secs: u64, done: impl Fn(&AudioFanout) -> bool) -> bool {
        until(secs, || {
            self.publisher.pump();
            for (c, _) in &mut self.subs {
                c.pump();
            }
            done(self)
        })
    }

    /// Sends packets `seqs`, one a millisecond, pumping as it goes.
    fn send_paced(&mut self, seqs: std::ops::Range<u16>) {
        for seq in seqs {
            self.send(seq);
            self.pump_until(0, |_| true);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// One publisher, two subscribers, one worker thread: every packet reaches both subscribers
/// (their own SSRC and payload type, payload intact) and the tap; an unsubscribed leg and a
/// removed publisher stop; dropping the worker ends its thread.
#[test]
fn a_worker_forwards_a_published_stream_to_its_legs_in_its_own_thread() {
    use super::worker::{Command, Event, Worker};
    let worker = Worker::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut f = AudioFanout::start(&worker, 2);
    assert!(matches!(f.pub_events.try_recv(), Ok(Event::Connected)));
    f.send_paced(0..100);
    f.pump_until(5, |f| f.subs.iter().all(|(c, _)| c.received.len() >= 100));
    for (k, (c, _)) in f.subs.iter().enumerate() {
        let got: Vec<u16> = c
            .received
            .iter()
            .map(|p| p.header.sequence_number)
            .collect();
        assert_eq!(
            got,
            (0..100).collect::<Vec<_>>(),
            "subscriber {k}: every packet, in order"
        );
        for p in &c.received {
            assert_eq!(p.header.ssrc, 0x5000 + k as u32);
            assert_eq!(
                p.payload.as_ref(),
                &[p.header.sequence_number as u8; 80][..]
            );
        }
    }
    let mut tapped = Vec::new();
    while let Ok(t) = f.tap.try_recv() {
        let p = t.packet();
        assert_eq!(
            &p[12..],
            &[p[3]; 80][..],
            "the tap gets the packet decrypted"
        );
        tapped.push(u16::from_be_bytes([p[2], p[3]]));
    }
    assert_eq!(
        tapped,
        (0..100).collect::<Vec<_>>(),
        "the tap saw every packet"
    );
    let stats = worker.stats();
    assert_eq!(
        stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
        200
    );

    // The first subscriber leaves the stream; the second keeps it.
    worker
        .send(Command::Unsubscribe {
            to: f.subs[0].1,
            ssrc: 0x5000,
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    f.send_paced(100..120);
    f.pump_until(5, |f| f.subs[1].0.received.len() >= 120);
    std::thread::sleep(Duration::from_millis(100));
    f.pump_until(0, |_| true);
    assert_eq!(
        f.subs[0].0.received.len(),
        100,
        "an unsubscribed leg gets nothing more"
    );
    assert_eq!(f.subs[1].0.received.len(), 120);

    // The publisher's transport goes: nothing more is forwarded, and its RTP is not routed.
    worker.send(Command::Remove { key: f.pub_key }).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let before = stats.forwarded.load(std::sync::atomic::Ordering::Relaxed);
    for seq in 120..130u16 {
        f.send(seq);
        f.publisher.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
    assert!(stats.unrouted.load(std::sync::atomic::Ordering::Relaxed) >= 10);

    // Dropping the worker stops and joins its thread promptly.
    let t = Instant::now();
    drop(worker);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

/// The forwarding path allocates nothing per packet (issue 10): one audio publisher with the
/// room's tap and four subscribers on a worker. After a warm-up (the pool and queues reach
/// their working size), the worker thread's allocations are counted while 1,000 more packets
/// go to every leg and the tap, in bursts of 50 so the window is short (about 0.15 s). What
/// may fall in it is per-second work (an ICE check or an RTCP report: some twenty allocations
/// each, about a hundred a second with five clients), not per-packet work, which would show as
/// a thousand or more.
#[test]
fn the_worker_forwards_without_allocating_per_packet() {
    use super::alloc_count::{COUNT, WATCHED, thread_named};
    use super::worker::Worker;
    use std::sync::atomic::Ordering;
    let worker = Worker::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut f = AudioFanout::start(&worker, 4);
    // The thread names itself once it runs; by now it has.
    let tid = thread_named(&format!("media-{}", worker.local_addr().port())).unwrap();
    let burst = |f: &mut AudioFanout, first: u16| {
        for seq in first..first + 50 {
            f.send(seq);
        }
        f.publisher.pump();
        let want = usize::from(first) + 50;
        assert!(
            f.pump_until(5, |f| f.subs.iter().all(|(c, _)| c.received.len() >= want)),
            "burst at {first} delivered"
        );
        let mut tapped = 0;
        while f.tap.try_recv().is_ok() {
            tapped += 1;
        }
        assert_eq!(tapped, 50, "the tap got the burst at {first}");
    };
    for k in 0..10 {
        burst(&mut f, k * 50);
    }
    let stats = worker.stats();
    let forwarded = || stats.forwarded.load(Ordering::Relaxed);
    let buffers = || stats.buffers_allocated.load(Ordering::Relaxed);
    let (before, buffers_before) = (forwarded(), buffers());
    let started = Instant::now();
    COUNT.store(0, Ordering::Relaxed);
    WATCHED.store(tid, Ordering::Relaxed);
    for k in 10..30 {
        burst(&mut f, k * 50);
    }
    WATCHED.store(0, Ordering::Relaxed);
    let allocations = COUNT.load(Ordering::Relaxed);
    let sent = forwarded() - before;
    assert_eq!(sent, 4000, "every packet forwarded to every leg");
    eprintln!(
        "worker thread: {allocations} allocations in {:?} while forwarding {sent} packets; \
         packet buffers allocated {buffers_before} before, {} after",
        started.elapsed(),
        buffers()
    );
    assert!(
        allocations < 60,
        "{allocations} allocations for {sent} forwarded packets"
    );
}

/// A new video leg waits for a keyframe and asks the publisher for one; a subscriber's PLI
/// reaches the publisher as a PLI for the stream it sends, throttled; packets it NACKs are
/// sent again from the plane's history.
#[test]
fn a_worker_starts_a_video_leg_at_a_keyframe_and_relays_keyframe_requests() {
    use super::worker::{Command, Worker};
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
        TransportLayerNack, nack_pairs_from_sequence_numbers,
    };
    let worker = Worker::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let identity = Identity::generate().unwrap();
    let mut publisher = UdpClient::new();
    let sender = publisher
        .pc
        .add_track(sending_track(RtpCodecKind::Video, 0xB0B))
        .unwrap();
    let (pub_key, _, _pe) = publisher.connect(
        &worker,
        &identity,
        sdp::Answered::Receive("VP8/90000".into()),
        "vp8/90000",
    );
    worker
        .send(Command::Publish {
            key: pub_key,
            ssrc: 0xB0B,
            video: Some(crate::room::keyframe::VideoCodec::Vp8),
            tap: None,
        })
        .unwrap();
    let mut sub = UdpClient::new();
    receiving(&mut sub.pc, RtpCodecKind::Video);
    let (sub_key, pt, _se) = sub.connect(
        &worker,
        &identity,
        sdp::Answered::Send(Sending {
            codec: "VP8/90000".into(),
            ssrc: 0x7000,
            msid: ("v".into(), "v".into()),
        }),
        "vp8/90000",
    );
    assert!(pump_until(&mut [&mut publisher, &mut sub], 15, |cs| cs
        .iter()
        .all(|c| c.up)));
    worker
        .send(Command::Subscribe {
            from: pub_key,
            source_ssrc: 0xB0B,
            to: sub_key,
            ssrc: 0x7000,
            payload_type: pt,
        })
        .unwrap();
    // VP8 descriptor with S=1, PID 0, then a frame tag: bit 0 clear for a keyframe.
    let frame = |seq: u16, key: bool| rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc: 0xB0B,
            marker: true,
            ..Default::default()
        },
        payload: bytes::Bytes::from(vec![0x10, if key { 0x00 } else { 0x01 }, 0, 0, 0, 0]),
    };
    // Frames `seqs`, 5 ms apart, the one at `key` a keyframe.
    let send_frames = |publisher: &mut UdpClient,
                       sub: &mut UdpClient,
                       seqs: std::ops::Range<u16>,
                       key: Option<u16>| {
        for seq in seqs {
            let _ = publisher
                .pc
                .rtp_sender(sender)
                .unwrap()
                .write_rtp(Instant::now(), frame(seq, key == Some(seq)));
            pump_until(&mut [publisher, sub], 0, |_| true);
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let pli_seen = |c: &UdpClient| {
        c.rtcp.iter().any(|p| {
            p.as_any()
                .downcast_ref::<PictureLossIndication>()
                .is_some_and(|pli| pli.media_ssrc == 0xB0B)
        })
    };
    // Delta frames first: held back, and the publisher is asked for a keyframe.
    send_frames(&mut publisher, &mut sub, 0..5, None);
    assert!(
        pump_until(&mut [&mut publisher, &mut sub], 3, |cs| pli_seen(cs[0])),
        "the publisher was asked for a keyframe"
    );
    assert!(
        sub.received.is_empty(),
        "no delta frame before the keyframe"
    );
    send_frames(&mut publisher, &mut sub, 5..10, Some(5));
    assert!(pump_until(&mut [&mut publisher, &mut sub], 3, |cs| cs[1]
        .received
        .len()
        >= 5));
    let got: Vec<u16> = sub
        .received
        .iter()
        .map(|p| p.header.sequence_number)
        .collect();
    assert_eq!(got, vec![5, 6, 7, 8, 9], "from the keyframe on");
    assert_eq!(sub.received[0].header.ssrc, 0x7000);

    // The subscriber asks for a keyframe (after the throttle's interval): the publisher hears it.
    std::thread::sleep(super::worker::KEYFRAME_INTERVAL);
    publisher.rtcp.clear();
    let requests = worker
        .stats()
        .keyframe_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    let pli = PictureLossIndication {
        sender_ssrc: 0x1234,
        media_ssrc: 0x7000,
    };
    let receiver = sub
        .pc
        .get_receivers()
        .next()
        .expect("the subscriber's receiver");
    sub.pc
        .rtp_receiver(receiver)
        .unwrap()
        .write_rtcp(Instant::now(), vec![Box::new(pli)])
        .unwrap();
    assert!(
        pump_until(&mut [&mut publisher, &mut sub], 3, |cs| pli_seen(cs[0])),
        "the subscriber's PLI reached the publisher"
    );
    assert_eq!(
        worker
            .stats()
            .keyframe_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        requests + 1
    );

    // The subscriber loses 12 and 14 on the way and NACKs them, with 300 (never sent): the
    // plane sends the two again from its history, as the leg had them.
    sub.drop_rtp = vec![12, 14];
    send_frames(&mut publisher, &mut sub, 10..20, None);
    let has = |c: &UdpClient, seq: u16| c.received.iter().any(|p| p.header.sequence_number == seq);
    assert!(pump_until(&mut [&mut publisher, &mut sub], 3, |cs| has(
        cs[1], 19
    )));
    assert!(!has(&sub, 12) && !has(&sub, 14), "lost on the way");
    let stats = worker.stats();
    let missed = stats.nack_missed.load(std::sync::atomic::Ordering::Relaxed);
    let nack = TransportLayerNack {
        sender_ssrc: 0x1234,
        media_ssrc: 0x7000,
        nacks: nack_pairs_from_sequence_numbers(&[12, 14, 300]),
    };
    sub.pc
        .rtp_receiver(receiver)
        .unwrap()
        .write_rtcp(Instant::now(), vec![Box::new(nack)])
        .unwrap();
    assert!(
        pump_until(&mut [&mut publisher, &mut sub], 3, |cs| has(cs[1], 12)
            && has(cs[1], 14)),
        "the lost packets came again"
    );
    for p in sub
        .received
        .iter()
        .filter(|p| [12, 14].contains(&p.header.sequence_number))
    {
        assert_eq!(p.header.ssrc, 0x7000, "as the leg's stream");
        assert_eq!(p.header.payload_type, pt);
        assert_eq!(p.payload, frame(p.header.sequence_number, false).payload);
    }
    assert!(
        stats
            .retransmitted
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    assert!(
        stats.nack_missed.load(std::sync::atomic::Ordering::Relaxed) > missed,
        "300 was never sent: a miss"
    );

    // The publisher hears about its stream once a second: a receiver report (20 packets
    // sent, 0 to 19, none lost on the way in) and a REMB with the plane's ceiling.
    use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate as Remb;
    use rtc::rtcp::receiver_report::ReceiverReport;
    publisher.rtcp.clear();
    let reported = |c: &UdpClient| {
        let rr = c.rtcp.iter().find_map(|p| {
            p.as_any()
                .downcast_ref::<ReceiverReport>()
                .and_then(|rr| rr.reports.iter().find(|r| r.ssrc == 0xB0B).cloned())
        });
        let remb = c.rtcp.iter().find_map(|p| {
            p.as_any()
                .downcast_ref::<Remb>()
                .filter(|r| r.ssrcs == [0xB0B])
                .map(|r| r.bitrate)
        });
        rr.zip(remb)
    };
    assert!(pump_until(&mut [&mut publisher, &mut sub], 3, |cs| {
        reported(cs[0]).is_some()
    }));
    let (rr, remb) = reported(&publisher).unwrap();
    assert_eq!(rr.last_sequence_number, 19);
    assert_eq!(rr.total_lost, 0);
    assert_eq!(remb, super::feedback::VIDEO_BITRATE_MAX);
}
