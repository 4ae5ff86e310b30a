//! A participant whose media runs on the plane (`--media-plane worker`): its task negotiates
//! with [`Session`], hands its [`Transport`] to the process's [`Worker`], publishes the streams
//! the worker reports and asks the worker to forward the room's plane streams to it. Signaling,
//! room membership and the negotiation rule are those of `crate::peer::participant` (the
//! client offers first; the server offers after that, never with one of its offers
//! unanswered).
//!
//! Tracks published outside the plane (an agent's voice) reach plane subscribers through a
//! bridge: a local source of the worker fed from the room's fan-out ([`bridge`]).

use super::sdp::{self, Answered, Direction, Local, Offer, OfferedMedia, Section, Sending};
use super::session::Session;
use super::transport::{Credentials, Identity, Transport};
use super::worker::{self, Command, Event, Key, Tapped, Worker};
use crate::metrics::Metrics;
use crate::peer::edge::{ClientEdge, Flow};
use crate::peer::participant::{CLIENT_QUEUE, ParticipantSession, ParticipantSpec};
use crate::room::keyframe::VideoCodec;
use crate::room::producer::PlaneSource;
use crate::room::{MemberEvent, MemberLink, Producer, ProducerSpec, Room, RoomManager};
use crate::signal;
use bytes::Bytes;
use conclave_signaling::{ClientMessage, ErrorCode, Role, ServerMessage, TrackId, TrackKind};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Worker events queued for one participant's task.
pub const EVENT_QUEUE: usize = 64;
/// Packets of one published audio stream queued for the room (transcription).
pub const TAP_QUEUE: usize = 256;

/// The process's media plane: one worker and the DTLS identity every transport shows.
pub struct Plane {
    worker: Worker,
    identity: Identity,
    provider: Arc<dyn rtc::crypto::RTCCryptoProvider>,
    /// The address written in candidates (the bound one, or the public IP with its port).
    advertised: SocketAddr,
}

