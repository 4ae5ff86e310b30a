//! A prototype of the media plane docs/performance.md proposes, measured with real sockets:
//! one thread (pinned to core 0) drives every server-side sans-IO `rtc` peer connection from
//! one UDP socket, demultiplexes datagrams by remote address, fans one publisher's packets out
//! to every subscriber's connection and sends the results with `sendmmsg`. The clients (one
//! publisher, N subscribers, `rtc` too, each with its own socket) run on core 1.
//!
//! It is not the product: no signaling (descriptions are handed over in memory), the clients'
//! addresses are registered with the shard up front instead of being learnt from STUN, timers
//! are swept every 5 ms. It answers one question before `src/peer/` is rewritten: how many
//! forwarded packets per CPU-second does this design reach on this machine?
//!
//! `cargo bench --bench shard_forward -- [subscribers] [pps] [seconds]` (default 200 250 8)
//! prints one JSON line: delivered packets/s, the shard thread's CPU seconds
//! (`CLOCK_THREAD_CPUTIME_ID`), packets per CPU-second, loss and latency send → subscriber.

use bytes::{Bytes, BytesMut};
use conclave::plane::engine::{Engine, TransportId};
use conclave::plane::sdp::{self as plane_sdp, Answered, Sending};
use conclave::plane::transport::{Credentials, Identity, Transport, TransportEvent};
use conclave::plane::worker::{Command as WorkerCommand, Event as WorkerEvent, Worker};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const PAYLOAD: usize = 100;
const BATCH: usize = 64;

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

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

fn audio_track(ssrc: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        format!("s{ssrc}"),
        format!("a{ssrc}"),
        "audio".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus(),
            ..Default::default()
        }],
    )
}

fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
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

/// Datagrams waiting for one `sendmmsg`.
struct Outbox {
    data: Vec<BytesMut>,
    to: Vec<libc::sockaddr_in>,
    calls: u64,
}

impl Outbox {
    fn push(&mut self, fd: i32, msg: BytesMut, to: SocketAddr) {
        self.data.push(msg);
        self.to.push(sockaddr(to));
        if self.data.len() == BATCH {
            self.flush(fd);
        }
    }

    fn flush(&mut self, fd: i32) {
        if self.data.is_empty() {
            return;
        }
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: zeroed mmsghdrs are valid; each is filled below before use.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let n = self.data.len();
        for i in 0..n {
            iov[i].iov_base = self.data[i].as_ptr() as *mut _;
            iov[i].iov_len = self.data[i].len();
            msgs[i].msg_hdr.msg_name = &mut self.to[i] as *mut libc::sockaddr_in as *mut _;
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: every header points at buffers that live until the call returns.
            let r = unsafe { libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), (n - sent) as u32, 0) };
            self.calls += 1;
            if r <= 0 {
                break; // a full socket buffer: drop the rest, as UDP would
            }
            sent += r as usize;
        }
        self.data.clear();
        self.to.clear();
    }
}

struct Shard {
    socket: UdpSocket,
    addr: SocketAddr,
    pcs: Vec<RTCPeerConnection>,
    by_addr: HashMap<SocketAddr, usize>,
    /// (subscriber connection, its sender, payload type, SSRC) per subscriber.
    legs: Vec<(usize, RTCRtpSenderId, u8, u32)>,
    out: Outbox,
    forwarded: u64,
    /// `--own-srtp`: legs that bypass `rtc`'s outbound chain: (client address, SRTP context,
    /// SSRC). The shard rewrites, marshals and encrypts each copy itself.
    own: Vec<(SocketAddr, Context, u32)>,
    scratch: Vec<u8>,
}

impl Shard {
    fn drain_writes(&mut self, i: usize) {
        let fd = self.socket.as_raw_fd();
        while let Some(msg) = self.pcs[i].poll_write() {
            self.out.push(fd, msg.message, msg.transport.peer_addr);
        }
    }

