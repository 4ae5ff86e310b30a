//! A participant's session on the server: its PeerConnection, what it publishes and what it
//! receives, driven by one task that owns all of it (so negotiation is naturally serialised).
//!
//! Negotiation rule (see docs/signaling.md): the client makes the first offer. The server only
//! offers after that first exchange, and never while one of its offers is unanswered; changes
//! that arrive meanwhile are batched into the next offer. A client offer that collides with an
//! outstanding server offer is refused with `negotiation_collision`.

use super::edge::{ClientEdge, Flow};
use super::factory::PeerFactory;
use super::leg::Leg;
use crate::metrics::Metrics;
use crate::room::{
    MemberEvent, MemberInfo, MemberLink, Producer, ProducerSpec, Room, RoomManager, SinkOptions,
};
use crate::signal;
use conclave_signaling::{
    ClientMessage, ErrorCode, IceCandidate, IceServer, MeetingInfo, ParticipantId, Role,
    ServerMessage, TrackId, TrackKind,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

/// Signaling messages queued for one client before it is considered stuck and disconnected.
pub const SIGNAL_QUEUE: usize = 256;
/// Client messages queued for the participant task.
pub const CLIENT_QUEUE: usize = 64;

/// Events queued from the peer connection for the participant's task.
pub const PC_EVENT_QUEUE: usize = 64;

/// ICE candidates a client may send before its first offer (kept until the offer applies).
pub const EARLY_CANDIDATES: usize = 32;

/// What the peer connection (and the task's own readers) tell a participant's task.
enum PcEvent {
    /// The client published a new track.
    RemoteTrack(Arc<dyn TrackRemote>),
    /// A new track whose SSRC and codec are now known.
    TrackReady(
        Arc<dyn TrackRemote>,
        TrackKind,
        u32,
        rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
    ),
    /// One of this participant's tracks ended.
    PublishedEnded(TrackId),
    /// Packets of an SSRC no track was announced for arrived on another track (webrtc-rs can
    /// route a bundle's second stream to the first one's track when media starts before it
    /// has mapped the SSRCs): publish them as their own track, described by the payload type.
    Stray {
        ssrc: u32,
        payload_type: u8,
        reply: tokio::sync::oneshot::Sender<Option<Arc<Producer>>>,
    },
    /// The peer connection changed state.
    State(RTCPeerConnectionState),
}

/// Everything needed to start a participant.
#[derive(Debug, Clone)]
pub struct ParticipantSpec {
    /// Id to use.
    pub id: ParticipantId,
    /// Identity.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Role in the room's meeting.
    pub role: Option<Role>,
    /// May publish.
    pub can_publish: bool,
    /// May subscribe.
    pub can_subscribe: bool,
    /// The meeting this room belongs to, for the `joined` message.
    pub meeting: Option<MeetingInfo>,
    /// STUN/TURN servers for the `joined` message.
    pub ice_servers: Vec<IceServer>,
}

impl ParticipantSpec {
    /// What the room knows of this member.
    pub fn member_info(&self) -> MemberInfo {
        MemberInfo {
            id: self.id.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            role: self.role,
            can_subscribe: self.can_subscribe,
        }
    }

    /// The session's first message: admitted to `room`, where `others` already are.
    pub fn joined(
        &self,
        room: &Room,
        others: Vec<conclave_signaling::ParticipantInfo>,
    ) -> ServerMessage {
        signal::joined(
            &room.name,
            &self.id,
            others,
            self.ice_servers.clone(),
            self.meeting.clone(),
        )
    }
}

/// A started participant: feed it client messages; it ends when the sender is dropped (the
/// socket went away), the client leaves, or the room sends it away.
pub struct ParticipantSession {
    /// Its id.
    pub id: ParticipantId,
    /// Feeds client messages in.
    pub client_tx: mpsc::Sender<ClientMessage>,
    /// Completes when the participant's task has cleaned up.
    pub task: JoinHandle<()>,
}

struct Handler {
    events: mpsc::Sender<PcEvent>,
    signal: mpsc::Sender<ServerMessage>,
    connected: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.signal.try_send(signal::candidate(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_m_line_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            }));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.connected
            .send_replace(state == RTCPeerConnectionState::Connected);
        let _ = self.events.send(PcEvent::State(state)).await;
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PcEvent::RemoteTrack(track)).await;
    }
}

