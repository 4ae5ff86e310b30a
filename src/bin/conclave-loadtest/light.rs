//! Light clients: WebRTC clients made of the media plane's own parts, for loads that one core
//! of webrtc-rs clients cannot receive (`--client light`): subscribers, and publishers of
//! audio (a video publisher stays a webrtc-rs one: keyframes on request are its encoder's).
//!
//! A webrtc-rs subscriber costs its process more per packet than the plane spends forwarding
//! it, so at the plane's half-saturation load the client's core, not the server, set the
//! latency that was measured; and a webrtc-rs publisher stamps a packet before its interceptor
//! chain and driver task, whose delays were counted as the server's. A light client is one
//! task with one UDP socket:
//!
//! * it offers receive-only sections (Opus, and VP8 with video) or one send-only Opus section,
//!   answers the server's later offers in kind (or `inactive` where the server sends nothing),
//!   and takes the server's ICE credentials, fingerprint and candidate from its descriptions
//!   or trickle;
//! * it is the ICE controlling agent (the server is ICE-lite): a Binding request with
//!   USE-CANDIDATE every 50 ms until one is answered, then one every 5 s for consent;
//! * it is the DTLS client (`rtc`'s endpoint; the server's certificate must match the
//!   fingerprint of its SDP), and SRTP comes from the same key export the server uses
//!   ([`conclave::plane::transport::srtp_contexts`]); RTP is decrypted in place in one reused
//!   buffer ([`conclave::plane::srtp`]), and its payload timed like any subscriber's.
//! * connected, a subscriber's socket goes to one reader thread for all of them (epoll and
//!   `recvmmsg`), and a publisher's to a thread of its own that paces its packets and stamps
//!   each just before it is encrypted and sent.
//!
//! It sends no RTCP (no receiver reports or NACKs) and reads none (a publisher's receiver
//! reports and REMB are left unread): on loopback nothing is lost, and the server's forwarding
//! does not depend on them. Conclave only: Janus offers first to subscribers and runs full
//! ICE, which this client does not answer.

use crate::peer::{Sent, Traffic};
use crate::stats::{self, Subscriber, Window};
use anyhow::{Context, bail};
use bytes::BytesMut;
use conclave::plane::transport::{self, Identity};
use conclave::plane::{sdp, srtp};
use conclave_signaling::{ClientMessage, ServerMessage, decode_server};
use futures::{Stream, StreamExt};
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::shared::TransportProtocol;
use rtc::stun::attributes::{
    ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USE_CANDIDATE, ATTR_USERNAME,
};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, TransactionId};
use rtc::stun::textattrs::TextAttribute;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Checks before one is answered.
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// Consent checks once connected (the server gives up after 30 s without one).
const CONSENT_EVERY: Duration = Duration::from_secs(5);
/// Datagrams read per wake-up before the task looks at signaling and timers again.
const DRAIN: usize = 64;

/// A running light client; dropping it stops it (and closes its signaling socket).
pub struct Light {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Tells the reader (or the sending thread) to close its copy of the socket.
    closed: Arc<AtomicBool>,
    /// Becomes true once DTLS is done.
    pub connected: watch::Receiver<bool>,
}

/// What a light client does in its room.
pub enum Part {
    /// Receives (audio, and video if `video`), timed into `stats`.
    Receive { stats: Arc<Subscriber>, video: bool },
    /// Sends `traffic`'s audio as stream `stream`, counted into `sent`.
    Send {
        traffic: Traffic,
        stream: u16,
        sent: Arc<Sent>,
    },
}

impl Drop for Light {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The DTLS certificate every light client of this process presents.
fn identity() -> anyhow::Result<&'static Identity> {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    if let Some(i) = IDENTITY.get() {
        return Ok(i);
    }
    let made = Identity::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(IDENTITY.get_or_init(|| made))
}