    fn handle_datagram(&mut self, buf: &[u8], from: SocketAddr, now: Instant) {
        let Some(&i) = self.by_addr.get(&from) else {
            return;
        };
        let _ = self.pcs[i].handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(buf),
        });
        while self.pcs[i].poll_event().is_some() {}
        while let Some(TaggedRTCMessage { message, .. }) = self.pcs[i].poll_read() {
            if i != 0 {
                continue; // subscribers' RTCP
            }
            if let RTCMessage::RtpPacket(_, packet) = message {
                self.fan_out(packet, now);
            }
        }
        self.drain_writes(i);
    }

    fn fan_out(&mut self, mut packet: rtp::Packet, now: Instant) {
        packet.header.extension = false;
        packet.header.extensions.clear();
        let fd = self.socket.as_raw_fd();
        for k in 0..self.own.len() {
            let (to, ctx, ssrc) = &mut self.own[k];
            let mut header = packet.header.clone();
            header.ssrc = *ssrc;
            header.payload_type = 111;
            self.scratch.clear();
            self.scratch
                .resize(header.marshal_size() + packet.payload.len(), 0);
            let n = header.marshal_to(&mut self.scratch[..]).unwrap();
            self.scratch[n..].copy_from_slice(&packet.payload);
            if let Ok(out) = ctx.encrypt_rtp_with_header(&self.scratch, &header) {
                self.forwarded += 1;
                self.out.push(fd, out, *to);
            }
        }
        for k in 0..self.legs.len() {
            let (pc, sender, pt, ssrc) = self.legs[k];
            let mut copy = packet.clone();
            copy.header.ssrc = ssrc;
            copy.header.payload_type = pt;
            if let Some(mut s) = self.pcs[pc].rtp_sender(sender)
                && s.write_rtp(now, copy).is_ok()
            {
                self.forwarded += 1;
            }
            self.drain_writes(pc);
        }
    }

    fn sweep(&mut self, now: Instant) {
        for i in 0..self.pcs.len() {
            if self.pcs[i].poll_timeout().is_some_and(|t| t <= now) {
                let _ = self.pcs[i].handle_timeout(now);
            }
            while self.pcs[i].poll_event().is_some() {}
            while self.pcs[i].poll_read().is_some() {}
            self.drain_writes(i);
        }
    }

    fn run(mut self, stop: Arc<AtomicBool>, cpu: mpsc::Sender<(Duration, u64, u64)>) {
        pin(0);
        self.socket.set_nonblocking(true).unwrap();
        let fd = self.socket.as_raw_fd();
        let mut buf = [0u8; 2048];
        let mut next_sweep = Instant::now();
        let mut marks: Option<(Duration, u64, u64)> = None;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + Duration::from_millis(5);
            }
            let mut got = false;
            loop {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        got = true;
                        self.handle_datagram(&buf[..n], from, Instant::now());
                    }
                    Err(_) => break,
                }
            }
            self.out.flush(fd);
            if !got {
                let wait = next_sweep.saturating_duration_since(Instant::now());
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd.
                unsafe { libc::poll(&mut p, 1, wait.as_millis().max(1) as i32) };
            }
            // The measurement window is marked by the main thread through `cpu`'s peer.
            if marks.is_none() && MARK.load(Ordering::Relaxed) == 1 {
                marks = Some((thread_cpu(), self.forwarded, self.out.calls));
                MARK.store(2, Ordering::Relaxed);
            }
            if MARK.load(Ordering::Relaxed) == 3
                && let Some((c0, f0, s0)) = marks.take()
            {
                let _ = cpu.send((thread_cpu() - c0, self.forwarded - f0, self.out.calls - s0));
                MARK.store(4, Ordering::Relaxed);
            }
        }
    }
}

static MARK: AtomicU64 = AtomicU64::new(0);

/// The publisher's SSRC.
const PUB_SSRC: u32 = 0x5000_0000;

struct Client {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    addr: SocketAddr,
}