/// Builds the peer connection, admits the participant to `room`, sends its `joined` message
/// on `signal` and starts its task.
pub async fn start(
    spec: ParticipantSpec,
    room: Arc<Room>,
    rooms: Arc<RoomManager>,
    factory: &PeerFactory,
    signal: mpsc::Sender<ServerMessage>,
    metrics: Arc<Metrics>,
) -> Result<ParticipantSession, crate::room::JoinError> {
    let (pc_tx, pc_rx) = mpsc::channel(PC_EVENT_QUEUE);
    let (client_tx, client_rx) = mpsc::channel(CLIENT_QUEUE);
    let (connected_tx, connected_rx) = watch::channel(false);
    let handler = Arc::new(Handler {
        events: pc_tx.clone(),
        signal: signal.clone(),
        connected: connected_tx,
    });
    let pc = factory.build(handler).await.map_err(|e| {
        tracing::error!(error = %e, "cannot create peer connection");
        crate::room::JoinError::Media("the server could not allocate media resources".into())
    })?;
    let (link, others) = match room.join(spec.member_info()) {
        Ok(x) => x,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    // Always the session's first message; the link's events follow it.
    let _ = signal.try_send(spec.joined(&room, others));
    let span = tracing::info_span!("participant", room = %room.name, participant = %spec.id);
    let (negotiated_tx, _) = watch::channel(0u64);
    let id = spec.id.clone();
    let actor = Actor {
        spec,
        pc,
        room,
        rooms,
        edge: ClientEdge::new(signal, metrics.clone()),
        pc_tx,
        metrics,
        connected: connected_rx,
        negotiated: negotiated_tx,
        subscriptions: HashMap::new(),
        published: HashMap::new(),
        published_ssrcs: Default::default(),
        first_exchange_done: false,
        awaiting_answer: false,
        needs_offer: false,
        early_candidates: Vec::new(),
    };
    let task = tokio::spawn(actor.run(link, pc_rx, client_rx).instrument(span));
    Ok(ParticipantSession {
        id,
        client_tx,
        task,
    })
}

struct Subscription {
    sender: Arc<dyn RtpSender>,
    task: JoinHandle<()>,
}

struct Actor {
    spec: ParticipantSpec,
    pc: Arc<dyn PeerConnection>,
    room: Arc<Room>,
    rooms: Arc<RoomManager>,
    edge: ClientEdge,
    pc_tx: mpsc::Sender<PcEvent>,
    metrics: Arc<Metrics>,
    connected: watch::Receiver<bool>,
    /// Bumped after every completed offer/answer, so legs re-read payload types.
    negotiated: watch::Sender<u64>,
    subscriptions: HashMap<TrackId, Subscription>,
    published: HashMap<TrackId, JoinHandle<()>>,
    /// SSRCs published so far (announced tracks and adopted strays).
    published_ssrcs: HashMap<u32, Arc<Producer>>,
    first_exchange_done: bool,
    awaiting_answer: bool,
    needs_offer: bool,
    /// Candidates that came before the first offer: a client may trickle them as soon as it
    /// has set its local description, which can race its offer on the socket.
    early_candidates: Vec<RTCIceCandidateInit>,
}

impl Actor {
    async fn run(
        mut self,
        mut link: MemberLink,
        mut pc_events: mpsc::Receiver<PcEvent>,
        mut client: mpsc::Receiver<ClientMessage>,
    ) {
        tracing::info!(name = %self.spec.name, identity = %self.spec.identity, "joined");
        loop {
            let flow = tokio::select! {
                // Room events first: tracks already in the room are subscribed before a
                // client offer is answered, so the answer carries them.
                biased;
                ev = link.events.recv() => match ev {
                    Some(ev) => self.on_member_event(ev).await,
                    None => Flow::Stop,
                },
                Some(ev) = pc_events.recv() => self.on_pc_event(ev).await,
                () = link.kicked.wait() => Flow::Stop,
                msg = client.recv() => match msg {
                    Some(msg) => self.on_client(msg).await,
                    None => Flow::Stop, // socket gone
                },
            };
            if let Flow::Stop = flow {
                break;
            }
            // Batch whatever else is already queued into one renegotiation.
            let mut stop = false;
            while let Ok(ev) = link.events.try_recv() {
                if let Flow::Stop = self.on_member_event(ev).await {
                    stop = true;
                    break;
                }
            }
            if stop {
                break;
            }
            self.maybe_offer().await;
        }
        self.cleanup().await;
    }

    async fn on_client(&mut self, msg: ClientMessage) -> Flow {
        match msg {
            ClientMessage::Offer { sdp } => self.on_offer(sdp).await,
            ClientMessage::Answer { sdp } => self.on_answer(sdp).await,
            ClientMessage::Candidate { candidate } => self.on_candidate(candidate).await,
            other => return self.edge.client_message(&self.room, &self.spec.id, other),
        }
        Flow::Continue
    }

    async fn on_offer(&mut self, sdp: String) {
        if self.awaiting_answer {
            self.edge.refuse(
                ErrorCode::NegotiationCollision,
                "the server has an offer outstanding; answer it, then offer again",
            );
            return;
        }
        let desc = match RTCSessionDescription::offer(sdp) {
            Ok(d) => d,
            Err(e) => {
                return self
                    .edge
                    .refuse(ErrorCode::InvalidSdp, format!("offer SDP: {e}"));
            }
        };
        if let Err(e) = self.pc.set_remote_description(desc).await {
            return self
                .edge
                .refuse(ErrorCode::InvalidSdp, format!("cannot apply offer: {e}"));
        }
        for init in std::mem::take(&mut self.early_candidates) {
            if let Err(e) = self.pc.add_ice_candidate(init).await {
                self.edge.refuse(
                    ErrorCode::InvalidCandidate,
                    format!("cannot add ICE candidate: {e}"),
                );
            }
        }
        let answer = match self.pc.create_answer(None).await {
            Ok(a) => a,
            Err(e) => {
                return self
                    .edge
                    .refuse(ErrorCode::InvalidSdp, format!("cannot answer offer: {e}"));
            }
        };
        if let Err(e) = self.pc.set_local_description(answer.clone()).await {
            return self
                .edge
                .refuse(ErrorCode::Internal, format!("cannot apply answer: {e}"));
        }
        let sdp = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or(answer.sdp);
        let _ = self.edge.send(signal::answer(sdp));
        self.first_exchange_done = true;
        self.negotiated.send_modify(|g| *g += 1);
        // The answer already carries the tracks that were in the room (their senders took
        // the offer's receive-only m-lines). A server offer follows all the same: measured
        // with webrtc-rs clients, skipping it delays the first packet by one ICE check
        // interval (421 ms p50 instead of 221 ms, `conclave-loadtest --preset audio-fanout`),
        // see docs/performance.md.
    }

    async fn on_answer(&mut self, sdp: String) {
        if !self.awaiting_answer {
            return self.edge.refuse(
                ErrorCode::InvalidSdp,
                "no server offer is waiting for an answer",
            );
        }
        let desc = match RTCSessionDescription::answer(sdp) {
            Ok(d) => d,
            Err(e) => {
                return self
                    .edge
                    .refuse(ErrorCode::InvalidSdp, format!("answer SDP: {e}"));
            }
        };
        if let Err(e) = self.pc.set_remote_description(desc).await {
            return self
                .edge
                .refuse(ErrorCode::InvalidSdp, format!("cannot apply answer: {e}"));
        }
        self.awaiting_answer = false;
        self.negotiated.send_modify(|g| *g += 1);
    }

    async fn on_candidate(&mut self, c: IceCandidate) {
        if c.candidate.is_empty() {
            return; // end-of-candidates
        }
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_m_line_index,
            username_fragment: c.username_fragment,
            ..Default::default()
        };
        if let Err(e) = self.pc.add_ice_candidate(init).await {
            self.edge.refuse(
                ErrorCode::InvalidCandidate,
                format!("cannot add ICE candidate: {e}"),
            );
        }
    }

    async fn maybe_offer(&mut self) {
        if !self.needs_offer || !self.first_exchange_done || self.awaiting_answer {
            return;
        }
        self.needs_offer = false;
        let offer = match self.pc.create_offer(None).await {
            Ok(o) => o,
            Err(e) => return tracing::error!(error = %e, "cannot create offer"),
        };
        if let Err(e) = self.pc.set_local_description(offer.clone()).await {
            return tracing::error!(error = %e, "cannot apply own offer");
        }
        let sdp = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or(offer.sdp);
        self.awaiting_answer = true;
        let _ = self.edge.send(signal::offer(sdp));
    }

    async fn on_member_event(&mut self, ev: MemberEvent) -> Flow {
        let ev = match self.edge.member_event(ev) {
            Ok(flow) => return flow,
            Err(ev) => ev,
        };
        match ev {
            MemberEvent::Subscribe(p) => self.subscribe(p).await,
            MemberEvent::Unsubscribe(track) => self.unsubscribe(&track).await,
            // Signaling-only events were handled by the edge.
            _ => {}
        }
        Flow::Continue
    }

    async fn on_pc_event(&mut self, ev: PcEvent) -> Flow {
        match ev {
            PcEvent::RemoteTrack(t) => self.resolve(t).await,
            PcEvent::TrackReady(t, kind, ssrc, codec) => self.publish(t, kind, ssrc, codec).await,
            PcEvent::Stray {
                ssrc,
                payload_type,
                reply,
            } => {
                let _ = reply.send(self.adopt(ssrc, payload_type).await);
            }
            PcEvent::PublishedEnded(track) => {
                if let Some(reader) = self.published.remove(&track) {
                    reader.abort();
                    self.room.unpublish(&self.spec.id, &track);
                }
            }
            PcEvent::State(state) => {
                tracing::debug!(%state, "peer connection state");
                if matches!(
                    state,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                ) {
                    tracing::info!(%state, "media connection lost");
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    /// A new remote track may not know its SSRC and codec yet when it is announced (seen
    /// under load: `codec` was `None` at first); a helper task waits for them (up to 2 s),
    /// so the actor never stalls, then hands the track back as `TrackReady`.
    async fn resolve(&mut self, remote: Arc<dyn TrackRemote>) {
        let kind = match remote.kind().await {
            RtpCodecKind::Audio => TrackKind::Audio,
            RtpCodecKind::Video => TrackKind::Video,
            _ => return,
        };
        if !self.spec.can_publish {
            return self.edge.refuse(
                ErrorCode::PermissionDenied,
                "your token does not allow publishing",
            );
        }
        let events = self.pc_tx.clone();
        let pc = self.pc.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(
            async move {
                for _ in 0..10 {
                    if let Some(ssrc) = remote.ssrcs().await.first().copied()
                        && let Some(codec) = remote.codec(ssrc).await
                    {
                        let _ = events
                            .send(PcEvent::TrackReady(remote, kind, ssrc, codec))
                            .await;
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                // The track object is a snapshot that may never learn them: take the SSRC
                // from its first packet and the codec from the negotiated parameters by that
                // packet's payload type (unique within the bundle).
                match learn_from_first_packet(&pc, &remote, kind, &metrics).await {
                    Some((ssrc, codec)) => {
                        tracing::debug!(ssrc, codec = %codec.mime_type, "track described by its first packet");
                        let _ = events
                            .send(PcEvent::TrackReady(remote, kind, ssrc, codec))
                            .await;
                    }
                    None => tracing::warn!(?kind, "remote track without SSRC or codec; ignored"),
                }
            }
            .in_current_span(),
        );
    }

    async fn publish(
        &mut self,
        remote: Arc<dyn TrackRemote>,
        kind: TrackKind,
        ssrc: u32,
        codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
    ) {
        // The codec says what the stream is: a track announced as one kind can carry the
        // other's stream when webrtc-rs matched an SSRC to the wrong transceiver, and an
        // Opus stream published as video would be neither heard nor transcribed.
        let mime = codec.mime_type.to_ascii_lowercase();
        let kind = match kind {
            TrackKind::Video if mime.starts_with("audio/") => {
                tracing::warn!(ssrc, codec = %codec.mime_type, "a video track carries audio: published as audio");
                TrackKind::Audio
            }
            TrackKind::Audio if mime.starts_with("video/") => {
                tracing::warn!(ssrc, codec = %codec.mime_type, "an audio track carries video: published as video");
                TrackKind::Video
            }
            k => k,
        };
        let (id, producer) = match self.published_ssrcs.get(&ssrc) {
            // Already published from packets that came on another track: this track now
            // carries them (too), into the same producer.
            Some(p) => {
                tracing::debug!(track = %p.id, ssrc, "announced track joins its adopted producer");
                (TrackId(format!("{}_late", p.id)), p.clone())
            }
            None => {
                let id = TrackId(format!("TR_{}", crate::ids::random_id(12)));
                tracing::info!(track = %id, ?kind, codec = %codec.mime_type, ssrc, "track published");
                let producer = match self.room.publish(ProducerSpec {
                    id: id.clone(),
                    publisher: self.spec.id.clone(),
                    kind,
                    codec,
                    // An agent's voice is not a person's words: never transcribed.
                    transcribe: self.spec.role != Some(Role::Agent),
                }) {
                    Ok(p) => p,
                    Err(e) => return tracing::warn!(error = %e, "track not published"),
                };
                self.published_ssrcs.insert(ssrc, producer.clone());
                (id, producer)
            }
        };
        let reader = {
            let events = self.pc_tx.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(
                async move {
                    let id = producer.id.clone();
                    read_remote(remote, ssrc, producer, &metrics, &events).await;
                    let _ = events.send(PcEvent::PublishedEnded(id)).await;
                }
                .in_current_span(),
            )
        };
        self.published.insert(id, reader);
    }

    /// Publishes a stray SSRC (see [`PcEvent::Stray`]) if its payload type is a negotiated
    /// codec and no track of this participant has that SSRC yet.
    async fn adopt(&mut self, ssrc: u32, pt: u8) -> Option<Arc<Producer>> {
        if self.published_ssrcs.contains_key(&ssrc) || !self.spec.can_publish {
            return None;
        }
        let (kind, codec) = match negotiated_codec(&self.pc, "audio/", pt).await {
            Some(c) => (TrackKind::Audio, c),
            None => (
                TrackKind::Video,
                negotiated_codec(&self.pc, "video/", pt).await?,
            ),
        };
        let id = TrackId(format!("TR_{}", crate::ids::random_id(12)));
        tracing::info!(track = %id, ?kind, codec = %codec.mime_type, ssrc, "track published from packets that came on another track");
        let producer = self
            .room
            .publish(ProducerSpec {
                id: id.clone(),
                publisher: self.spec.id.clone(),
                kind,
                codec,
                transcribe: self.spec.role != Some(Role::Agent),
            })
            .map_err(|e| tracing::warn!(error = %e, "stray track not published"))
            .ok()?;
        self.published_ssrcs.insert(ssrc, producer.clone());
        // Fed by the carrying track's reader, which ends it with its own.
        self.published.insert(id, tokio::spawn(async {}));
        Some(producer)
    }

    async fn subscribe(&mut self, producer: Arc<Producer>) {
        if self.subscriptions.contains_key(&producer.id) {
            return;
        }
        let ssrc: u32 = rand::random();
        let kind = match producer.kind {
            TrackKind::Audio => RtpCodecKind::Audio,
            TrackKind::Video => RtpCodecKind::Video,
        };
        // Stream id = publisher id, so the client can tell whose media a track is.
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            producer.publisher.0.clone(),
            producer.id.0.clone(),
            format!("{}-{}", producer.publisher, producer.id),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: producer.codec.clone(),
                ..Default::default()
            }],
        )));
        let sender = match self
            .pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
        {
            Ok(s) => s,
            Err(e) => return tracing::warn!(track = %producer.id, error = %e, "cannot add track"),
        };
        let (sink, rx) = producer.add_sink(SinkOptions::leg(producer.kind == TrackKind::Video));
        let id = producer.id.clone();
        let leg = Leg {
            producer,
            sink,
            track,
            sender: sender.clone(),
            ssrc,
            connected: self.connected.clone(),
            negotiated: self.negotiated.subscribe(),
        };
        let task = tokio::spawn(leg.run(rx).in_current_span());
        self.subscriptions.insert(id, Subscription { sender, task });
        self.needs_offer = true;
    }

    async fn unsubscribe(&mut self, track: &TrackId) {
        let Some(sub) = self.subscriptions.remove(track) else {
            return;
        };
        // Stop the leg first (dropping it removes its sink): it may be polling the local
        // track, whose lock remove_track needs.
        sub.task.abort();
        let _ = sub.task.await;
        if let Err(e) = self.pc.remove_track(&sub.sender).await {
            tracing::debug!(%track, error = %e, "remove_track failed");
        }
        self.needs_offer = true;
    }

    async fn cleanup(mut self) {
        for (_, sub) in self.subscriptions.drain() {
            sub.task.abort();
        }
        for (_, reader) in self.published.drain() {
            reader.abort();
        }
        let empty = self.room.leave(&self.spec.id);
        if empty {
            self.rooms.remove_if_closed(&self.room.name);
        }
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "peer connection close");
        }
        tracing::info!("left");
    }
}