/// Starts a client whose server messages arrive on `ws_rx` and whose own go to `out` (the
/// caller has joined the room; the offer is sent here).
pub async fn start<S, E>(
    out: mpsc::UnboundedSender<ClientMessage>,
    ws_rx: S,
    writer: tokio::task::JoinHandle<()>,
    part: Part,
    window: Arc<Window>,
) -> anyhow::Result<Light>
where
    S: Stream<Item = Result<WsMessage, E>> + Unpin + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let identity = identity()?;
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let local = sock.local_addr()?;
    let local_creds = transport::Credentials::generate(&**identity.provider(), String::new());
    let (ufrag, pwd) = (local_creds.local_ufrag, local_creds.local_pwd);
    let closed = Arc::new(AtomicBool::new(false));
    let (connected_tx, connected) = watch::channel(false);
    let sections = match &part {
        Part::Receive { video, .. } => {
            let mut v = vec![Offered {
                kind: "audio",
                mid: "0".into(),
                codec: Some((111, "opus/48000/2".into())),
                direction: Direction::Receive,
            }];
            if *video {
                v.push(Offered {
                    kind: "video",
                    mid: "1".into(),
                    codec: Some((96, "VP8/90000".into())),
                    direction: Direction::Receive,
                });
            }
            v
        }
        Part::Send { .. } => vec![Offered {
            kind: "audio",
            mid: "0".into(),
            codec: Some((111, "opus/48000/2".into())),
            direction: Direction::Send(rand::random::<u32>() | 1),
        }],
    };
    let mut client = Client {
        sock: Some(sock),
        sender: None,
        closed: closed.clone(),
        local,
        ufrag,
        pwd,
        tiebreaker: rand::random(),
        identity,
        remote: Remote::default(),
        answered: false,
        next_check: Instant::now(),
        dtls: None,
        rtp: None,
        buf: BytesMut::with_capacity(srtp::BUFFER),
        version: 1,
        send_ssrc: match sections[0].direction {
            Direction::Send(ssrc) => Some(ssrc),
            _ => None,
        },
        send_pt: None,
        part,
        window,
        out,
        connected: connected_tx,
    };
    let sdp = client.describe(&sections, "actpass");
    client.out.send(ClientMessage::Offer { sdp })?;
    let task = tokio::spawn(async move {
        if let Err(e) = client.run(ws_rx).await {
            eprintln!("light client: {e:#}");
        }
    });
    Ok(Light {
        tasks: vec![task, writer],
        closed,
        connected,
    })
}

/// What the server's descriptions and trickle said about its end.
#[derive(Default)]
struct Remote {
    ufrag: String,
    pwd: String,
    fingerprint: String,
    addr: Option<SocketAddr>,
}

impl Remote {
    /// Takes credentials, fingerprint and the first UDP candidate from a description.
    fn read(&mut self, sdp: &str) {
        for line in sdp.lines().map(str::trim_end) {
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                self.ufrag = v.to_owned();
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                self.pwd = v.to_owned();
            } else if let Some(v) = line.strip_prefix("a=fingerprint:sha-256 ") {
                self.fingerprint = v.trim().to_ascii_lowercase();
            } else if let Some(v) = line.strip_prefix("a=") {
                self.candidate(v);
            }
        }
    }

    /// `candidate:<foundation> <component> udp <priority> <ip> <port> typ <type> ...`
    fn candidate(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("candidate:") else {
            return;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        if self.addr.is_some() || w.len() < 6 || !w[2].eq_ignore_ascii_case("udp") {
            return;
        }
        if let (Ok(ip), Ok(port)) = (w[4].parse(), w[5].parse()) {
            self.addr = Some(SocketAddr::new(ip, port));
        }
    }
}

/// One section of a description this client writes.
struct Offered {
    kind: &'static str,
    mid: String,
    /// The codec used there; `None` rejects the section.
    codec: Option<(u8, String)>,
    direction: Direction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Receive,
    /// Send-only, with this SSRC.
    Send(u32),
    Inactive,
}

struct Client {
    /// The socket while this task reads it (ICE and DTLS); `None` once handed to the reader.
    sock: Option<UdpSocket>,
    /// The same socket for consent checks, once the reader reads it.
    sender: Option<std::net::UdpSocket>,
    closed: Arc<AtomicBool>,
    local: SocketAddr,
    ufrag: String,
    pwd: String,
    tiebreaker: u64,
    identity: &'static Identity,
    remote: Remote,
    /// A check of ours was answered (the server validated and nominated our address).
    answered: bool,
    next_check: Instant,
    dtls: Option<Endpoint>,
    /// SRTP for RTP once DTLS is done: ours (protects), the server's (checks).
    rtp: Option<(srtp::RtpContext, srtp::RtpContext)>,
    buf: BytesMut,
    version: u64,
    /// A publisher's SSRC, and the payload type the server's answer gave its Opus.
    send_ssrc: Option<u32>,
    send_pt: Option<u8>,
    part: Part,
    window: Arc<Window>,
    out: mpsc::UnboundedSender<ClientMessage>,
    connected: watch::Sender<bool>,
}