impl Client {
    fn pump(&mut self, buf: &mut [u8], now: Instant) -> bool {
        let mut any = false;
        while let Ok((n, from)) = self.socket.recv_from(buf) {
            any = true;
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
        any
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let subscribers: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let pps: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(250);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8);
    // `--bare`: the shard's connections without interceptors (no reports, NACK or TWCC).
    let interceptors = !std::env::args().any(|a| a == "--bare");
    // `--own-srtp`: subscribers are raw sockets with pre-shared SRTP keys (no DTLS): what the
    // forwarding path costs when the plane owns RTP serialisation and SRTP itself.
    let own_srtp = std::env::args().any(|a| a == "--own-srtp");
    // `--plane`: the server side is `conclave::plane` (its own ICE-lite, DTLS and SRTP per
    // client, one engine and socket for all), the clients are `rtc` peers doing real DTLS.
    // `--worker`: the same, but the server side is `conclave::plane::worker::Worker`, the
    // product's component: its own thread, commands over its queue, forwarding in its loop.
    let use_worker = std::env::args().any(|a| a == "--worker");
    let use_plane = use_worker || std::env::args().any(|a| a == "--plane");
    let provider = rtc::crypto::default_provider().unwrap();
    let profile = ProtectionProfile::AeadAes128Gcm;
    let key = |k: usize| {
        let mut key = vec![0u8; profile.key_len()];
        let mut salt = vec![0u8; profile.salt_len()];
        key[..8].copy_from_slice(&(k as u64).to_be_bytes());
        salt[..8].copy_from_slice(&(!(k as u64)).to_be_bytes());
        Context::new(&key, &salt, profile, None, None, provider.crypto()).unwrap()
    };
    let mut raw: Vec<(UdpSocket, Context)> = Vec::new();
    pin(1);

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = set_buffers(&socket);
    let s_addr = socket.local_addr().unwrap();

    let mut shard = Shard {
        socket,
        addr: s_addr,
        pcs: Vec::new(),
        by_addr: HashMap::new(),
        legs: Vec::new(),
        out: Outbox {
            data: Vec::with_capacity(BATCH),
            to: Vec::with_capacity(BATCH),
            calls: 0,
        },
        forwarded: 0,
        own: Vec::new(),
        scratch: Vec::with_capacity(1500),
    };
    let mut clients: Vec<Client> = Vec::new();
    let new_client = |clients: &mut Vec<Client>| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = set_buffers(&socket);
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        clients.push(Client {
            pc: peer(addr, true),
            socket,
            addr,
        });
    };