/// The SSRC of `remote`'s first packet of its own kind (waiting up to 2 s for one) and the
/// negotiated codec of its payload type. Packets whose payload type is not a codec of this
/// kind (another stream's, which webrtc-rs can hand a track while negotiation settles) are
/// skipped and counted: taking the first of those would lose the whole track.
async fn learn_from_first_packet(
    pc: &Arc<dyn PeerConnection>,
    remote: &Arc<dyn TrackRemote>,
    kind: TrackKind,
    metrics: &Metrics,
) -> Option<(u32, rtc::rtp_transceiver::rtp_sender::RTCRtpCodec)> {
    let prefix = match kind {
        TrackKind::Audio => "audio/",
        TrackKind::Video => "video/",
    };
    let mut skipped = 0u64;
    let found = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        loop {
            match remote.poll().await? {
                TrackRemoteEvent::OnRtpPacket(p) => {
                    // Asked per packet until one matches: the negotiated parameters may fill
                    // in only as the first packets arrive.
                    if let Some(codec) = negotiated_codec(pc, prefix, p.header.payload_type).await {
                        return Some((p.header.ssrc, codec));
                    }
                    skipped += 1;
                    if skipped == 1 {
                        tracing::debug!(
                            ?kind,
                            ssrc = p.header.ssrc,
                            pt = p.header.payload_type,
                            "first packets of another kind on this track skipped"
                        );
                    }
                }
                TrackRemoteEvent::OnEnded => return None,
                _ => {}
            }
        }
    })
    .await
    .ok()
    .flatten();
    Metrics::add(&metrics.foreign_packets, skipped);
    found
}