impl Client {
    async fn run<S, E>(&mut self, mut ws_rx: S) -> anyhow::Result<()>
    where
        S: Stream<Item = Result<WsMessage, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut datagram = vec![0u8; 2048];
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let due = self.next_timer();
            if due != armed {
                let at = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                timer.as_mut().reset(at.into());
                armed = due;
            }
            let reading = self.sock.is_some();
            tokio::select! {
                biased;
                r = recv(&self.sock, &mut datagram), if reading => {
                    let (n, from) = r?;
                    self.datagram(&datagram[..n], from)?;
                    for _ in 1..DRAIN {
                        let Some(sock) = &self.sock else { break };
                        match sock.try_recv_from(&mut datagram) {
                            Ok((n, from)) => self.datagram(&datagram[..n], from)?,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    if self.rtp.is_some() {
                        self.hand_off()?;
                    }
                }
                m = ws_rx.next() => match m {
                    Some(Ok(frame)) => self.signal(frame)?,
                    Some(Err(e)) => bail!("signaling: {e}"),
                    None => return Ok(()),
                },
                () = &mut timer => {
                    armed = None;
                    self.timeout()?;
                }
            }
            self.flush().await?;
        }
    }

    /// Connected: a subscriber's socket and SRTP context go to the reader thread, which reads
    /// every connected subscriber's socket with `recvmmsg`; a publisher's to its sending
    /// thread. This task keeps signaling and consent.
    fn hand_off(&mut self) -> anyhow::Result<()> {
        let (Some(sock), Some((ours, theirs))) = (self.sock.take(), self.rtp.take()) else {
            return Ok(());
        };
        let to = self.remote.addr.context("connected without an address")?;
        let sock = sock.into_std()?;
        self.sender = Some(sock.try_clone()?);
        match &self.part {
            Part::Receive { stats, .. } => reader::register(reader::Registration {
                sock,
                rtp: theirs,
                stats: stats.clone(),
                window: self.window.clone(),
                closed: self.closed.clone(),
            })?,
            Part::Send {
                traffic,
                stream,
                sent,
            } => {
                let sender = Sender {
                    sock,
                    to,
                    rtp: ours,
                    pt: self
                        .send_pt
                        .context("the answer gave Opus no payload type")?,
                    ssrc: self.send_ssrc.context("a publisher without an SSRC")?,
                    traffic: *traffic,
                    stream: *stream,
                    sent: sent.clone(),
                    window: self.window.clone(),
                    closed: self.closed.clone(),
                };
                std::thread::Builder::new()
                    .name("light-sender".into())
                    .spawn(move || sender.run())?;
            }
        }
        self.connected.send_replace(true);
        Ok(())
    }

    fn next_timer(&self) -> Option<Instant> {
        let addr = self.remote.addr?;
        let dtls = match &self.dtls {
            Some(d) if self.sock.is_some() => d.poll_timeout(&addr),
            _ => None,
        };
        Some(dtls.map_or(self.next_check, |d| d.min(self.next_check)))
    }

    fn signal(&mut self, frame: WsMessage) -> anyhow::Result<()> {
        let Ok(text) = frame.to_text() else {
            return Ok(());
        };
        let Ok(msg) = decode_server(text) else {
            return Ok(());
        };
        match msg {
            ServerMessage::Answer { sdp } => {
                self.remote.read(&sdp);
                if self.send_ssrc.is_some()
                    && let Ok(answer) = sdp::parse_offer(&sdp)
                {
                    self.send_pt = answer
                        .media
                        .first()
                        .and_then(|m| m.codecs.iter().find(|(_, c)| c.starts_with("opus/")))
                        .map(|(pt, _)| *pt);
                }
            }
            ServerMessage::Offer { sdp } => {
                self.remote.read(&sdp);
                let offer = sdp::parse_offer(&sdp).context("the server's offer")?;
                let sections = answer_sections(&offer, self.send_ssrc);
                let sdp = self.describe(&sections, "active");
                self.out.send(ClientMessage::Answer { sdp })?;
            }
            ServerMessage::Candidate { candidate } => self.remote.candidate(&candidate.candidate),
            ServerMessage::Error { code, message, .. } => {
                eprintln!("server error: {code:?}: {message}");
            }
            _ => {}
        }
        Ok(())
    }

    /// A description of `sections` with our credentials (`setup` is `actpass` in an offer,
    /// `active` in an answer).
    fn describe(&mut self, sections: &[Offered], setup: &str) -> String {
        self.version += 1;
        describe(
            &Local {
                ufrag: &self.ufrag,
                pwd: &self.pwd,
                fingerprint: &self.identity.fingerprint,
                session: self.tiebreaker >> 2,
                version: self.version - 1,
            },
            sections,
            setup,
        )
    }

