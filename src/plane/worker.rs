//! One engine on its own thread, and forwarding inside that thread.
//!
//! The owner (a participant's task, a room) talks to the worker only through commands on a
//! bounded queue; an eventfd wakes the loop so a command is seen at once, not at the next
//! timer. Transports are named by keys the owner picks ([`Worker::key`]), so no command waits
//! for a reply. A published stream (a transport and an SSRC it sends) has legs: transports
//! and SSRCs it is forwarded to. A packet from a publisher goes to every leg in the same pass
//! of the loop that read it, without a channel or a task per leg; a subscriber's PLI or FIR
//! becomes one PLI to the publisher (at most one per [`KEYFRAME_INTERVAL`]), and a new video
//! leg waits for a keyframe. A video stream keeps its last packets ([`History`]), so a
//! subscriber's NACK is answered by the plane, to that subscriber only, within a budget per leg
//! ([`RETRANSMIT_PER_SECOND`]). Every published stream gets a receiver report each second, and
//! a video stream a REMB with the plane's ceiling ([`feedback`]). Whatever is dropped (a full event or tap queue, a packet for a
//! stream nobody published) is counted in [`WorkerStats`].

use super::engine::{Engine, TransportId};
use super::feedback::{self, ReceiveStats};
use super::history::History;
use super::srtp;
use super::transport::{Transport, TransportEvent};
use crate::room::keyframe::VideoCodec;
use bytes::{Bytes, BytesMut};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::shared::marshal::Marshal;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Commands queued for a worker before [`Worker::send`] refuses more.
pub const COMMAND_QUEUE: usize = 4096;
/// How often the loop runs the transports' timers (DTLS retransmits, consent).
pub const TIMER_TICK: Duration = Duration::from_millis(5);
/// Keyframe requests relayed to one publisher at most this often.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// Retransmissions a leg gets at most per second (a NACK flood costs the plane this much and
/// no more; 1.5 Mbit/s video is about 130 packets a second).
pub const RETRANSMIT_PER_SECOND: u32 = 200;
/// The SSRC the plane's own RTCP (reports, REMB, PLI) goes out under.
pub const PLANE_SSRC: u32 = 1;
/// Socket buffer size asked for, each way.
pub const SOCKET_BUFFER: libc::c_int = 4 << 20;
/// Unpublished SSRCs reported per transport (more are only counted).
pub const UNKNOWN_REPORTED: usize = 16;

/// A transport's name, chosen by the owner.
pub type Key = u64;

/// What a worker tells a transport's owner.
#[derive(Debug)]
pub enum Event {
    /// DTLS completed; media flows.
    Connected,
    /// The transport is gone for good (consent expired, DTLS failed).
    Failed(String),
    /// RTP arrived with an SSRC nobody published (reported once per SSRC).
    UnknownStream {
        /// The SSRC.
        ssrc: u32,
        /// Its payload type.
        payload_type: u8,
    },
    /// A decrypted RTCP compound packet from the client.
    Rtcp(BytesMut),
}

