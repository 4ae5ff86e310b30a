//! One event loop's worth of transports behind one UDP socket.
//!
//! Datagrams are routed by source address; a source not seen before is routed by the ufrag in
//! its STUN USERNAME (a connectivity check is the only thing an unknown address may send), and
//! the address is bound to that transport once the transport has validated it. Everything the
//! transports queue goes out in `sendmmsg` batches on [`Engine::flush`]. Nothing here blocks
//! except [`Engine::wait`], and nothing takes a lock: an engine belongs to one thread.

use super::srtp::Pool;
use super::transport::{Transport, TransportEvent};
use bytes::BytesMut;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::Message;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Datagrams per `sendmmsg`.
pub const BATCH: usize = 64;
/// Addresses bound per transport at most (a client's candidates); checks from more are refused.
pub const ADDRS_PER_TRANSPORT: usize = 8;

/// A transport's handle in its engine.
pub type TransportId = usize;

/// Counters an engine keeps (read by the owner for `/metrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Datagrams read.
    pub received: u64,
    /// Datagrams dropped: no transport for their address or ufrag.
    pub unrouted: u64,
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Datagrams the kernel refused (full buffer, unreachable); dropped.
    pub send_failed: u64,
    /// `sendmmsg` calls.
    pub batches: u64,
    /// SRTP/SRTCP packets refused (authentication, replay, malformed); dropped.
    pub srtp_refused: u64,
    /// Packet buffers allocated because the pool had none free (grows while the engine warms
    /// up, then stays flat; a steady climb means buffers are kept somewhere).
    pub buffers_allocated: u64,
}

struct Slot {
    transport: Transport,
    addrs: Vec<SocketAddr>,
    dirty: bool,
}

/// Transports sharing one socket.
pub struct Engine {
    socket: UdpSocket,
    local: SocketAddr,
    slots: Vec<Option<Slot>>,
    free: Vec<TransportId>,
    by_addr: HashMap<SocketAddr, TransportId>,
    by_ufrag: HashMap<String, TransportId>,
    dirty: Vec<TransportId>,
    out: Vec<(SocketAddr, BytesMut)>,
    pool: Pool,
    stats: EngineStats,
    buf: Box<[u8; 2048]>,
}