    fn datagram(&mut self, data: &[u8], from: SocketAddr) -> anyhow::Result<()> {
        if Some(from) != self.remote.addr {
            return Ok(());
        }
        match data.first() {
            Some(0..=3) => self.stun(data, from)?,
            Some(20..=63) => self.dtls_read(data, from)?,
            // Media before the hand-off (it arrived in the same read as DTLS's last flight).
            Some(128..=191) => {
                if let (Some((_, ctx)), Part::Receive { stats, .. }) = (&mut self.rtp, &self.part) {
                    receive_rtp(ctx, stats, &self.window, data, &mut self.buf, None);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A Binding response: the first one answered starts DTLS at once.
    fn stun(&mut self, data: &[u8], from: SocketAddr) -> anyhow::Result<()> {
        let mut m = Message::new();
        if m.unmarshal_binary(data).is_err() || m.typ != BINDING_SUCCESS {
            return Ok(());
        }
        let crypto = self.identity.provider().crypto();
        if MessageIntegrity::check(&mut m, self.remote.pwd.as_bytes(), crypto).is_err() {
            return Ok(());
        }
        if !self.answered {
            let now = Instant::now();
            self.answered = true;
            self.next_check = now + CONSENT_EVERY;
            self.dtls = Some(self.connect(from, now)?);
        }
        Ok(())
    }

    fn dtls_read(&mut self, data: &[u8], from: SocketAddr) -> anyhow::Result<()> {
        let Some(dtls) = &mut self.dtls else {
            return Ok(());
        };
        let events = dtls
            .read(Instant::now(), from, None, BytesMut::from(data))
            .map_err(|e| anyhow::anyhow!("DTLS: {e}"))?;
        if events
            .iter()
            .any(|e| matches!(e, EndpointEvent::HandshakeComplete))
        {
            let state = dtls
                .get_connection_state(from)
                .context("DTLS finished without a state")?;
            let c = transport::srtp_contexts(state, &**self.identity.provider())
                .map_err(|e| anyhow::anyhow!(e))?;
            self.rtp = Some((c.local_rtp, c.remote_rtp));
        }
        Ok(())
    }

    fn timeout(&mut self) -> anyhow::Result<()> {
        let Some(addr) = self.remote.addr else {
            return Ok(());
        };
        let now = Instant::now();
        if now >= self.next_check {
            self.check(addr)?;
            self.next_check = now
                + if self.answered {
                    CONSENT_EVERY
                } else {
                    CHECK_EVERY
                };
        }
        if let Some(d) = &mut self.dtls
            && self.sock.is_some()
            && d.poll_timeout(&addr).is_some_and(|t| t <= now)
        {
            d.handle_timeout(addr, now)
                .map_err(|e| anyhow::anyhow!("DTLS: {e}"))?;
        }
        Ok(())
    }

    /// Sends one Binding request to the server (controlling, nominating).
    fn check(&mut self, to: SocketAddr) -> anyhow::Result<()> {
        if self.remote.ufrag.is_empty() {
            return Ok(());
        }
        let crypto = self.identity.provider().crypto();
        let mut m = Message::new();
        let setters: [Box<dyn Setter + '_>; 8] = [
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(
                ATTR_USERNAME,
                format!("{}:{}", self.remote.ufrag, self.ufrag),
            )),
            Box::new(Raw(
                ATTR_ICE_CONTROLLING,
                self.tiebreaker.to_be_bytes().to_vec(),
            )),
            // Host candidate priority for component 1 (RFC 8445 5.1.2.1, type preference 126).
            Box::new(Raw(ATTR_PRIORITY, 2_130_706_431u32.to_be_bytes().to_vec())),
            Box::new(Raw(ATTR_USE_CANDIDATE, Vec::new())),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                self.remote.pwd.clone(),
                crypto,
            )),
            Box::new(FINGERPRINT),
        ];
        m.build(&setters)
            .map_err(|e| anyhow::anyhow!("STUN: {e}"))?;
        // A full socket buffer loses a check; the next one goes 50 ms later.
        if let Some(s) = &self.sock {
            let _ = s.try_send_to(&m.raw, to);
        } else if let Some(s) = &self.sender {
            let _ = s.send_to(&m.raw, to);
        }
        Ok(())
    }

    fn connect(&self, remote: SocketAddr, now: Instant) -> anyhow::Result<Endpoint> {
        let config = transport::dtls_config(self.identity, &self.remote.fingerprint, Some(remote))
            .map_err(|e| anyhow::anyhow!("DTLS config: {e}"))?;
        let mut dtls = Endpoint::new(self.local, TransportProtocol::UDP, None);
        dtls.connect(now, remote, Arc::new(config), None)
            .map_err(|e| anyhow::anyhow!("DTLS: {e}"))?;
        Ok(dtls)
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if let (Some(d), Some(s)) = (&mut self.dtls, &self.sock) {
            while let Some(t) = d.poll_transmit() {
                s.send_to(&t.message, t.transport.peer_addr).await?;
            }
        }
        Ok(())
    }
}

/// What our descriptions carry besides their sections.
struct Local<'a> {
    ufrag: &'a str,
    pwd: &'a str,
    fingerprint: &'a str,
    session: u64,
    version: u64,
}

