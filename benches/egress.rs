//! The floor under a forwarded packet, piece by piece, without Conclave's async layers:
//!
//! * `rtc_write`: one RTP packet written to an established sans-IO `rtc` peer connection and
//!   taken out again as an SRTP datagram (`RTCRtpSender::write_rtp` + `poll_write`): the
//!   interceptor chain, the handler chain, SRTP. With the interceptors the server uses
//!   (`default`: NACK, reports, TWCC) and with none (`bare`).
//! * `udp_send`: the kernel's part, one datagram of that size to a loopback socket that another
//!   thread drains: `sendto` per datagram, and `sendmmsg` in batches of 32 (as a media plane
//!   that owns its sockets can batch across subscribers).
//!
//! Together with `benches/forward.rs` (Conclave's own fan-out, ~85 ns per copy) they bound what
//! a media plane built directly on `rtc` could forward per CPU-second; `docs/performance.md`
//! does the sum. Run: `cargo bench --bench egress`.

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const SERVER: &str = "127.0.0.1:40000";
const CLIENT: &str = "127.0.0.1:40001";
/// An Opus frame of the load tool's size.
const PAYLOAD: usize = 100;

fn peer(addr: SocketAddr, interceptors: bool) -> RTCPeerConnection {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = if interceptors {
        register_default_interceptors(Registry::new(), &mut media).unwrap()
    } else {
        Registry::new()
    };
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

fn deliver(from: &mut RTCPeerConnection, to: &mut RTCPeerConnection, to_addr: SocketAddr) {
    while let Some(msg) = from.poll_write() {
        to.handle_read(TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: to_addr,
                peer_addr: msg.transport.local_addr,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: msg.message,
        })
        .unwrap();
    }
}

/// A server connection with one audio sender, connected (ICE, DTLS, SRTP) to a client in
/// memory. Returns the server, its sender and the payload type the client accepted.
fn connected(interceptors: bool) -> (RTCPeerConnection, RTCRtpSenderId, u8, u32) {
    let (s_addr, c_addr): (SocketAddr, SocketAddr) =
        (SERVER.parse().unwrap(), CLIENT.parse().unwrap());
    let mut server = peer(s_addr, interceptors);
    let mut client = peer(c_addr, true);
    let ssrc = 0x1234_5678;
    let track = MediaStreamTrack::new(
        "stream".into(),
        "audio".into(),
        "audio".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    );
    let sender = server.add_track(track).unwrap();
    let offer = server.create_offer(None).unwrap();
    server
        .set_local_description(Instant::now(), offer.clone())
        .unwrap();
    client
        .set_remote_description(Instant::now(), offer)
        .unwrap();
    let answer = client.create_answer(None).unwrap();
    client
        .set_local_description(Instant::now(), answer.clone())
        .unwrap();
    server
        .set_remote_description(Instant::now(), answer)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut up_s, mut up_c) = (false, false);
    while !(up_s && up_c) {
        assert!(Instant::now() < deadline, "in-memory peers never connected");
        deliver(&mut server, &mut client, c_addr);
        deliver(&mut client, &mut server, s_addr);
        while let Some(ev) = server.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                up_s = s == RTCPeerConnectionState::Connected;
            }
        }
        while let Some(ev) = client.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                up_c = s == RTCPeerConnectionState::Connected;
            }
        }
        while client.poll_read().is_some() {}
        let now = Instant::now();
        server.handle_timeout(now).unwrap();
        client.handle_timeout(now).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let pt = server
        .rtp_sender(sender)
        .unwrap()
        .get_parameters()
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("audio/opus"))
        .map(|c| c.payload_type)
        .expect("opus negotiated");
    (server, sender, pt, ssrc)
}

fn rtc_write(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtc_write");
    g.throughput(Throughput::Elements(1));
    let payload = Bytes::from(vec![0xA5u8; PAYLOAD]);
    for (name, interceptors) in [("default", true), ("bare", false)] {
        let (mut server, sender, pt, ssrc) = connected(interceptors);
        let mut seq: u16 = 0;
        let mut ts: u32 = 0;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(960);
                let packet = rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        payload_type: pt,
                        sequence_number: seq,
                        timestamp: ts,
                        ssrc,
                        ..Default::default()
                    },
                    payload: payload.clone(),
                };
                server
                    .rtp_sender(sender)
                    .unwrap()
                    .write_rtp(Instant::now(), packet)
                    .unwrap();
                while let Some(out) = server.poll_write() {
                    black_box(out);
                }
            })
        });
        // Keep its timers honest between groups.
        server.handle_timeout(Instant::now()).unwrap();
    }
    g.finish();
}

/// A loopback receiver drained by its own thread, as a client's socket is.
fn sink() -> (SocketAddr, std::thread::JoinHandle<()>, UdpSocket) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = rx.local_addr().unwrap();
    let stop = rx.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok(n) = rx.recv(&mut buf) {
            if n == 1 {
                break;
            }
        }
    });
    (addr, t, stop)
}

fn udp_send(c: &mut Criterion) {
    // SRTP adds a 10-byte tag to the 12-byte header and payload.
    let datagram = BytesMut::from(&[0x80u8; 12 + PAYLOAD + 10][..]);
    let mut g = c.benchmark_group("udp_send");
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (addr, t, _keep) = sink();
    g.throughput(Throughput::Elements(1));
    g.bench_function("sendto", |b| {
        b.iter(|| {
            let _ = black_box(tx.send_to(&datagram, addr));
        })
    });
    const BATCH: usize = 32;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("sendmmsg_32", |b| {
        let sa = socket2_addr(addr);
        b.iter(|| {
            let mut iov: [libc::iovec; BATCH] = [libc::iovec {
                iov_base: datagram.as_ptr() as *mut _,
                iov_len: datagram.len(),
            }; BATCH];
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
                m.msg_hdr.msg_name = &sa as *const libc::sockaddr_in as *mut _;
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
            }
            use std::os::fd::AsRawFd;
            // SAFETY: every header points at live buffers for the duration of the call.
            let n = unsafe { libc::sendmmsg(tx.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            black_box(n);
        })
    });
    g.finish();
    let _ = tx.send_to(&[0], addr);
    let _ = t.join();
}

fn socket2_addr(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        unreachable!("loopback v4")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

criterion_group!(benches, rtc_write, udp_send);
criterion_main!(benches);