/// The negotiated codec of payload type `pt` whose MIME type starts with `prefix`.
async fn negotiated_codec(
    pc: &Arc<dyn PeerConnection>,
    prefix: &str,
    pt: u8,
) -> Option<rtc::rtp_transceiver::rtp_sender::RTCRtpCodec> {
    for receiver in pc.get_receivers().await {
        let Ok(params) = receiver.get_parameters().await else {
            continue;
        };
        if let Some(c) = params.rtp_parameters.codecs.iter().find(|c| {
            c.payload_type == pt
                && c.rtp_codec
                    .mime_type
                    .to_ascii_lowercase()
                    .starts_with(prefix)
        }) {
            return Some(c.rtp_codec.clone());
        }
    }
    // A receiver webrtc-rs never matched a stream to has no parameters (seen under load: the
    // client's audio arrived on its video track and no audio track was ever announced); the
    // client's own description still says what the payload type is.
    let sdp = pc.remote_description().await?.sdp;
    codec_in_sdp(&sdp, prefix, pt)
}

/// The codec the SDP maps payload type `pt` to, in a media section of kind `prefix`
/// (`audio/` or `video/`).
fn codec_in_sdp(
    sdp: &str,
    prefix: &str,
    pt: u8,
) -> Option<rtc::rtp_transceiver::rtp_sender::RTCRtpCodec> {
    let kind = prefix.trim_end_matches('/');
    let mut in_kind = false;
    let mut found: Option<rtc::rtp_transceiver::rtp_sender::RTCRtpCodec> = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if found.is_some() {
                break;
            }
            in_kind = m.split_whitespace().next() == Some(kind);
            continue;
        }
        if !in_kind {
            continue;
        }
        if let Some(map) = line.strip_prefix(&format!("a=rtpmap:{pt} ")) {
            let mut parts = map.split('/');
            let name = parts.next()?.trim();
            let clock_rate = parts.next()?.trim().parse().ok()?;
            let channels = parts
                .next()
                .and_then(|c| c.trim().parse().ok())
                .unwrap_or(0);
            found = Some(rtc::rtp_transceiver::rtp_sender::RTCRtpCodec {
                mime_type: format!("{kind}/{name}"),
                clock_rate,
                channels,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: Vec::new(),
            });
        } else if let (Some(c), Some(fmtp)) =
            (found.as_mut(), line.strip_prefix(&format!("a=fmtp:{pt} ")))
        {
            c.sdp_fmtp_line = fmtp.trim().to_owned();
        }
    }
    found
}