/// Our answer's sections for a server offer: each offered section answered in kind (receive
/// where the server sends, our own published section `mid 0` send-only, else inactive), with
/// the offer's payload type for Opus or VP8; a section without either, or rejected, is
/// rejected.
fn answer_sections(offer: &sdp::Offer, send_ssrc: Option<u32>) -> Vec<Offered> {
    offer
        .media
        .iter()
        .map(|m| {
            let kind = if m.kind == "video" { "video" } else { "audio" };
            let want = if kind == "video" {
                "vp8/90000"
            } else {
                "opus/48000/2"
            };
            let codec = m
                .codecs
                .iter()
                .find(|(_, c)| c.to_ascii_lowercase() == want)
                .cloned();
            let direction = match send_ssrc {
                Some(ssrc) if m.mid == "0" => Direction::Send(ssrc),
                _ if m.client_sends => Direction::Receive,
                _ => Direction::Inactive,
            };
            Offered {
                kind,
                mid: m.mid.clone(),
                codec: codec.filter(|_| !m.rejected),
                direction,
            }
        })
        .collect()
}

/// An SDP offer or answer of `sections`: one BUNDLE group of the sections not rejected,
/// rtcp-mux, our ICE credentials and fingerprint in each section.
fn describe(local: &Local<'_>, sections: &[Offered], setup: &str) -> String {
    let mut s = String::with_capacity(1024);
    let _ = write!(
        s,
        "v=0\r\no=- {id} {v} IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE",
        id = local.session,
        v = local.version
    );
    for m in sections.iter().filter(|m| m.codec.is_some()) {
        let _ = write!(s, " {}", m.mid);
    }
    s.push_str("\r\na=msid-semantic: WMS\r\n");
    for m in sections {
        let Some((pt, codec)) = &m.codec else {
            let _ = write!(
                s,
                "m={} 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:{}\r\n",
                m.kind, m.mid
            );
            continue;
        };
        let _ = write!(
            s,
            "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n\
             a=fingerprint:sha-256 {fp}\r\na=setup:{setup}\r\na=mid:{mid}\r\n\
             a={dir}\r\na=rtcp-mux\r\na=rtpmap:{pt} {codec}\r\n",
            kind = m.kind,
            ufrag = local.ufrag,
            pwd = local.pwd,
            fp = local.fingerprint,
            mid = m.mid,
            dir = match m.direction {
                Direction::Receive => "recvonly",
                Direction::Send(_) => "sendonly",
                Direction::Inactive => "inactive",
            },
        );
        if let Direction::Send(ssrc) = m.direction {
            let _ = write!(
                s,
                "a=msid:light-{ssrc} light-{ssrc}-audio\r\na=ssrc:{ssrc} cname:light-{ssrc}\r\n"
            );
        }
        if m.kind == "audio" {
            let _ = write!(s, "a=fmtp:{pt} minptime=10;useinbandfec=1\r\n");
        }
    }
    s
}