impl Engine {
    /// Binds the engine's socket (an explicit address: a wildcard would leave loopback out of
    /// the candidates a client can reach).
    pub fn bind(addr: SocketAddr) -> std::io::Result<Engine> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        Ok(Engine {
            socket,
            local,
            slots: Vec::new(),
            free: Vec::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            dirty: Vec::new(),
            out: Vec::with_capacity(BATCH),
            pool: Pool::default(),
            stats: EngineStats::default(),
            buf: Box::new([0u8; 2048]),
        })
    }

    /// The socket's address: every transport's host candidate.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket's descriptor (for socket options the owner sets, e.g. buffer sizes).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            buffers_allocated: self.pool.allocated,
            ..self.stats
        }
    }

    /// Gives back a buffer an [`TransportEvent::Rtp`] carried, once it has been read.
    pub fn recycle(&mut self, buf: BytesMut) {
        self.pool.give(buf);
    }

    /// Adds a transport (made with [`Engine::local_addr`]).
    pub fn insert(&mut self, transport: Transport) -> TransportId {
        let ufrag = transport.local_ufrag().to_owned();
        let slot = Slot {
            transport,
            addrs: Vec::new(),
            dirty: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.by_ufrag.insert(ufrag, id);
        id
    }

    /// Removes a transport; its addresses stop routing.
    pub fn remove(&mut self, id: TransportId) -> Option<Transport> {
        let slot = self.slots.get_mut(id)?.take()?;
        for a in &slot.addrs {
            self.by_addr.remove(a);
        }
        self.by_ufrag.remove(slot.transport.local_ufrag());
        self.free.push(id);
        Some(slot.transport)
    }

    /// The transport, to read its state.
    pub fn transport(&self, id: TransportId) -> Option<&Transport> {
        self.slots.get(id)?.as_ref().map(|s| &s.transport)
    }

    /// Transports in the engine.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether the engine has no transports.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn touch(&mut self, id: TransportId) {
        if let Some(Some(slot)) = self.slots.get_mut(id)
            && !slot.dirty
        {
            slot.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Reads every datagram waiting on the socket, feeds each to its transport and reports
    /// what the transports say. Returns the number read.
    pub fn receive(
        &mut self,
        now: Instant,
        mut on_event: impl FnMut(TransportId, TransportEvent),
    ) -> usize {
        let mut n = 0;
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf[..]) {
                Ok(x) => x,
                Err(_) => break, // WouldBlock, or an ICMP error for an earlier send
            };
            n += 1;
            self.stats.received += 1;
            let Some(id) = self.route(from, len) else {
                self.stats.unrouted += 1;
                continue;
            };
            let Some(Some(slot)) = self.slots.get_mut(id) else {
                continue;
            };
            slot.transport
                .handle_datagram(now, from, &self.buf[..len], &mut self.pool);
            self.stats.srtp_refused += slot.transport.take_refused();
            if !slot.addrs.contains(&from)
                && slot.transport.is_validated(from)
                && slot.addrs.len() < ADDRS_PER_TRANSPORT
            {
                slot.addrs.push(from);
                self.by_addr.insert(from, id);
            }
            while let Some(ev) = slot.transport.poll_event() {
                on_event(id, ev);
            }
            self.touch(id);
        }
        n
    }

    fn route(&self, from: SocketAddr, len: usize) -> Option<TransportId> {
        if let Some(id) = self.by_addr.get(&from) {
            return Some(*id);
        }
        // An unknown address: only a connectivity check can introduce it.
        let data = &self.buf[..len];
        if !matches!(data.first(), Some(0..=3)) {
            return None;
        }
        let mut m = Message::new();
        m.unmarshal_binary(data).ok()?;
        let username = m.get(ATTR_USERNAME).ok()?;
        let colon = username.iter().position(|b| *b == b':')?;
        let ufrag = std::str::from_utf8(&username[..colon]).ok()?;
        self.by_ufrag.get(ufrag).copied()
    }

    /// Encrypts and queues one RTP packet (`header` serialised) for transport `id`.
    pub fn send_rtp(
        &mut self,
        id: TransportId,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), super::transport::TransportError> {
        let Some(Some(slot)) = self.slots.get_mut(id) else {
            return Err(super::transport::TransportError::NotConnected);
        };
        slot.transport.send_rtp(&mut self.pool, header, payload)?;
        self.touch(id);
        Ok(())
    }

    /// Encrypts and queues one RTCP compound packet for transport `id`.
    pub fn send_rtcp(
        &mut self,
        id: TransportId,
        packet: &[u8],
    ) -> Result<(), super::transport::TransportError> {
        let Some(Some(slot)) = self.slots.get_mut(id) else {
            return Err(super::transport::TransportError::NotConnected);
        };
        slot.transport.send_rtcp(packet)?;
        self.touch(id);
        Ok(())
    }

    /// Runs every transport's timers that are due, reporting what they say; returns when the
    /// next one is due.
    pub fn handle_timeouts(
        &mut self,
        now: Instant,
        mut on_event: impl FnMut(TransportId, TransportEvent),
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for id in 0..self.slots.len() {
            let Some(slot) = &mut self.slots[id] else {
                continue;
            };
            if slot.transport.poll_timeout().is_some_and(|t| t <= now) {
                slot.transport.handle_timeout(now);
                while let Some(ev) = slot.transport.poll_event() {
                    on_event(id, ev);
                }
                self.touch(id);
            }
            if let Some(Some(slot)) = self.slots.get(id)
                && let Some(t) = slot.transport.poll_timeout()
            {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// Sends everything the touched transports queued, in batches.
    pub fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            let Some(Some(slot)) = self.slots.get_mut(id) else {
                continue;
            };
            slot.dirty = false;
            while let Some(t) = slot.transport.poll_transmit() {
                self.out.push(t);
                if self.out.len() == BATCH {
                    send_batch(&self.socket, &mut self.out, &mut self.pool, &mut self.stats);
                }
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        send_batch(&self.socket, &mut self.out, &mut self.pool, &mut self.stats);
    }

    /// Blocks until the socket is readable or `timeout` passed.
    pub fn wait(&self, timeout: Duration) {
        self.wait_with(None, timeout);
    }

    /// Blocks until the socket or `other` (a wake-up descriptor) is readable, or `timeout`
    /// passed.
    pub fn wait_with(&self, other: Option<std::os::fd::RawFd>, timeout: Duration) {
        let mut p = [
            libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: other.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Round up: a sub-millisecond timeout must not become a busy loop of zero waits.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: two valid pollfds (a negative fd is ignored by poll).
        unsafe { libc::poll(p.as_mut_ptr(), 2, ms) };
    }
}

fn send_batch(
    socket: &UdpSocket,
    out: &mut Vec<(SocketAddr, BytesMut)>,
    pool: &mut Pool,
    stats: &mut EngineStats,
) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let mut names: [libc::sockaddr_storage; BATCH] =
        // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
        unsafe { std::mem::zeroed() };
    let mut iov: [libc::iovec; BATCH] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    // SAFETY: an all-zero mmsghdr is valid; each used one is filled in below.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        let (to, data) = &out[i];
        let len = write_sockaddr(*to, &mut names[i]);
        iov[i].iov_base = data.as_ptr() as *mut libc::c_void;
        iov[i].iov_len = data.len();
        msgs[i].msg_hdr.msg_name =
            &mut names[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
        msgs[i].msg_hdr.msg_namelen = len;
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    while done < n {
        // SAFETY: every header points at buffers that outlive the call.
        let r = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs[done..].as_mut_ptr(),
                (n - done) as libc::c_uint,
                0,
            )
        };
        stats.batches += 1;
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // The first datagram of the rest was refused: drop it, go on with the others.
            stats.send_failed += 1;
            done += 1;
            continue;
        }
        stats.sent += r as u64;
        done += r as usize;
    }
    for (_, b) in out.drain(..) {
        pool.give(b);
    }
}

fn write_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write(out as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(out as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}
