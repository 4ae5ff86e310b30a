//! The plane's transport against a standard WebRTC stack: a webrtc-rs `rtc` client offers to
//! receive audio, the plane answers with its own SDP, and the two connect in memory (ICE-lite
//! checks, DTLS with fingerprints checked both ways, SRTP keys exported) before the plane sends
//! RTP the client must decrypt and deliver on its track.

use super::sdp::{self, Sending};
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
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PLANE: &str = "127.0.0.1:41000";
const CLIENT: &str = "127.0.0.1:41001";

fn client() -> RTCPeerConnection {
    let addr: SocketAddr = CLIENT.parse().unwrap();
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
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
    pc.add_transceiver_from_kind(
        RtpCodecKind::Audio,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            streams: vec![],
            send_encodings: vec![],
        }),
    )
    .unwrap();
    pc
}

struct Pair {
    client: RTCPeerConnection,
    plane: Transport,
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
            client_up: false,
            plane_up: false,
            received: Vec::new(),
            tracks: 0,
        }
    }

    fn step(&mut self) -> Option<String> {
        let now = Instant::now();
        let (plane_addr, client_addr): (SocketAddr, SocketAddr) =
            (PLANE.parse().unwrap(), CLIENT.parse().unwrap());
        while let Some(msg) = self.client.poll_write() {
            self.plane
                .handle_datagram(now, msg.transport.local_addr, &msg.message);
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
        pair.plane.send_rtp(&header, &payload).unwrap();
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
    plane.handle_datagram(Instant::now(), from, &request("not the password"));
    assert!(
        plane.poll_transmit().is_none(),
        "no answer to a forged check"
    );
    assert!(!plane.is_validated(from));
    // DTLS from an address no check validated is ignored.
    plane.handle_datagram(Instant::now(), from, &[22, 254, 253, 0, 0]);
    assert!(plane.poll_transmit().is_none());
    plane.handle_datagram(Instant::now(), from, &request(&creds.local_pwd));
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
            pair.plane.send_rtp(&header, &[i as u8; 40]).unwrap();
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