async fn recv(sock: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// One datagram that may be SRTP: RTP (not RTCP, packet types 192-223 in the second byte) is
/// copied into `work`, decrypted there and its payload timed; anything else is not read.
fn receive_rtp(
    ctx: &mut srtp::RtpContext,
    stats: &Subscriber,
    window: &Window,
    data: &[u8],
    work: &mut BytesMut,
    queued: Option<u64>,
) {
    if data.len() < 2 || !(128..=191).contains(&data[0]) || (192..=223).contains(&data[1]) {
        return;
    }
    work.clear();
    work.extend_from_slice(data);
    if ctx.unprotect(work).is_ok()
        && let Some(hl) = srtp::header_len(work)
    {
        stats.packet_at(&work[hl..], window, queued);
    }
}

/// An attribute written as given.
struct Raw(rtc::stun::attributes::AttrType, Vec<u8>);

impl Setter for Raw {
    fn add_to(&self, m: &mut Message) -> rtc::shared::error::Result<()> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

/// A light publisher's thread: one Opus-sized packet per period, stamped just before it is
/// encrypted and sent, until the client is dropped. Late by a period or more (the tool's core
/// was busy), it skips the missed packets rather than send them in a burst: a burst of N
/// packets into 200 subscribers queues in the server for N times its fan-out time, which
/// measured the tool's stall, not the server (docs/performance.md, "Light clients").
struct Sender {
    sock: std::net::UdpSocket,
    to: SocketAddr,
    rtp: srtp::RtpContext,
    pt: u8,
    ssrc: u32,
    traffic: Traffic,
    stream: u16,
    sent: Arc<Sent>,
    window: Arc<Window>,
    closed: Arc<AtomicBool>,
}

impl Sender {
    fn run(mut self) {
        let pps = u64::from(self.traffic.audio_pps.max(1));
        let period = 1_000_000_000 / pps;
        let ts_step = (48_000 / pps).max(1) as u32;
        let size = self.traffic.audio_bytes.clamp(stats::HEADER, 1200);
        let mut payload = vec![0u8; size];
        let mut b = BytesMut::with_capacity(srtp::BUFFER);
        let mut seq: u16 = rand::random();
        let mut ts: u32 = rand::random();
        let mut next = stats::now_ns();
        while !self.closed.load(Ordering::Relaxed) {
            let now = stats::now_ns();
            if now < next {
                std::thread::sleep(Duration::from_nanos(next - now));
                continue;
            }
            let late = now - next;
            // Late by a whole period or more (this tool's core was busy): the missed packets
            // are not sent in a burst, the cadence resumes from now.
            next = if late >= period { now } else { next } + period;
            let at = stats::now_ns();
            if late > 1_000_000 && self.window.contains(at) {
                self.sent.late.fetch_add(1, Ordering::Relaxed);
                self.sent
                    .late_max_us
                    .fetch_max(late / 1000, Ordering::Relaxed);
            }
            // 0x78: an Opus TOC (SILK wideband, 20 ms, one frame).
            stats::stamp(&mut payload, &[0x78, 0, 0, 0, 0, 0, 0, 0], self.stream, at);
            b.clear();
            b.extend_from_slice(&[0x80, self.pt & 0x7f]);
            b.extend_from_slice(&seq.to_be_bytes());
            b.extend_from_slice(&ts.to_be_bytes());
            b.extend_from_slice(&self.ssrc.to_be_bytes());
            b.extend_from_slice(&payload);
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(ts_step);
            if self.rtp.protect(&mut b).is_err() {
                eprintln!("light publisher: SRTP refused a packet");
                return;
            }
            // A full send buffer loses the packet; it is counted as sent, so as lost.
            let _ = self.sock.send_to(&b, self.to);
            crate::peer::count(&self.sent, &self.window, at);
        }
    }
}

/// The one thread that reads every connected light subscriber's socket: level-triggered
/// epoll, then `recvmmsg` per ready socket (one system call per batch, none to find a socket
/// empty), decrypting in one reused buffer. It runs on the tool's core like everything else.
pub mod reader {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::mpsc as std_mpsc;

    /// A connected subscriber's socket and what its packets need.
    pub struct Registration {
        pub sock: std::net::UdpSocket,
        pub rtp: srtp::RtpContext,
        pub stats: Arc<Subscriber>,
        pub window: Arc<Window>,
        pub closed: Arc<AtomicBool>,
    }

    struct Handle {
        tx: std_mpsc::Sender<Registration>,
        wake: i32,
    }

    const WAKE: u64 = u64::MAX;
    const BATCH: usize = 32;
    const EVENTS: usize = 256;
    const SLOT: usize = 2048;
    const CTRL: usize = 64;
    /// `--read-every-us`: while packets keep coming, the reader sleeps this long between
    /// reads instead of waiting in epoll (0, the default: it waits, woken per arrival, as an
    /// application does). On loopback the server's core runs the receiving side's kernel
    /// path, so a reader woken per arrival makes it pay a wake-up per packet that a client on
    /// another machine never costs it; a cadence removes most of that. Arrival is still timed
    /// at the kernel's socket timestamp (`latency_socket_ms`); user-space latency includes
    /// the wait.
    pub static READ_EVERY_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// CLOCK_REALTIME minus [`stats::now_ns`], read back to back: kernel receive timestamps
    /// are on the first clock, send stamps on the second. (A run lasts seconds; the two do
    /// not drift apart by microseconds in that time.)
    fn realtime_minus_now_ns() -> u64 {
        let now = stats::now_ns();
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        real.saturating_sub(now)
    }

    /// The SCM_TIMESTAMPNS of a received message, in ns since the Unix epoch.
    fn queued_ns(h: &libc::msghdr) -> Option<u64> {
        // SAFETY: walks the control messages the kernel wrote within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }

    /// Hands a socket to the reader (started on first use).
    pub fn register(r: Registration) -> anyhow::Result<()> {
        static HANDLE: OnceLock<anyhow::Result<Handle, String>> = OnceLock::new();
        let h = HANDLE
            .get_or_init(|| start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("light reader: {e}"))?;
        h.tx.send(r)
            .map_err(|_| anyhow::anyhow!("the light reader stopped"))?;
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd.
        unsafe { libc::write(h.wake, one.as_ptr().cast(), 8) };
        Ok(())
    }

    fn start() -> anyhow::Result<Handle> {
        // SAFETY: plain system calls; results checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if ep < 0 || wake < 0 {
            bail!("epoll/eventfd: {}", std::io::Error::last_os_error());
        }
        add(ep, wake, WAKE)?;
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("light-reader".into())
            .spawn(move || run(ep, wake, rx))?;
        Ok(Handle { tx, wake })
    }

    fn add(ep: i32, fd: i32, data: u64) -> anyhow::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        };
        // SAFETY: `ev` lives across the call.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            bail!("epoll_ctl: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn run(ep: i32, wake: i32, rx: std_mpsc::Receiver<Registration>) {
        let read_every = Duration::from_micros(READ_EVERY_US.load(Ordering::Relaxed));
        let mut regs: Vec<Option<Registration>> = Vec::new();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut bufs = vec![[0u8; SLOT]; BATCH];
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: SLOT,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero mmsghdr is a valid empty header (no name, no control).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // Control space per message for one SCM_TIMESTAMPNS (u64s keep it aligned).
        let mut ctrl = vec![[0u64; CTRL / 8]; BATCH];
        let mut work = BytesMut::with_capacity(srtp::BUFFER);
        let mut swept = Instant::now();
        let offset = realtime_minus_now_ns();
        let mut busy = false;
        loop {
            if busy && read_every > Duration::ZERO {
                // Busy: read on a cadence rather than be woken per arrival (see READ_EVERY).
                std::thread::sleep(read_every);
            }
            // SAFETY: `events` has EVENTS entries.
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), EVENTS as i32, 100) };
            busy = n > 0;
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!(
                    "light reader: epoll_wait: {}",
                    std::io::Error::last_os_error()
                );
                return;
            }
            for e in &events[..n as usize] {
                let data = e.u64;
                if data == WAKE {
                    let mut b = [0u8; 8];
                    // SAFETY: reads 8 bytes into a live buffer (resets the eventfd).
                    unsafe { libc::read(wake, b.as_mut_ptr().cast(), 8) };
                    while let Ok(r) = rx.try_recv() {
                        let at = regs.iter().position(Option::is_none).unwrap_or_else(|| {
                            regs.push(None);
                            regs.len() - 1
                        });
                        let on: libc::c_int = 1;
                        // SAFETY: sets an int option from a live value. Failing, packets
                        // simply come without a kernel timestamp.
                        unsafe {
                            libc::setsockopt(
                                r.sock.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_TIMESTAMPNS,
                                (&on as *const libc::c_int).cast(),
                                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                            )
                        };
                        if let Err(e) = add(ep, r.sock.as_raw_fd(), at as u64) {
                            eprintln!("light reader: {e}");
                            continue;
                        }
                        regs[at] = Some(r);
                    }
                    continue;
                }
                let Some(Some(r)) = regs.get_mut(data as usize) else {
                    continue;
                };
                loop {
                    for (m, c) in msgs.iter_mut().zip(ctrl.iter_mut()) {
                        m.msg_hdr.msg_control = c.as_mut_ptr().cast();
                        m.msg_hdr.msg_controllen = CTRL as _;
                    }
                    // SAFETY: `msgs` points at BATCH live iovecs over `bufs` and BATCH live
                    // control buffers of CTRL bytes.
                    let k = unsafe {
                        libc::recvmmsg(
                            r.sock.as_raw_fd(),
                            msgs.as_mut_ptr(),
                            BATCH as u32,
                            libc::MSG_DONTWAIT,
                            std::ptr::null_mut(),
                        )
                    };
                    if k <= 0 {
                        break;
                    }
                    for (m, b) in msgs.iter().zip(&bufs).take(k as usize) {
                        let queued = queued_ns(&m.msg_hdr).map(|t| t.saturating_sub(offset));
                        packet(r, &b[..m.msg_len as usize], &mut work, queued);
                    }
                    if (k as usize) < BATCH {
                        break;
                    }
                }
            }
            if swept.elapsed() > Duration::from_millis(100) {
                swept = Instant::now();
                for slot in regs.iter_mut() {
                    if slot
                        .as_ref()
                        .is_some_and(|r| r.closed.load(Ordering::Relaxed))
                        && let Some(r) = slot.take()
                    {
                        // SAFETY: removes a descriptor we added; the socket closes on drop.
                        unsafe {
                            libc::epoll_ctl(
                                ep,
                                libc::EPOLL_CTL_DEL,
                                r.sock.as_raw_fd(),
                                std::ptr::null_mut(),
                            )
                        };
                    }
                }
            }
        }
    }

    /// One datagram: RTP is decrypted and timed; anything else (consent answers, RTCP) is not
    /// read.
    fn packet(r: &mut Registration, data: &[u8], work: &mut BytesMut, queued: Option<u64>) {
        receive_rtp(&mut r.rtp, &r.stats, &r.window, data, work, queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "AB:CD:EF";

    fn local() -> Local<'static> {
        Local {
            ufrag: "abcdefgh",
            pwd: "0123456789012345678901234",
            fingerprint: FP,
            session: 42,
            version: 1,
        }
    }

    fn receiving(kind: &'static str, mid: &str, codec: (u8, &str)) -> Offered {
        Offered {
            kind,
            mid: mid.into(),
            codec: Some((codec.0, codec.1.into())),
            direction: Direction::Receive,
        }
    }

    #[test]
    fn the_plane_reads_a_light_subscribers_offer_as_receive_only() {
        let sdp = describe(
            &local(),
            &[
                receiving("audio", "0", (111, "opus/48000/2")),
                receiving("video", "1", (96, "VP8/90000")),
            ],
            "actpass",
        );
        let offer = sdp::parse_offer(&sdp).unwrap();
        assert_eq!(offer.fingerprint, FP);
        let got: Vec<_> = offer
            .media
            .iter()
            .map(|m| {
                (
                    m.kind.as_str(),
                    m.mid.as_str(),
                    m.codecs[0].1.as_str(),
                    m.client_sends,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("audio", "0", "opus/48000/2", false),
                ("video", "1", "VP8/90000", false)
            ]
        );
        assert!(sdp.contains("a=group:BUNDLE 0 1\r\n"));
        assert!(sdp.contains("a=ice-ufrag:abcdefgh\r\n"));
    }

    #[test]
    fn a_light_publisher_offers_one_send_only_opus_section_with_its_ssrc() {
        let sdp = describe(
            &local(),
            &[Offered {
                direction: Direction::Send(77),
                ..receiving("audio", "0", (111, "opus/48000/2"))
            }],
            "actpass",
        );
        let offer = sdp::parse_offer(&sdp).unwrap();
        assert!(offer.media[0].client_sends);
        assert!(sdp.contains("a=ssrc:77 cname:light-77\r\n"));
    }

    /// A server offer as the plane writes one: the client's published section, a track the
    /// server sends, one it stopped, one whose codec the client does not take.
    const SERVER_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
        a=group:BUNDLE 0 1 3\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=ice-ufrag:srvufrag\r\na=ice-pwd:srvpassword0123456789012\r\n\
        a=fingerprint:sha-256 11:22:33\r\na=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtpmap:109 opus/48000/2\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=mid:1\r\na=sendonly\r\na=rtpmap:98 VP8/90000\r\n\
        m=audio 0 UDP/TLS/RTP/SAVPF 109\r\na=mid:2\r\na=inactive\r\na=rtpmap:109 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:3\r\na=sendonly\r\na=rtpmap:102 H264/90000\r\n";

    #[test]
    fn a_server_offer_is_answered_in_kind_and_its_transport_is_read() {
        let offer = sdp::parse_offer(SERVER_OFFER).unwrap();
        let answer = answer_sections(&offer, Some(5));
        let got: Vec<_> = answer
            .iter()
            .map(|m| (m.mid.as_str(), m.codec.as_ref().map(|c| c.0), m.direction))
            .collect();
        assert_eq!(
            got,
            [
                ("0", Some(109), Direction::Send(5)),
                ("1", Some(98), Direction::Receive),
                ("2", None, Direction::Inactive),
                ("3", None, Direction::Receive),
            ]
        );
        let sdp = describe(&local(), &answer, "active");
        assert!(sdp.contains("a=group:BUNDLE 0 1\r\n"), "{sdp}");
        assert!(sdp.contains("m=audio 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n"));
        // What the plane reads back of our answer.
        let back = sdp::parse_offer(&sdp).unwrap();
        assert_eq!(back.media.len(), 4);
        assert!(back.media[2].rejected && back.media[3].rejected);
        assert!(back.media[0].client_sends && !back.media[1].client_sends);

        let mut r = Remote::default();
        r.read(SERVER_OFFER);
        assert_eq!(r.ufrag, "srvufrag");
        assert_eq!(r.pwd, "srvpassword0123456789012");
        assert_eq!(r.fingerprint, "11:22:33");
        assert_eq!(r.addr, Some("127.0.0.1:40000".parse().unwrap()));
        // A trickled candidate does not replace the first one; a TCP one is not taken.
        r.candidate("candidate:2 1 udp 1 127.0.0.1 40001 typ host");
        assert_eq!(r.addr.unwrap().port(), 40000);
        let mut t = Remote::default();
        t.candidate("candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active");
        assert_eq!(t.addr, None);
    }
}