/// What the owner asks of a worker.
pub enum Command {
    /// Adds a transport; its events go to `events`.
    Add {
        /// Its name.
        key: Key,
        /// The transport (made with [`Worker::local_addr`]).
        transport: Box<Transport>,
        /// Where its events go (full: dropped and counted).
        events: mpsc::Sender<Event>,
    },
    /// Adds a local source: streams fed by [`Command::Inject`] from inside the process (an
    /// agent's voice), published and subscribed like a transport's. Removed with `Remove`.
    AddLocal {
        /// Its name.
        key: Key,
    },
    /// One RTP packet (serialised, unencrypted) from a local source, forwarded to the legs of
    /// the stream its SSRC names.
    Inject {
        /// The local source.
        key: Key,
        /// The packet.
        packet: BytesMut,
    },
    /// Removes a transport, what it published and its legs.
    Remove {
        /// Its name.
        key: Key,
    },
    /// RTP from `key` with `ssrc` is a published stream.
    Publish {
        /// The publisher's transport.
        key: Key,
        /// The stream's SSRC.
        ssrc: u32,
        /// Its video codec (keyframe gating for new legs), or `None` for audio.
        video: Option<VideoCodec>,
        /// Every packet, decrypted, for the room's own use (transcription, recording); full:
        /// dropped and counted, forwarding goes on.
        tap: Option<mpsc::Sender<Tapped>>,
    },
    /// Stops forwarding a stream, and drops its legs.
    Unpublish {
        /// The publisher's transport.
        key: Key,
        /// The stream's SSRC.
        ssrc: u32,
    },
    /// Forwards a stream to a transport as `ssrc` with `payload_type`.
    Subscribe {
        /// The publisher's transport.
        from: Key,
        /// The published SSRC.
        source_ssrc: u32,
        /// The subscriber's transport.
        to: Key,
        /// The SSRC the subscriber sees.
        ssrc: u32,
        /// The payload type the subscriber negotiated.
        payload_type: u8,
    },
    /// Stops the leg that sends `ssrc` to `to`.
    Unsubscribe {
        /// The subscriber's transport.
        to: Key,
        /// The SSRC it saw.
        ssrc: u32,
    },
    /// Sends an RTCP compound packet to a client.
    Rtcp {
        /// The client's transport.
        to: Key,
        /// The packet, serialised.
        packet: Bytes,
    },
}

/// The longest packet a tap carries (an MTU; Opus packets are at most 1,275 bytes of payload).
pub const TAP_MAX: usize = 1500;

/// One packet for a tap, by value: the worker copies it into the queue's own slot, so the
/// forwarding thread allocates nothing for it (the queue's blocks are reused once it has
/// warmed up). Whoever reads it copies it out.
pub struct Tapped {
    len: u16,
    data: [u8; TAP_MAX],
}

impl Tapped {
    /// The packet, or `None` if it is longer than [`TAP_MAX`].
    pub fn new(packet: &[u8]) -> Option<Tapped> {
        let mut t = Tapped {
            len: u16::try_from(packet.len()).ok()?,
            data: [0; TAP_MAX],
        };
        t.data.get_mut(..packet.len())?.copy_from_slice(packet);
        Some(t)
    }

    /// The RTP packet (header and payload, decrypted).
    pub fn packet(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// Counters a worker keeps (read at any time, from any thread).
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Packets sent to legs.
    pub forwarded: AtomicU64,
    /// Packets for a leg whose transport was not connected yet; dropped.
    pub leg_not_ready: AtomicU64,
    /// Packets held back from a new video leg until a keyframe.
    pub awaiting_keyframe: AtomicU64,
    /// RTP with an SSRC nobody published; dropped.
    pub unknown_stream: AtomicU64,
    /// Packets a full tap queue refused; dropped (forwarding went on).
    pub tap_dropped: AtomicU64,
    /// Events a full owner queue refused; dropped.
    pub events_dropped: AtomicU64,
    /// Keyframe requests relayed to publishers.
    pub keyframe_requests: AtomicU64,
    /// Packets sent again to a subscriber that NACKed them.
    pub retransmitted: AtomicU64,
    /// NACKed packets not sent again: no longer kept, never seen, or over the leg's budget.
    pub nack_missed: AtomicU64,
    /// Receiver reports (with a REMB for video) sent to publishers.
    pub reports_sent: AtomicU64,
    /// Commands naming a transport or stream the worker does not have; ignored.
    pub stale_commands: AtomicU64,
    /// Datagrams read from the socket.
    pub received: AtomicU64,
    /// Datagrams no transport claimed.
    pub unrouted: AtomicU64,
    /// Datagrams handed to the kernel.
    pub sent: AtomicU64,
    /// Datagrams the kernel refused.
    pub send_failed: AtomicU64,
    /// `sendmmsg` calls.
    pub batches: AtomicU64,
    /// SRTP/SRTCP packets refused (authentication, replay, malformed); dropped.
    pub srtp_refused: AtomicU64,
    /// Packet buffers allocated because the pool had none free.
    pub buffers_allocated: AtomicU64,
}

/// Why a command was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkerError {
    /// The queue is full: the worker is behind.
    #[error("the media worker's command queue is full")]
    Full,
    /// The worker's thread has ended.
    #[error("the media worker has stopped")]
    Stopped,
}