    // The publisher: it offers, the shard answers.
    new_client(&mut clients);
    let pub_ssrc = PUB_SSRC;
    let pub_sender = clients[0].pc.add_track(audio_track(pub_ssrc)).unwrap();
    let mut plane = use_plane.then(|| PlaneServer::new(use_worker));
    if let Some(plane) = &mut plane {
        plane.publisher(&mut clients[0].pc, pub_ssrc);
        for k in 0..subscribers {
            new_client(&mut clients);
            plane.subscriber(&mut clients[k + 1].pc, 0x6000_0000 + k as u32);
        }
    } else {
        let mut server_pub = peer(s_addr, interceptors);
        exchange(&mut clients[0].pc, &mut server_pub);
        shard.by_addr.insert(clients[0].addr, 0);
        shard.pcs.push(server_pub);
    }
    // Subscribers: the shard offers one audio track each.
    for k in 0..if own_srtp || use_plane {
        0
    } else {
        subscribers
    } {
        new_client(&mut clients);
        let mut pc = peer(s_addr, interceptors);
        let ssrc = 0x6000_0000 + k as u32;
        let sender = pc.add_track(audio_track(ssrc)).unwrap();
        exchange(&mut pc, &mut clients[k + 1].pc);
        let pt = pc
            .rtp_sender(sender)
            .unwrap()
            .get_parameters()
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("audio/opus"))
            .map(|c| c.payload_type)
            .unwrap();
        shard.by_addr.insert(clients[k + 1].addr, k + 1);
        shard.legs.push((k + 1, sender, pt, ssrc));
        shard.pcs.push(pc);
    }
    if own_srtp {
        for k in 0..subscribers {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let _ = set_buffers(&socket);
            socket.set_nonblocking(true).unwrap();
            shard
                .own
                .push((socket.local_addr().unwrap(), key(k), 0x6000_0000 + k as u32));
            raw.push((socket, key(k)));
        }
    }
    for c in &mut clients {
        while let Some(msg) = c.pc.poll_write() {
            let _ = c.socket.send_to(&msg.message, msg.transport.peer_addr);
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (cpu_tx, cpu_rx) = mpsc::channel();
    let shard_thread = {
        let stop = stop.clone();
        match plane {
            Some(plane) => std::thread::spawn(move || plane.run(stop, cpu_tx)),
            None => std::thread::spawn(move || shard.run(stop, cpu_tx)),
        }
    };

    // Clients on this thread: connect, then publish at `pps` and count arrivals.
    let epoch = Instant::now();
    let mut buf = [0u8; 2048];
    let mut connected = vec![false; clients.len()];
    let mut next_timer = Instant::now();
    let mut seq: u16 = 0;
    let mut next_send = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / pps);
    let mut window: Option<Instant> = None;
    let mut sent_in_window = 0u64;
    let mut received_in_window = 0u64;
    let mut latencies_us: Vec<u32> = Vec::with_capacity(1 << 20);
    let setup_deadline = Instant::now() + Duration::from_secs(60);
    let mut warm_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        for (i, c) in clients.iter_mut().enumerate() {
            c.pump(&mut buf, now);
            while let Some(ev) = c.pc.poll_event() {
                match ev {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => {
                        connected[i] = s == RTCPeerConnectionState::Connected;
                    }
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(_)) => {}
                    _ => {}
                }
            }
            while let Some(TaggedRTCMessage { message, .. }) = c.pc.poll_read() {
                if let RTCMessage::RtpPacket(_, p) = message
                    && i > 0
                    && window.is_some()
                    && p.payload.len() >= 8
                {
                    let sent_ns = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                    let lat = (now - epoch).as_nanos() as u64 - sent_ns;
                    received_in_window += 1;
                    latencies_us.push((lat / 1000) as u32);
                }
            }
        }
        for (sock, ctx) in &mut raw {
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                if window.is_none() {
                    continue;
                }
                if let Ok(plain) = ctx.decrypt_rtp(&buf[..n]) {
                    let mut b = &plain[..];
                    let Ok(h) = rtp::header::Header::unmarshal(&mut b) else {
                        continue;
                    };
                    let body = &plain[h.marshal_size()..];
                    if body.len() >= 8 {
                        let sent_ns = u64::from_be_bytes(body[..8].try_into().unwrap());
                        let lat = (now - epoch).as_nanos() as u64 - sent_ns;
                        received_in_window += 1;
                        latencies_us.push((lat / 1000) as u32);
                    }
                }
            }
        }
        if now >= next_timer {
            for c in &mut clients {
                if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = c.pc.handle_timeout(now);
                }
            }
            next_timer = now + Duration::from_millis(5);
        }
        let all_up = connected.iter().all(|c| *c);
        if !all_up {
            assert!(now < setup_deadline, "not every client connected in 60 s");
            continue;
        }
        // Publish.
        while next_send <= now {
            next_send += interval;
            seq = seq.wrapping_add(1);
            let mut payload = vec![0u8; PAYLOAD];
            let stamp = (Instant::now() - epoch).as_nanos() as u64;
            payload[..8].copy_from_slice(&stamp.to_be_bytes());
            let pt = 111;
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: u32::from(seq) * 960,
                    ssrc: pub_ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            if let Some(mut s) = clients[0].pc.rtp_sender(pub_sender) {
                let _ = s.write_rtp(now, packet);
            }
            if window.is_some() {
                sent_in_window += 1;
            }
        }
        let warm = *warm_until.get_or_insert(now + Duration::from_secs(2));
        if window.is_none() && now >= warm {
            window = Some(now);
            MARK.store(1, Ordering::Relaxed);
        }
        if let Some(w) = window
            && now >= w + Duration::from_secs(seconds)
        {
            break;
        }
    }
    let elapsed = window.unwrap().elapsed();
    MARK.store(3, Ordering::Relaxed);
    let (cpu, forwarded, calls) = cpu_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    stop.store(true, Ordering::Relaxed);
    let _ = shard_thread.join();
    latencies_us.sort_unstable();
    let q = |f: f64| {
        latencies_us
            .get(
                ((latencies_us.len() as f64 * f) as usize)
                    .min(latencies_us.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let expected = sent_in_window * subscribers as u64;
    println!(
        "{{\"subscribers\":{subscribers},\"interceptors\":{interceptors},\"own_srtp\":{own_srtp},\"plane\":{use_plane},\"worker\":{use_worker},\"pps\":{pps},\"seconds\":{:.2},\"delivered_per_second\":{:.0},\"forwarded\":{forwarded},\"shard_cpu_seconds\":{:.3},\"packets_per_cpu_second\":{:.0},\"sendmmsg_calls\":{calls},\"loss\":{:.4},\"latency_ms\":{{\"p50\":{:.2},\"p99\":{:.2},\"max\":{:.2}}}}}",
        elapsed.as_secs_f64(),
        received_in_window as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64(),
        forwarded as f64 / cpu.as_secs_f64(),
        1.0 - (received_in_window as f64 / expected.max(1) as f64).min(1.0),
        q(0.5),
        q(0.99),
        q(1.0),
    );
}

fn set_buffers(s: &UdpSocket) -> std::io::Result<()> {
    set_buffers_fd(s.as_raw_fd())
}

/// Offer from `offerer`, answer from `answerer`, both applied (candidates ride in the SDP).
fn exchange(offerer: &mut RTCPeerConnection, answerer: &mut RTCPeerConnection) {
    let now = Instant::now();
    let offer = offerer.create_offer(None).unwrap();
    offerer.set_local_description(now, offer.clone()).unwrap();
    answerer
        .set_remote_description(now, RTCSessionDescription::offer(offer.sdp).unwrap())
        .unwrap();
    let answer = answerer.create_answer(None).unwrap();
    answerer.set_local_description(now, answer.clone()).unwrap();
    offerer
        .set_remote_description(now, RTCSessionDescription::answer(answer.sdp).unwrap())
        .unwrap();
}

/// `--plane`: the server side made of `conclave::plane`.
struct PlaneServer {
    engine: Engine,
    identity: Identity,
    publisher: Option<TransportId>,
    /// (transport, payload type the client offered for Opus, SSRC).
    legs: Vec<(TransportId, u8, u32)>,
    /// `--worker`: transports live in this worker instead (keys as `TransportId`s).
    worker: Option<Worker>,
    /// The worker's transports' event queues, kept open.
    events: Vec<tokio::sync::mpsc::Receiver<WorkerEvent>>,
}

impl PlaneServer {
    fn new(worker: bool) -> Self {
        let engine = Engine::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let _ = set_buffers_fd(engine.raw_fd());
        PlaneServer {
            engine,
            identity: Identity::generate().unwrap(),
            publisher: None,
            legs: Vec::new(),
            worker: worker.then(|| Worker::start("127.0.0.1:0".parse().unwrap()).unwrap()),
            events: Vec::new(),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        match &self.worker {
            Some(w) => w.local_addr(),
            None => self.engine.local_addr(),
        }
    }

    fn transport_for(
        &mut self,
        client: &mut RTCPeerConnection,
        section: Answered,
    ) -> (TransportId, u8) {
        let now = Instant::now();
        let offer = client.create_offer(None).unwrap();
        client.set_local_description(now, offer.clone()).unwrap();
        let parsed = plane_sdp::parse_offer(&offer.sdp).unwrap();
        let pt = parsed.media[0]
            .codecs
            .iter()
            .find(|(_, c)| c.to_ascii_lowercase().starts_with("opus/48000"))
            .map(|(pt, _)| *pt)
            .unwrap();
        let provider = rtc::crypto::default_provider().unwrap();
        let creds = Credentials::generate(&*provider, parsed.fingerprint.clone());
        let answer = plane_sdp::answer(
            &parsed,
            &[section],
            &creds.local_ufrag,
            &creds.local_pwd,
            &self.identity.fingerprint,
            self.local_addr(),
        );
        let t = Transport::new(&self.identity, creds, self.local_addr(), now).unwrap();
        client
            .set_remote_description(now, RTCSessionDescription::answer(answer).unwrap())
            .unwrap();
        let id = match &self.worker {
            Some(w) => {
                let key = w.key();
                let (tx, rx) = tokio::sync::mpsc::channel(64);
                self.events.push(rx);
                w.send(WorkerCommand::Add {
                    key,
                    transport: Box::new(t),
                    events: tx,
                })
                .unwrap();
                key as TransportId
            }
            None => self.engine.insert(t),
        };
        (id, pt)
    }

    fn publisher(&mut self, client: &mut RTCPeerConnection, ssrc: u32) {
        let (id, _) = self.transport_for(client, Answered::Receive("opus/48000".into()));
        self.publisher = Some(id);
        if let Some(w) = &self.worker {
            w.send(WorkerCommand::Publish {
                key: id as u64,
                ssrc,
                video: None,
                tap: None,
            })
            .unwrap();
        }
    }

    fn subscriber(&mut self, client: &mut RTCPeerConnection, ssrc: u32) {
        client
            .add_transceiver_from_kind(
                RtpCodecKind::Audio,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .unwrap();
        let (id, pt) = self.transport_for(
            client,
            Answered::Send(Sending {
                codec: "opus/48000".into(),
                ssrc,
                msid: (format!("s{ssrc}"), format!("t{ssrc}")),
            }),
        );
        self.legs.push((id, pt, ssrc));
        if let Some(w) = &self.worker {
            w.send(WorkerCommand::Subscribe {
                from: self.publisher.unwrap() as u64,
                source_ssrc: PUB_SSRC,
                to: id as u64,
                ssrc,
                payload_type: pt,
            })
            .unwrap();
        }
    }

    fn run(mut self, stop: Arc<AtomicBool>, cpu: mpsc::Sender<(Duration, u64, u64)>) {
        if let Some(w) = self.worker.take() {
            return watch_worker(w, stop, cpu);
        }
        pin(0);
        let publisher = self.publisher.unwrap();
        let mut next_timer = Instant::now();
        let mut pending: Vec<BytesMut> = Vec::with_capacity(64);
        let mut forwarded = 0u64;
        let mut marks: Option<(Duration, u64, u64)> = None;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_timer {
                self.engine.handle_timeouts(now, |_, _| {});
                next_timer = now + Duration::from_millis(5);
            }
            let got = self.engine.receive(now, |id, ev| {
                if id == publisher
                    && let TransportEvent::Rtp(p) = ev
                {
                    pending.push(p);
                }
            });
            for p in pending.drain(..) {
                let mut b = &p[..];
                let Ok(header) = rtp::header::Header::unmarshal(&mut b) else {
                    continue;
                };
                let payload = &p[header.marshal_size()..];
                let mut out = header.clone();
                out.extension = false;
                out.extensions.clear();
                let mut raw = [0u8; 128];
                for &(id, pt, ssrc) in &self.legs {
                    out.ssrc = ssrc;
                    out.payload_type = pt;
                    let Ok(n) = out.marshal_to(&mut raw) else {
                        continue;
                    };
                    if self.engine.send_rtp(id, &raw[..n], payload).is_ok() {
                        forwarded += 1;
                    }
                }
                self.engine.recycle(p);
            }
            self.engine.flush();
            if got == 0 {
                self.engine.wait(
                    next_timer
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                );
            }
            let batches = self.engine.stats().batches;
            if marks.is_none() && MARK.load(Ordering::Relaxed) == 1 {
                marks = Some((thread_cpu(), forwarded, batches));
                MARK.store(2, Ordering::Relaxed);
            }
            if MARK.load(Ordering::Relaxed) == 3
                && let Some((c0, f0, b0)) = marks.take()
            {
                let _ = cpu.send((thread_cpu() - c0, forwarded - f0, batches - b0));
                MARK.store(4, Ordering::Relaxed);
            }
        }
    }
}

/// `--worker`: pins the worker's thread to core 0 and reads its CPU time from /proc at the
/// window's edges.
fn watch_worker(w: Worker, stop: Arc<AtomicBool>, cpu: mpsc::Sender<(Duration, u64, u64)>) {
    let name = format!("media-{}", w.local_addr().port());
    let tid: i32 = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .find(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
        .expect("the worker's thread");
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let on_cpu = || {
        let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap();
        Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
    };
    let counts = |w: &Worker| {
        (
            w.stats().forwarded.load(Ordering::Relaxed),
            w.stats().batches.load(Ordering::Relaxed),
        )
    };
    let mut marks: Option<(Duration, u64, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        if marks.is_none() && MARK.load(Ordering::Relaxed) == 1 {
            let (f, b) = counts(&w);
            marks = Some((on_cpu(), f, b));
            MARK.store(2, Ordering::Relaxed);
        }
        if MARK.load(Ordering::Relaxed) == 3
            && let Some((c0, f0, b0)) = marks.take()
        {
            let (f, b) = counts(&w);
            let _ = cpu.send((on_cpu() - c0, f - f0, b - b0));
            MARK.store(4, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn set_buffers_fd(fd: i32) -> std::io::Result<()> {
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: sets an int socket option.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &size as *const _ as *const _,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
    }
    Ok(())
}