/// Feeds a client's track into its producer until the track ends, and answers the
/// producer's keyframe requests with a PLI. The only task that awaits on the remote track.
///
/// Only packets of the track's own SSRC are fed in: webrtc-rs can hand a track packets of
/// another stream of the same connection (seen: a client's VP8 packets on its audio track
/// while negotiation settled), and those would reach the Opus decoder and the subscribers'
/// audio legs.
async fn read_remote(
    remote: Arc<dyn TrackRemote>,
    ssrc: u32,
    producer: Arc<Producer>,
    metrics: &Metrics,
    events: &mpsc::Sender<PcEvent>,
) {
    let mut foreign = 0u64;
    // Streams of other SSRCs that arrive on this track: each is asked about once; those the
    // participant's task publishes (see `PcEvent::Stray`) are fed from here. At most a few.
    // (SSRC, its producer if adopted, packets dropped since it was refused).
    let mut strays: Vec<(u32, Option<Arc<Producer>>, u64)> = Vec::new();
    const MAX_STRAYS: usize = 4;
    loop {
        tokio::select! {
            event = remote.poll() => match event {
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    if packet.header.ssrc == ssrc {
                        producer.deliver(packet);
                        continue;
                    }
                    let other = packet.header.ssrc;
                    if let Some(i) = strays.iter().position(|(s, ..)| *s == other) {
                        let (_, adopted, refused) = &mut strays[i];
                        match adopted {
                            Some(p) => {
                                p.deliver(packet);
                                continue;
                            }
                            None => {
                                *refused += 1;
                                // Asked again now and then: what the stream is may become
                                // known (a description applied, parameters filled in).
                                if *refused % 50 != 0 || *refused > 500 {
                                    Metrics::add(&metrics.foreign_packets, 1);
                                    continue;
                                }
                                strays.remove(i);
                            }
                        }
                    }
                    foreign += 1;
                    Metrics::add(&metrics.foreign_packets, 1);
                    if strays.len() >= MAX_STRAYS {
                        continue;
                    }
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    let asked = events
                        .send(PcEvent::Stray { ssrc: other, payload_type: packet.header.payload_type, reply })
                        .await
                        .is_ok();
                    let adopted = if asked { answer.await.ok().flatten() } else { None };
                    if adopted.is_none() && foreign == 1 {
                        tracing::debug!(track = %producer.id, ssrc, other, "packets of another SSRC on this track ignored");
                    }
                    if let Some(p) = &adopted {
                        p.deliver(packet);
                    }
                    strays.push((other, adopted, 0));
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => {}
            },
            () = producer.keyframe_requested() => {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                };
                if let Err(e) = remote.write_rtcp(vec![Box::new(pli)]).await {
                    tracing::debug!(track = %producer.id, error = %e, "keyframe request not sent");
                }
            }
        }
    }
    for (_, adopted, _) in strays {
        if let Some(p) = adopted {
            let _ = events.send(PcEvent::PublishedEnded(p.id.clone())).await;
        }
    }
}

#[cfg(test)]
mod sdp_tests {
    use super::codec_in_sdp;

    const SDP: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn payload_types_are_read_from_the_right_media_section() {
        let opus = codec_in_sdp(SDP, "audio/", 111).unwrap();
        assert_eq!(
            (opus.mime_type.as_str(), opus.clock_rate, opus.channels),
            ("audio/opus", 48_000, 2)
        );
        assert_eq!(opus.sdp_fmtp_line, "minptime=10;useinbandfec=1");
        let vp8 = codec_in_sdp(SDP, "video/", 96).unwrap();
        assert_eq!(
            (vp8.mime_type.as_str(), vp8.clock_rate),
            ("video/VP8", 90_000)
        );
        assert!(codec_in_sdp(SDP, "video/", 111).is_none(), "111 is audio");
        assert!(codec_in_sdp(SDP, "audio/", 96).is_none(), "96 is video");
        assert!(codec_in_sdp(SDP, "audio/", 120).is_none());
    }
}