impl Plane {
    /// Binds the first free port of `ports` (inclusive; `(0, 0)`: any) on `ip` and starts the
    /// worker; candidates name `public_ip` if set.
    pub fn start(
        ip: std::net::IpAddr,
        ports: (u16, u16),
        public_ip: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Plane> {
        let mut worker = None;
        let mut last = None;
        for port in ports.0..=ports.1 {
            match Worker::start(SocketAddr::new(ip, port)) {
                Ok(w) => {
                    worker = Some(w);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        let Some(worker) = worker else {
            anyhow::bail!(
                "no free UDP port in {}-{} on {ip}: {}",
                ports.0,
                ports.1,
                last.map_or_else(String::new, |e| e.to_string())
            );
        };
        let identity = Identity::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let provider = rtc::crypto::default_provider().map_err(|e| anyhow::anyhow!("{e}"))?;
        let bound = worker.local_addr();
        let advertised = SocketAddr::new(public_ip.unwrap_or(bound.ip()), bound.port());
        tracing::info!(%bound, %advertised, "media plane worker started");
        Ok(Plane {
            worker,
            identity,
            provider,
            advertised,
        })
    }

    /// The worker's counters.
    pub fn stats(&self) -> &worker::WorkerStats {
        self.worker.stats()
    }

    /// What every description written for a client with `creds` carries.
    fn local<'a>(&'a self, creds: &'a Credentials) -> Local<'a> {
        Local {
            ufrag: &creds.local_ufrag,
            pwd: &creds.local_pwd,
            fingerprint: &self.identity.fingerprint,
            candidate: self.advertised,
        }
    }
}

/// Where the worker forwards `producer` from: its publisher's transport, or for a track fed
/// inside the process (an agent's voice) a local source that one bridge task per track feeds
/// from a sink of the room's fan-out (made by the track's first plane subscriber; it ends when
/// the track does). `None` if the worker refused the commands.
fn bridge(plane: &Arc<Plane>, producer: &Arc<Producer>) -> Option<PlaneSource> {
    if let Some(s) = producer.plane {
        return Some(s);
    }
    let video = (producer.kind == TrackKind::Video)
        .then(|| VideoCodec::from_mime(&producer.codec.mime_type));
    // Initialised once; another subscriber's task asking meanwhile waits until the worker's
    // commands are queued, so its Subscribe can never overtake the source's Publish.
    let mut made = false;
    let src = *producer.plane_bridge.get_or_init(|| {
        made = true;
        let src = PlaneSource {
            key: plane.worker.key(),
            ssrc: rand::random(),
        };
        let queued = plane
            .worker
            .send(Command::AddLocal { key: src.key })
            .and_then(|()| {
                plane.worker.send(Command::Publish {
                    key: src.key,
                    ssrc: src.ssrc,
                    video,
                    tap: None,
                })
            });
        if let Err(e) = queued {
            tracing::warn!(track = %producer.id, error = %e, "track not bridged to the media plane");
        }
        src
    });
    if !made {
        return Some(src);
    }
    tracing::debug!(track = %producer.id, key = src.key, "track bridged to the media plane");
    // The task holds the sink, not the producer: when the track goes, its fan-out and so the
    // queue end, and the task with them.
    let (sink, mut rx) = producer.add_sink(crate::room::SinkOptions::leg(video.is_some()));
    let plane = plane.clone();
    let track = producer.id.clone();
    tokio::spawn(
        async move {
            let mut dropped = 0u64;
            while let Some(mut packet) = rx.recv().await {
                packet.header.ssrc = src.ssrc;
                // Serialised straight into the buffer the worker takes (one allocation).
                let mut raw = bytes::BytesMut::zeroed(packet.marshal_size());
                if packet.marshal_to(&mut raw).is_err() {
                    continue;
                }
                if plane
                    .worker
                    .send(Command::Inject {
                        key: src.key,
                        packet: raw,
                    })
                    .is_err()
                {
                    dropped += 1;
                } else {
                    sink.written(1);
                }
            }
            if dropped > 0 {
                tracing::warn!(%track, dropped, "bridged packets the media worker refused");
            }
            let _ = plane.worker.send(Command::Remove { key: src.key });
        }
        .in_current_span(),
    );
    Some(src)
}

/// Admits the participant to `room`, sends its `joined` message on `signal` and starts its
/// task.
pub async fn start(
    spec: ParticipantSpec,
    room: Arc<Room>,
    rooms: Arc<RoomManager>,
    plane: Arc<Plane>,
    signal: mpsc::Sender<ServerMessage>,
    metrics: Arc<Metrics>,
) -> Result<ParticipantSession, crate::room::JoinError> {
    let (client_tx, client_rx) = mpsc::channel(CLIENT_QUEUE);
    let (link, others) = room.join(spec.member_info())?;
    let _ = signal.try_send(spec.joined(&room, others));
    let span = tracing::info_span!("participant", room = %room.name, participant = %spec.id);
    let id = spec.id.clone();
    let key = plane.worker.key();
    let actor = Actor {
        spec,
        plane,
        key,
        room,
        rooms,
        edge: ClientEdge::new(signal, metrics),
        session: Session::new(),
        credentials: None,
        published: HashMap::new(),
        subscriptions: HashMap::new(),
        first_exchange_done: false,
        awaiting_answer: false,
        needs_offer: false,
    };
    let task = tokio::spawn(actor.run(link, client_rx).instrument(span));
    Ok(ParticipantSession {
        id,
        client_tx,
        task,
    })
}

struct Subscription {
    producer: Arc<Producer>,
    /// Where the worker forwards it from.
    source: PlaneSource,
    /// The SSRC this client sees.
    ssrc: u32,
    /// In a section of the session (answered or offered).
    placed: bool,
    /// The worker forwards it.
    forwarding: bool,
}

struct Actor {
    spec: ParticipantSpec,
    plane: Arc<Plane>,
    key: Key,
    room: Arc<Room>,
    rooms: Arc<RoomManager>,
    edge: ClientEdge,
    session: Session,
    credentials: Option<Credentials>,
    /// Published SSRCs, with the task feeding the room from the worker's tap (audio).
    published: HashMap<u32, Option<JoinHandle<()>>>,
    subscriptions: HashMap<TrackId, Subscription>,
    first_exchange_done: bool,
    awaiting_answer: bool,
    needs_offer: bool,
}

/// `opus/48000/2` → the codec a producer carries.
fn codec_of(kind: &str, rtpmap: &str) -> RTCRtpCodec {
    let mut parts = rtpmap.split('/');
    let name = parts.next().unwrap_or("");
    let clock_rate = parts.next().and_then(|c| c.parse().ok()).unwrap_or(90_000);
    let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    RTCRtpCodec {
        mime_type: format!("{kind}/{name}"),
        clock_rate,
        channels,
        sdp_fmtp_line: if name.eq_ignore_ascii_case("opus") {
            "minptime=10;useinbandfec=1".into()
        } else {
            String::new()
        },
        rtcp_feedback: Vec::new(),
    }
}

/// A producer's codec as the `rtpmap` prefix a section is matched by (`opus/48000`).
fn rtpmap_prefix(codec: &RTCRtpCodec) -> String {
    let name = codec.mime_type.split('/').nth(1).unwrap_or("");
    format!("{name}/{}", codec.clock_rate)
}

/// The first offered codec the plane forwards, for a section the client publishes in.
fn receivable(m: &OfferedMedia) -> Option<String> {
    let known: &[&str] = if m.kind == "audio" {
        &["opus/48000"]
    } else {
        &["VP8/90000", "VP9/90000", "H264/90000"]
    };
    m.codecs.iter().find_map(|(_, rtpmap)| {
        known
            .iter()
            .find(|k| {
                rtpmap
                    .to_ascii_lowercase()
                    .starts_with(&k.to_ascii_lowercase())
            })
            .map(|k| (*k).to_owned())
    })
}

impl Actor {
    async fn run(mut self, mut link: MemberLink, mut client: mpsc::Receiver<ClientMessage>) {
        tracing::info!(name = %self.spec.name, identity = %self.spec.identity, key = self.key, "joined (media plane)");
        let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let mut events_tx = Some(events_tx);
        loop {
            let flow = tokio::select! {
                biased;
                ev = link.events.recv() => match ev {
                    Some(ev) => self.on_member_event(ev),
                    None => Flow::Stop,
                },
                Some(ev) = events.recv() => self.on_worker_event(ev),
                () = link.kicked.wait() => Flow::Stop,
                msg = client.recv() => match msg {
                    Some(msg) => self.on_client(msg, &mut events_tx),
                    None => Flow::Stop,
                },
            };
            if let Flow::Stop = flow {
                break;
            }
            let mut stop = false;
            while let Ok(ev) = link.events.try_recv() {
                if let Flow::Stop = self.on_member_event(ev) {
                    stop = true;
                    break;
                }
            }
            if stop {
                break;
            }
            self.maybe_offer();
        }
        self.cleanup();
    }

    fn command(&self, c: Command) -> bool {
        match self.plane.worker.send(c) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "media worker command not queued");
                false
            }
        }
    }

    fn on_client(&mut self, msg: ClientMessage, events: &mut Option<mpsc::Sender<Event>>) -> Flow {
        match msg {
            ClientMessage::Offer { sdp } => self.on_offer(&sdp, events),
            ClientMessage::Answer { sdp } => self.on_answer(&sdp),
            // ICE-lite: the client's checks reach the plane's one candidate; its own
            // candidates are not needed (a peer-reflexive address is learnt from its checks).
            ClientMessage::Candidate { .. } => {}
            other => return self.edge.client_message(&self.room, &self.spec.id, other),
        }
        Flow::Continue
    }

    fn on_offer(&mut self, sdp: &str, events: &mut Option<mpsc::Sender<Event>>) {
        if self.awaiting_answer {
            return self.edge.refuse(
                ErrorCode::NegotiationCollision,
                "the server has an offer outstanding; answer it, then offer again",
            );
        }
        let offer: Offer = match sdp::parse_offer(sdp) {
            Ok(o) => o,
            Err(e) => {
                return self
                    .edge
                    .refuse(ErrorCode::InvalidSdp, format!("offer SDP: {e}"));
            }
        };
        if self.credentials.is_none() {
            let creds = Credentials::generate(&*self.plane.provider, offer.fingerprint.clone());
            let transport = match Transport::new(
                &self.plane.identity,
                creds.clone(),
                self.plane.worker.local_addr(),
                Instant::now(),
            ) {
                Ok(t) => t,
                Err(e) => {
                    return self
                        .edge
                        .refuse(ErrorCode::Internal, format!("transport: {e}"));
                }
            };
            let Some(tx) = events.take() else { return };
            if !self.command(Command::Add {
                key: self.key,
                transport: Box::new(transport),
                events: tx,
            }) {
                return self
                    .edge
                    .refuse(ErrorCode::Internal, "the media plane is overloaded");
            }
            self.credentials = Some(creds);
        }
        // Subscriptions waiting for a section take the client's receive-only ones first.
        let mut waiting: Vec<(TrackId, TrackKind)> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| !s.placed)
            .map(|(id, s)| (id.clone(), s.producer.kind))
            .collect();
        waiting.sort_by(|a, b| a.0.0.cmp(&b.0.0));
        let mut placed: Vec<TrackId> = Vec::new();
        let subs = &self.subscriptions;
        let decide = |m: &OfferedMedia, agreed: Option<&Section>| -> Answered {
            if let Some(a) = agreed {
                return match (&a.sending, a.direction) {
                    (Some(s), Direction::SendRecv) => Answered::SendRecv(s.clone()),
                    (Some(s), _) => Answered::Send(s.clone()),
                    (None, Direction::RecvOnly | Direction::Idle) if m.client_sends => {
                        receivable(m).map_or(Answered::Reject, Answered::Receive)
                    }
                    (None, Direction::RecvOnly | Direction::Idle) => {
                        receivable(m).map_or(Answered::Reject, Answered::Idle)
                    }
                    _ => Answered::Reject,
                };
            }
            if m.client_sends {
                return receivable(m).map_or(Answered::Reject, Answered::Receive);
            }
            let kind = if m.kind == "audio" {
                TrackKind::Audio
            } else {
                TrackKind::Video
            };
            if let Some(i) = waiting.iter().position(|(_, k)| *k == kind) {
                let (id, _) = waiting.remove(i);
                let s = &subs[&id];
                placed.push(id);
                return Answered::Send(Sending {
                    codec: rtpmap_prefix(&s.producer.codec),
                    ssrc: s.ssrc,
                    msid: (s.producer.publisher.0.clone(), s.producer.id.0.clone()),
                });
            }
            // Nothing to send there yet: kept in the transport, so the client connects now
            // and what comes later is one offer on a live connection.
            receivable(m).map_or(Answered::Reject, Answered::Idle)
        };
        let creds = self.credentials.as_ref().expect("credentials set");
        let local = self.plane.local(creds);
        let answer = match self.session.answer(&offer, decide, &local) {
            Ok(a) => a,
            Err(e) => {
                return self
                    .edge
                    .refuse(ErrorCode::InvalidSdp, format!("cannot answer offer: {e}"));
            }
        };
        let _ = self.edge.send(signal::answer(answer));
        self.first_exchange_done = true;
        for id in placed {
            if let Some(s) = self.subscriptions.get_mut(&id) {
                s.placed = true;
            }
        }
        self.start_legs();
        // What did not fit in the client's sections goes in our next offer.
        let unplaced: Vec<TrackId> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| !s.placed)
            .map(|(id, _)| id.clone())
            .collect();
        for id in unplaced {
            self.place(&id);
        }
    }

    fn on_answer(&mut self, sdp: &str) {
        if !self.awaiting_answer {
            return self.edge.refuse(
                ErrorCode::InvalidSdp,
                "no server offer is waiting for an answer",
            );
        }
        if let Err(e) = self.session.apply_answer(sdp) {
            return self
                .edge
                .refuse(ErrorCode::InvalidSdp, format!("cannot apply answer: {e}"));
        }
        self.awaiting_answer = false;
        self.start_legs();
    }

    /// Puts a subscription in a new section of our next offer.
    fn place(&mut self, id: &TrackId) {
        let Some(s) = self.subscriptions.get_mut(id) else {
            return;
        };
        let kind = match s.producer.kind {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        };
        let sending = Sending {
            codec: rtpmap_prefix(&s.producer.codec),
            ssrc: s.ssrc,
            msid: (s.producer.publisher.0.clone(), s.producer.id.0.clone()),
        };
        match self.session.add_send(kind, sending) {
            Ok(_) => {
                s.placed = true;
                self.needs_offer = true;
            }
            Err(e) => tracing::warn!(track = %id, error = %e, "track not offered"),
        }
    }

    /// Starts forwarding every placed subscription whose section both sides agreed on.
    fn start_legs(&mut self) {
        if self.session.offer_outstanding() {
            // Sections of an unanswered offer are not agreed yet.
            return;
        }
        let agreed: Vec<(u32, u8)> = self
            .session
            .sections()
            .iter()
            .filter(|s| matches!(s.direction, Direction::SendOnly | Direction::SendRecv))
            .filter_map(|s| s.sending.as_ref().map(|snd| (snd.ssrc, s.codec.0)))
            .collect();
        let mut starts = Vec::new();
        for s in self.subscriptions.values_mut() {
            if s.forwarding || !s.placed {
                continue;
            }
            let Some(&(_, pt)) = agreed.iter().find(|(ssrc, _)| *ssrc == s.ssrc) else {
                continue;
            };
            let src = s.source;
            s.forwarding = true;
            starts.push(Command::Subscribe {
                from: src.key,
                source_ssrc: src.ssrc,
                to: self.key,
                ssrc: s.ssrc,
                payload_type: pt,
            });
        }
        for c in starts {
            self.command(c);
        }
    }

    fn maybe_offer(&mut self) {
        if !self.needs_offer || !self.first_exchange_done || self.awaiting_answer {
            return;
        }
        self.needs_offer = false;
        let Some(creds) = self.credentials.as_ref() else {
            return;
        };
        let offer = self.session.offer(&self.plane.local(creds));
        self.awaiting_answer = true;
        let _ = self.edge.send(signal::offer(offer));
    }

    fn on_member_event(&mut self, ev: MemberEvent) -> Flow {
        let ev = match self.edge.member_event(ev) {
            Ok(flow) => return flow,
            Err(ev) => ev,
        };
        match ev {
            MemberEvent::Subscribe(p) => self.subscribe(p),
            MemberEvent::Unsubscribe(track) => self.unsubscribe(&track),
            // Signaling-only events were handled by the edge.
            _ => {}
        }
        Flow::Continue
    }

    fn subscribe(&mut self, producer: Arc<Producer>) {
        if self.subscriptions.contains_key(&producer.id) {
            return;
        }
        let Some(source) = bridge(&self.plane, &producer) else {
            return;
        };
        let id = producer.id.clone();
        self.subscriptions.insert(
            id.clone(),
            Subscription {
                producer,
                source,
                ssrc: rand::random(),
                placed: false,
                forwarding: false,
            },
        );
        if self.first_exchange_done {
            self.place(&id);
        }
    }

    fn unsubscribe(&mut self, track: &TrackId) {
        let Some(s) = self.subscriptions.remove(track) else {
            return;
        };
        if s.forwarding {
            self.command(Command::Unsubscribe {
                to: self.key,
                ssrc: s.ssrc,
            });
        }
        let mid = self
            .session
            .sections()
            .iter()
            .find(|sec| sec.sending.as_ref().is_some_and(|snd| snd.ssrc == s.ssrc))
            .map(|sec| sec.mid.clone());
        if let Some(mid) = mid
            && self.session.stop_send(&mid)
        {
            self.needs_offer = true;
        }
    }

    fn on_worker_event(&mut self, ev: Event) -> Flow {
        match ev {
            Event::Connected => tracing::debug!("media connected"),
            Event::Failed(why) => {
                tracing::info!(%why, "media connection lost");
                return Flow::Stop;
            }
            Event::UnknownStream { ssrc, payload_type } => self.publish(ssrc, payload_type),
            // Keyframe requests are relayed by the worker; reports are not used yet.
            Event::Rtcp(_) => {}
        }
        Flow::Continue
    }

    /// A stream the client started sending: published under the codec its payload type has
    /// in a section the client sends in.
    fn publish(&mut self, ssrc: u32, payload_type: u8) {
        if self.published.contains_key(&ssrc) {
            return;
        }
        if !self.spec.can_publish {
            return self.edge.refuse(
                ErrorCode::PermissionDenied,
                "your token does not allow publishing",
            );
        }
        let Some(section) = self.session.sections().iter().find(|s| {
            s.codec.0 == payload_type
                && matches!(s.direction, Direction::RecvOnly | Direction::SendRecv)
        }) else {
            return tracing::warn!(ssrc, payload_type, "stream in no negotiated codec; ignored");
        };
        let (kind, codec) = if section.kind == "audio" {
            (TrackKind::Audio, codec_of("audio", &section.codec.1))
        } else {
            (TrackKind::Video, codec_of("video", &section.codec.1))
        };
        let transcribe = self.spec.role != Some(Role::Agent);
        let (tap, tap_rx) = if kind == TrackKind::Audio && transcribe {
            let (tx, rx) = mpsc::channel::<Tapped>(TAP_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        // The worker knows the stream before any subscriber's command names it.
        if !self.command(Command::Publish {
            key: self.key,
            ssrc,
            video: (kind == TrackKind::Video).then(|| VideoCodec::from_mime(&codec.mime_type)),
            tap,
        }) {
            return;
        }
        let id = TrackId(format!("TR_{}", crate::ids::random_id(12)));
        tracing::info!(track = %id, ?kind, codec = %codec.mime_type, ssrc, "track published");
        let producer = match self.room.publish_from(
            ProducerSpec {
                id,
                publisher: self.spec.id.clone(),
                kind,
                codec,
                transcribe,
            },
            Some(PlaneSource {
                key: self.key,
                ssrc,
            }),
        ) {
            Ok(p) => p,
            Err(e) => return tracing::warn!(error = %e, "track not published"),
        };
        // The room's own listeners (transcription) get the stream from the worker's tap.
        let tap = tap_rx.map(|mut rx| {
            let p = producer.clone();
            tokio::spawn(
                async move {
                    // The copy out of the queue is made here, on the room's side, not on the
                    // forwarding thread; the payload is then a slice of it.
                    while let Some(tapped) = rx.recv().await {
                        let mut bytes = Bytes::copy_from_slice(tapped.packet());
                        if let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut bytes) {
                            p.deliver(packet);
                        }
                    }
                }
                .in_current_span(),
            )
        });
        self.published.insert(ssrc, tap);
    }

    fn cleanup(mut self) {
        if self.credentials.is_some() {
            self.command(Command::Remove { key: self.key });
        }
        for tap in self.published.drain().filter_map(|(_, tap)| tap) {
            tap.abort();
        }
        let empty = self.room.leave(&self.spec.id);
        if empty {
            self.rooms.remove_if_closed(&self.room.name);
        }
        tracing::info!("left");
    }
}