/// A running worker: dropping it stops the thread and waits for it.
pub struct Worker {
    commands: Option<SyncSender<Command>>,
    wake: Arc<OwnedFd>,
    addr: SocketAddr,
    stats: Arc<WorkerStats>,
    next_key: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Binds `addr` and starts the worker's thread.
    pub fn start(addr: SocketAddr) -> std::io::Result<Worker> {
        let engine = Engine::bind(addr)?;
        let addr = engine.local_addr();
        // Room for bursts (a keyframe to many legs): the kernel caps this at its rmem_max and
        // wmem_max.
        let size: libc::c_int = SOCKET_BUFFER;
        for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // SAFETY: sets an int socket option on the engine's socket.
            unsafe {
                libc::setsockopt(
                    engine.raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &size as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
        let stats = Arc::new(WorkerStats::default());
        let mut lp = Loop {
            engine,
            commands: rx,
            wake: wake.clone(),
            stats: stats.clone(),
            keys: HashMap::new(),
            owners: Vec::new(),
            sources: HashMap::new(),
            legs: HashMap::new(),
            inbound: Vec::new(),
            next_local: usize::MAX,
            next_feedback: Instant::now() + feedback::INTERVAL,
        };
        let thread = std::thread::Builder::new()
            .name(format!("media-{}", addr.port()))
            .spawn(move || lp.run())?;
        Ok(Worker {
            commands: Some(tx),
            wake,
            addr,
            stats,
            next_key: AtomicU64::new(1),
            thread: Some(thread),
        })
    }

    /// The worker's socket address: every transport's host candidate.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A key no other transport of this worker has.
    pub fn key(&self) -> Key {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Queues a command and wakes the loop; never blocks.
    pub fn send(&self, command: Command) -> Result<(), WorkerError> {
        let tx = self.commands.as_ref().ok_or(WorkerError::Stopped)?;
        tx.try_send(command).map_err(|e| match e {
            TrySendError::Full(_) => WorkerError::Full,
            TrySendError::Disconnected(_) => WorkerError::Stopped,
        })?;
        wake(&self.wake);
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A closed queue is the loop's signal to end.
        self.commands = None;
        wake(&self.wake);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wake(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd; a full counter only fails.
    unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
}

fn drain_wake(fd: &OwnedFd) {
    let mut n: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64 from a non-blocking eventfd.
    unsafe { libc::read(fd.as_raw_fd(), &mut n as *mut u64 as *mut libc::c_void, 8) };
}

struct Owner {
    key: Key,
    events: mpsc::Sender<Event>,
    reported: Vec<u32>,
}

struct Leg {
    to: TransportId,
    ssrc: u32,
    payload_type: u8,
    waiting_for_keyframe: bool,
    /// Retransmissions in the second that began at `resent_since`.
    resent: u32,
    resent_since: Option<Instant>,
}

impl Leg {
    /// Whether one more retransmission fits this second's budget (and counts it).
    fn may_resend(&mut self, now: Instant) -> bool {
        if self
            .resent_since
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.resent_since = Some(now);
            self.resent = 0;
        }
        self.resent += 1;
        self.resent <= RETRANSMIT_PER_SECOND
    }
}

/// The header a leg gets for `packet`, written into `out`: the fixed part and CSRCs, without
/// the extensions (they were negotiated with the publisher, not with each subscriber). Returns
/// its length; [`for_leg`] then sets the leg's payload type and SSRC.
fn leg_header(packet: &[u8], out: &mut [u8; 12 + 4 * 15]) -> usize {
    let csrc_end = 12 + 4 * usize::from(packet[0] & 0x0f);
    out[..csrc_end].copy_from_slice(&packet[..csrc_end]);
    out[0] &= !0x10;
    csrc_end
}

fn for_leg(header: &mut [u8], marker_pt: u8, leg: &Leg) {
    header[1] = (marker_pt & 0x80) | (leg.payload_type & 0x7f);
    header[8..12].copy_from_slice(&leg.ssrc.to_be_bytes());
}

struct Source {
    video: Option<VideoCodec>,
    tap: Option<mpsc::Sender<Tapped>>,
    legs: Vec<Leg>,
    last_keyframe_request: Option<Instant>,
    /// Video only: recent packets, for NACKs.
    history: Option<History>,
    /// What the publisher is told in its receiver reports.
    received: ReceiveStats,
}

struct Loop {
    engine: Engine,
    commands: Receiver<Command>,
    wake: Arc<OwnedFd>,
    stats: Arc<WorkerStats>,
    keys: HashMap<Key, TransportId>,
    owners: Vec<Option<Owner>>,
    /// Published streams by (publisher, SSRC).
    sources: HashMap<(TransportId, u32), Source>,
    /// Legs by (subscriber, SSRC it sees) → their stream.
    legs: HashMap<(TransportId, u32), (TransportId, u32)>,
    inbound: Vec<(TransportId, TransportEvent)>,
    /// Ids of local sources count down from the top, where the engine has no transports (so
    /// whatever the loop would send them, a keyframe request, is refused, not misrouted).
    next_local: TransportId,
    next_feedback: Instant,
}

impl Loop {
    fn run(&mut self) {
        let mut next_timer = Instant::now();
        loop {
            drain_wake(&self.wake);
            let now = Instant::now();
            loop {
                match self.commands.try_recv() {
                    Ok(c) => self.apply(c, now),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if now >= next_timer {
                let inbound = &mut self.inbound;
                self.engine
                    .handle_timeouts(now, |id, ev| inbound.push((id, ev)));
                next_timer = now + TIMER_TICK;
            }
            if now >= self.next_feedback {
                self.send_feedback(now);
                self.next_feedback = now + feedback::INTERVAL;
            }
            let inbound = &mut self.inbound;
            let got = self.engine.receive(now, |id, ev| inbound.push((id, ev)));
            let mut events = std::mem::take(&mut self.inbound);
            for (id, ev) in events.drain(..) {
                self.on_event(id, ev, now);
            }
            self.inbound = events;
            self.engine.flush();
            self.publish_stats();
            if got == 0 {
                self.engine.wait_with(
                    Some(self.wake.as_raw_fd()),
                    next_timer.saturating_duration_since(Instant::now()),
                );
            }
        }
    }

    fn publish_stats(&self) {
        let e = self.engine.stats();
        self.stats.received.store(e.received, Ordering::Relaxed);
        self.stats.unrouted.store(e.unrouted, Ordering::Relaxed);
        self.stats.sent.store(e.sent, Ordering::Relaxed);
        self.stats
            .send_failed
            .store(e.send_failed, Ordering::Relaxed);
        self.stats.batches.store(e.batches, Ordering::Relaxed);
        self.stats
            .srtp_refused
            .store(e.srtp_refused, Ordering::Relaxed);
        self.stats
            .buffers_allocated
            .store(e.buffers_allocated, Ordering::Relaxed);
    }

    fn id(&self, key: Key) -> Option<TransportId> {
        let id = self.keys.get(&key).copied();
        if id.is_none() {
            self.stats.stale_commands.fetch_add(1, Ordering::Relaxed);
        }
        id
    }

    fn apply(&mut self, c: Command, now: Instant) {
        match c {
            Command::Add {
                key,
                transport,
                events,
            } => {
                if let Some(old) = self.keys.get(&key).copied() {
                    self.remove(old);
                }
                let id = self.engine.insert(*transport);
                if self.owners.len() <= id {
                    self.owners.resize_with(id + 1, || None);
                }
                self.owners[id] = Some(Owner {
                    key,
                    events,
                    reported: Vec::new(),
                });
                self.keys.insert(key, id);
            }
            Command::AddLocal { key } => {
                if let Some(old) = self.keys.get(&key).copied() {
                    self.remove(old);
                }
                let id = self.next_local;
                self.next_local -= 1;
                self.keys.insert(key, id);
            }
            Command::Inject { key, packet } => {
                if let Some(id) = self.id(key) {
                    self.forward(id, packet, now);
                }
            }
            Command::Remove { key } => {
                if let Some(id) = self.id(key) {
                    self.remove(id);
                    self.keys.remove(&key);
                }
            }
            Command::Publish {
                key,
                ssrc,
                video,
                tap,
            } => {
                if let Some(id) = self.id(key) {
                    self.sources.entry((id, ssrc)).or_insert_with(|| Source {
                        video,
                        tap,
                        legs: Vec::new(),
                        last_keyframe_request: None,
                        history: video.map(|_| History::default()),
                        received: ReceiveStats::new(
                            if video.is_some() { 90_000 } else { 48_000 },
                            now,
                        ),
                    });
                }
            }
            Command::Unpublish { key, ssrc } => {
                if let Some(id) = self.id(key)
                    && let Some(s) = self.sources.remove(&(id, ssrc))
                {
                    for l in s.legs {
                        self.legs.remove(&(l.to, l.ssrc));
                    }
                }
            }
            Command::Subscribe {
                from,
                source_ssrc,
                to,
                ssrc,
                payload_type,
            } => {
                let (Some(from), Some(to)) = (self.id(from), self.id(to)) else {
                    return;
                };
                let Some(source) = self.sources.get_mut(&(from, source_ssrc)) else {
                    self.stats.stale_commands.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let video = source.video.is_some();
                source.legs.push(Leg {
                    to,
                    ssrc,
                    payload_type,
                    waiting_for_keyframe: video,
                    resent: 0,
                    resent_since: None,
                });
                self.legs.insert((to, ssrc), (from, source_ssrc));
                if video {
                    self.request_keyframe(from, source_ssrc, now);
                }
            }
            Command::Unsubscribe { to, ssrc } => {
                if let Some(to) = self.id(to)
                    && let Some(src) = self.legs.remove(&(to, ssrc))
                    && let Some(s) = self.sources.get_mut(&src)
                {
                    s.legs.retain(|l| !(l.to == to && l.ssrc == ssrc));
                }
            }
            Command::Rtcp { to, packet } => {
                if let Some(id) = self.id(to) {
                    let _ = self.engine.send_rtcp(id, &packet);
                }
            }
        }
    }

    fn remove(&mut self, id: TransportId) {
        self.engine.remove(id);
        if let Some(o) = self.owners.get_mut(id).and_then(Option::take) {
            self.keys.remove(&o.key);
        }
        let legs = &mut self.legs;
        self.sources.retain(|(from, _), s| {
            if *from == id {
                for l in &s.legs {
                    legs.remove(&(l.to, l.ssrc));
                }
                return false;
            }
            s.legs.retain(|l| l.to != id);
            true
        });
        self.legs.retain(|(to, _), _| *to != id);
    }

    fn tell(&self, id: TransportId, ev: Event) {
        if let Some(Some(o)) = self.owners.get(id)
            && o.events.try_send(ev).is_err()
        {
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_event(&mut self, id: TransportId, ev: TransportEvent, now: Instant) {
        match ev {
            TransportEvent::Connected => self.tell(id, Event::Connected),
            TransportEvent::Failed(why) => self.tell(id, Event::Failed(why)),
            TransportEvent::Rtp(p) => self.forward(id, p, now),
            TransportEvent::Rtcp(p) => {
                self.feedback_in(id, &p, now);
                self.tell(id, Event::Rtcp(p));
            }
        }
    }

    fn forward(&mut self, id: TransportId, p: BytesMut, now: Instant) {
        self.forward_packet(id, &p, now);
        self.engine.recycle(p);
    }

    fn forward_packet(&mut self, id: TransportId, p: &[u8], now: Instant) {
        let Some(header_len) = srtp::header_len(p) else {
            return;
        };
        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        let Some(source) = self.sources.get_mut(&(id, ssrc)) else {
            self.stats.unknown_stream.fetch_add(1, Ordering::Relaxed);
            if let Some(Some(o)) = self.owners.get_mut(id)
                && o.reported.len() < UNKNOWN_REPORTED
                && !o.reported.contains(&ssrc)
            {
                o.reported.push(ssrc);
                let ev = Event::UnknownStream {
                    ssrc,
                    payload_type: p[1] & 0x7f,
                };
                if o.events.try_send(ev).is_err() {
                    self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        };
        let payload = &p[header_len..];
        let mut out = [0u8; 12 + 4 * 15];
        let n = leg_header(p, &mut out);
        let out = &mut out[..n];
        let seq = u16::from_be_bytes([p[2], p[3]]);
        source
            .received
            .on_packet(seq, u32::from_be_bytes([p[4], p[5], p[6], p[7]]), now);
        if let Some(h) = &mut source.history {
            h.store(seq, p);
        }
        let keyframe = source
            .video
            .is_some_and(|codec| codec.starts_keyframe(payload));
        let mut forwarded = 0;
        for leg in &mut source.legs {
            if leg.waiting_for_keyframe {
                if !keyframe {
                    self.stats.awaiting_keyframe.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                leg.waiting_for_keyframe = false;
            }
            for_leg(out, p[1], leg);
            if self.engine.send_rtp(leg.to, out, payload).is_ok() {
                forwarded += 1;
            } else {
                self.stats.leg_not_ready.fetch_add(1, Ordering::Relaxed);
                if source.video.is_some() {
                    // It would join mid-picture: start it at a keyframe when it is up.
                    leg.waiting_for_keyframe = true;
                }
            }
        }
        // One shared counter update per packet, not per leg.
        self.stats.forwarded.fetch_add(forwarded, Ordering::Relaxed);
        let waiting = source.legs.iter().any(|l| l.waiting_for_keyframe);
        // The room's copy, by value into the queue (no allocation here); the buffer itself goes
        // back to the pool.
        if let Some(tap) = &source.tap
            && Tapped::new(p).is_none_or(|t| tap.try_send(t).is_err())
        {
            self.stats.tap_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if waiting {
            // The first request may have been lost, or sent before the publisher was up.
            self.request_keyframe(id, ssrc, now);
        }
    }

    /// Feedback from a subscriber about a leg it receives: PLI and FIR become a PLI to the
    /// leg's publisher; a NACK is answered from the stream's history.
    fn feedback_in(&mut self, id: TransportId, p: &[u8], now: Instant) {
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &p[..]) else {
            return;
        };
        let mut wanted: Vec<(TransportId, u32)> = Vec::new();
        for packet in &packets {
            let any = packet.as_any();
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                self.retransmit(id, nack, now);
                continue;
            }
            if let Some(sr) = any.downcast_ref::<SenderReport>() {
                if let Some(s) = self.sources.get_mut(&(id, sr.ssrc)) {
                    s.received.on_sender_report(sr.ntp_time, now);
                }
                continue;
            }
            let ssrcs: Vec<u32> = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                vec![pli.media_ssrc]
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                fir.fir.iter().map(|e| e.ssrc).collect()
            } else {
                continue;
            };
            for ssrc in ssrcs {
                if let Some(src) = self.legs.get(&(id, ssrc))
                    && !wanted.contains(src)
                {
                    wanted.push(*src);
                }
            }
        }
        for (from, ssrc) in wanted {
            self.request_keyframe(from, ssrc, now);
        }
    }

    /// A receiver report for every published stream that has sent anything, with a REMB for
    /// video, to its publisher.
    fn send_feedback(&mut self, now: Instant) {
        for (&(from, ssrc), source) in &mut self.sources {
            if !source.received.started() {
                continue;
            }
            let r = source.received.report(now);
            let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(ReceiverReport {
                ssrc: PLANE_SSRC,
                reports: vec![ReceptionReport {
                    ssrc,
                    fraction_lost: r.fraction_lost,
                    total_lost: r.total_lost,
                    last_sequence_number: r.highest,
                    jitter: r.jitter,
                    last_sender_report: r.last_sr,
                    delay: r.delay_since_sr,
                }],
                profile_extensions: Bytes::new(),
            })];
            if source.video.is_some() {
                packets.push(Box::new(ReceiverEstimatedMaximumBitrate {
                    sender_ssrc: PLANE_SSRC,
                    bitrate: feedback::VIDEO_BITRATE_MAX,
                    ssrcs: vec![ssrc],
                }));
            }
            // A local source (no transport) refuses it; nothing is sent.
            if let Ok(raw) = rtc::rtcp::packet::marshal(&packets)
                && self.engine.send_rtcp(from, &raw).is_ok()
            {
                self.stats.reports_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends the packets `nack` names again to the subscriber `id`, as its leg had them.
    fn retransmit(&mut self, id: TransportId, nack: &TransportLayerNack, now: Instant) {
        let lost = nack.nacks.iter().flat_map(|pair| pair.into_iter());
        // The leg this subscriber NACKs, and its stream's history (video only).
        let found = self
            .legs
            .get(&(id, nack.media_ssrc))
            .and_then(|src| self.sources.get_mut(src))
            .and_then(|s| {
                let history = s.history.as_ref()?;
                let leg = s
                    .legs
                    .iter_mut()
                    .find(|l| l.to == id && l.ssrc == nack.media_ssrc)?;
                Some((history, leg))
            });
        let (mut resent, mut missed) = (0, 0);
        match found {
            None => missed = lost.count() as u64,
            Some((history, leg)) => {
                for seq in lost {
                    // Stored packets passed `header_len` when they were forwarded.
                    let Some((p, header_len)) = history
                        .get(seq)
                        .filter(|_| leg.may_resend(now))
                        .and_then(|p| Some((p, srtp::header_len(p)?)))
                    else {
                        missed += 1;
                        continue;
                    };
                    let mut out = [0u8; 12 + 4 * 15];
                    let n = leg_header(p, &mut out);
                    for_leg(&mut out[..n], p[1], leg);
                    match self.engine.send_rtp(id, &out[..n], &p[header_len..]) {
                        Ok(()) => resent += 1,
                        Err(_) => missed += 1,
                    }
                }
            }
        }
        self.stats
            .retransmitted
            .fetch_add(resent, Ordering::Relaxed);
        self.stats.nack_missed.fetch_add(missed, Ordering::Relaxed);
    }

    fn request_keyframe(&mut self, from: TransportId, ssrc: u32, now: Instant) {
        let Some(s) = self.sources.get_mut(&(from, ssrc)) else {
            return;
        };
        if s.last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_INTERVAL)
        {
            return;
        }
        let pli = PictureLossIndication {
            sender_ssrc: PLANE_SSRC,
            media_ssrc: ssrc,
        };
        if let Ok(raw) = pli.marshal()
            && self.engine.send_rtcp(from, &raw).is_ok()
        {
            s.last_keyframe_request = Some(now);
            self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tapped_packet_keeps_its_bytes_and_one_too_long_for_a_slot_is_refused() {
        let p: Vec<u8> = (0..200u8).collect();
        assert_eq!(Tapped::new(&p).unwrap().packet(), &p[..]);
        assert_eq!(Tapped::new(&[7; TAP_MAX]).unwrap().packet().len(), TAP_MAX);
        // Refused, so the caller counts it as dropped (`tap_dropped`).
        assert!(Tapped::new(&[7; TAP_MAX + 1]).is_none());
    }

    #[test]
    fn a_leg_gets_at_most_its_budget_of_retransmissions_a_second() {
        let mut leg = Leg {
            to: 0,
            ssrc: 1,
            payload_type: 96,
            waiting_for_keyframe: false,
            resent: 0,
            resent_since: None,
        };
        let t0 = Instant::now();
        let granted = (0..1000).filter(|_| leg.may_resend(t0)).count();
        assert_eq!(
            granted, RETRANSMIT_PER_SECOND as usize,
            "a NACK flood is cut off"
        );
        let later = t0 + Duration::from_millis(999);
        assert!(!leg.may_resend(later), "still the same second");
        assert!(
            leg.may_resend(t0 + Duration::from_secs(1)),
            "a new second, a new budget"
        );
    }
}
