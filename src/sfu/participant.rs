//! A participant's session on the server: its PeerConnection, what it publishes and what it
//! receives, driven by one task that owns all of it (so negotiation is naturally serialised).
//!
//! Negotiation rule (see docs/signaling.md): the client makes the first offer. The server only
//! offers after that first exchange, and never while one of its offers is unanswered; changes
//! that arrive meanwhile are batched into the next offer. A client offer that collides with an
//! outstanding server offer is refused with `negotiation_collision`.

use super::forward::{SINK_QUEUE_PACKETS, SinkId, rewrite_for_leg};
use super::peer::PeerFactory;
use super::producer::Producer;
use super::room::{Room, RoomManager};
use crate::metrics::Metrics;
use conclave_signaling::{
    ClientMessage, ErrorCode, IceCandidate, ParticipantId, ServerMessage, TrackId, TrackKind,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
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
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::RtpSender;

/// Signaling messages queued for one client before it is considered stuck and disconnected.
pub const SIGNAL_QUEUE: usize = 256;
/// Client messages queued for the participant task.
pub const CLIENT_QUEUE: usize = 64;

/// What the room and the peer connection tell a participant's task.
pub enum Command {
    /// Start receiving this producer.
    Subscribe(Arc<Producer>),
    /// Stop receiving this track.
    Unsubscribe(TrackId),
    /// The client published a new track.
    RemoteTrack(Arc<dyn TrackRemote>),
    /// One of this participant's tracks ended.
    PublishedEnded(TrackId),
    /// The peer connection changed state.
    PcState(RTCPeerConnectionState),
    /// Send this last message, then end the session.
    Farewell(ServerMessage),
    /// End the session, telling the client why if `code` is set.
    Close {
        /// Error code sent before closing.
        code: Option<ErrorCode>,
        /// Human explanation.
        message: String,
    },
}

/// The room's handle on a participant.
#[derive(Clone)]
pub struct ParticipantHandle {
    /// Id.
    pub id: ParticipantId,
    /// Identity from the token.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Whether the token lets it receive tracks.
    pub can_subscribe: bool,
    commands: mpsc::UnboundedSender<Command>,
    signal: mpsc::Sender<ServerMessage>,
}

impl ParticipantHandle {
    /// Queues a message for the client; a client too slow to take it is disconnected.
    pub fn send(&self, msg: ServerMessage) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.signal.try_send(msg) {
            tracing::warn!(participant = %self.id, "signaling queue full; disconnecting");
            self.command(Command::Close {
                code: None,
                message: "signaling queue overflow".into(),
            });
        }
    }

    /// Queues a command for the participant's task.
    pub fn command(&self, cmd: Command) {
        let _ = self.commands.send(cmd);
    }
}

/// Everything needed to start a participant.
pub struct ParticipantSpec {
    /// Id to use.
    pub id: ParticipantId,
    /// Identity.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// May publish.
    pub can_publish: bool,
    /// May subscribe.
    pub can_subscribe: bool,
    /// The meeting this room belongs to, for the `joined` message.
    pub meeting: Option<conclave_signaling::MeetingInfo>,
}

/// The running participant as the WebSocket handler sees it.
pub struct ParticipantSession {
    /// The room's handle (for closing on socket loss).
    pub handle: ParticipantHandle,
    /// Feeds client messages in.
    pub client_tx: mpsc::Sender<ClientMessage>,
    /// Completes when the participant's task has cleaned up.
    pub task: JoinHandle<()>,
}

struct Handler {
    commands: mpsc::UnboundedSender<Command>,
    signal: mpsc::Sender<ServerMessage>,
    connected: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let candidate = IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_m_line_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            };
            let _ = self.signal.try_send(ServerMessage::Candidate { candidate });
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.connected
            .send_replace(state == RTCPeerConnectionState::Connected);
        let _ = self.commands.send(Command::PcState(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.commands.send(Command::RemoteTrack(track));
    }
}

/// Builds the peer connection, admits the participant to `room` and starts its task.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    spec: ParticipantSpec,
    room: Arc<Room>,
    rooms: Arc<RoomManager>,
    factory: &PeerFactory,
    ice_servers: Vec<conclave_signaling::IceServer>,
    signal: mpsc::Sender<ServerMessage>,
    metrics: Arc<Metrics>,
) -> Result<ParticipantSession, (ErrorCode, String)> {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (client_tx, client_rx) = mpsc::channel(CLIENT_QUEUE);
    let (connected_tx, connected_rx) = watch::channel(false);
    let handler = Arc::new(Handler {
        commands: cmd_tx.clone(),
        signal: signal.clone(),
        connected: connected_tx,
    });
    let pc = factory.build(handler).await.map_err(|e| {
        tracing::error!(error = %e, "cannot create peer connection");
        (
            ErrorCode::Internal,
            "the server could not allocate media resources".to_owned(),
        )
    })?;
    let handle = ParticipantHandle {
        id: spec.id.clone(),
        identity: spec.identity.clone(),
        name: spec.name.clone(),
        can_subscribe: spec.can_subscribe,
        commands: cmd_tx,
        signal,
    };
    if let Err(e) = room.join(handle.clone(), ice_servers, spec.meeting.clone()) {
        let _ = pc.close().await;
        return Err((e.code(), e.to_string()));
    }
    let span = tracing::info_span!("participant", room = %room.name, participant = %spec.id);
    let (negotiated_tx, _) = watch::channel(0u64);
    let actor = Actor {
        spec,
        pc,
        room,
        rooms,
        handle: handle.clone(),
        metrics,
        connected: connected_rx,
        negotiated: negotiated_tx,
        subscriptions: HashMap::new(),
        published: HashMap::new(),
        first_exchange_done: false,
        awaiting_answer: false,
        needs_offer: false,
    };
    let task = tokio::spawn(actor.run(cmd_rx, client_rx).instrument(span));
    Ok(ParticipantSession {
        handle,
        client_tx,
        task,
    })
}

struct Subscription {
    producer: Arc<Producer>,
    sink: SinkId,
    sender: Arc<dyn RtpSender>,
    task: JoinHandle<()>,
}

struct Actor {
    spec: ParticipantSpec,
    pc: Arc<dyn PeerConnection>,
    room: Arc<Room>,
    rooms: Arc<RoomManager>,
    handle: ParticipantHandle,
    metrics: Arc<Metrics>,
    connected: watch::Receiver<bool>,
    /// Bumped after every completed offer/answer, so forwarders re-read payload types.
    negotiated: watch::Sender<u64>,
    subscriptions: HashMap<TrackId, Subscription>,
    published: HashMap<TrackId, (Arc<Producer>, JoinHandle<()>)>,
    first_exchange_done: bool,
    awaiting_answer: bool,
    needs_offer: bool,
}

enum Flow {
    Continue,
    Stop,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut client: mpsc::Receiver<ClientMessage>,
    ) {
        tracing::info!(name = %self.spec.name, identity = %self.spec.identity, "joined");
        loop {
            let flow = tokio::select! {
                Some(cmd) = commands.recv() => self.on_command(cmd).await,
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
            while let Ok(cmd) = commands.try_recv() {
                if let Flow::Stop = self.on_command(cmd).await {
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

    fn send(&self, msg: ServerMessage) {
        self.handle.send(msg);
    }

    fn refuse(&self, code: ErrorCode, message: impl Into<String>) {
        Metrics::add(&self.metrics.signaling_errors, 1);
        let message = message.into();
        tracing::debug!(?code, %message, "refused client message");
        self.send(ServerMessage::Error { code, message });
    }

    async fn on_client(&mut self, msg: ClientMessage) -> Flow {
        match msg {
            ClientMessage::Offer { sdp } => self.on_offer(sdp).await,
            ClientMessage::Answer { sdp } => self.on_answer(sdp).await,
            ClientMessage::Candidate { candidate } => self.on_candidate(candidate).await,
            ClientMessage::Mute { track_id, muted } => {
                if !self.room.set_muted(&self.spec.id, &track_id, muted) {
                    self.refuse(
                        ErrorCode::UnknownTrack,
                        format!("you publish no track {track_id}"),
                    );
                }
            }
            ClientMessage::Leave => return Flow::Stop,
            other => self.refuse(
                ErrorCode::InvalidMessage,
                format!("`{}` is not valid at this point", other.kind()),
            ),
        }
        Flow::Continue
    }

    async fn on_offer(&mut self, sdp: String) {
        if self.awaiting_answer {
            self.refuse(
                ErrorCode::NegotiationCollision,
                "the server has an offer outstanding; answer it, then offer again",
            );
            return;
        }
        let desc = match RTCSessionDescription::offer(sdp) {
            Ok(d) => d,
            Err(e) => return self.refuse(ErrorCode::InvalidSdp, format!("offer SDP: {e}")),
        };
        if let Err(e) = self.pc.set_remote_description(desc).await {
            return self.refuse(ErrorCode::InvalidSdp, format!("cannot apply offer: {e}"));
        }
        let answer = match self.pc.create_answer(None).await {
            Ok(a) => a,
            Err(e) => {
                return self.refuse(ErrorCode::InvalidSdp, format!("cannot answer offer: {e}"));
            }
        };
        if let Err(e) = self.pc.set_local_description(answer.clone()).await {
            return self.refuse(ErrorCode::Internal, format!("cannot apply answer: {e}"));
        }
        let sdp = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or(answer.sdp);
        self.send(ServerMessage::Answer { sdp });
        self.first_exchange_done = true;
        self.negotiated.send_modify(|g| *g += 1);
    }

    async fn on_answer(&mut self, sdp: String) {
        if !self.awaiting_answer {
            return self.refuse(
                ErrorCode::InvalidSdp,
                "no server offer is waiting for an answer",
            );
        }
        let desc = match RTCSessionDescription::answer(sdp) {
            Ok(d) => d,
            Err(e) => return self.refuse(ErrorCode::InvalidSdp, format!("answer SDP: {e}")),
        };
        if let Err(e) = self.pc.set_remote_description(desc).await {
            return self.refuse(ErrorCode::InvalidSdp, format!("cannot apply answer: {e}"));
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
            self.refuse(
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
        self.send(ServerMessage::Offer { sdp });
    }

    async fn on_command(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Subscribe(p) => self.subscribe(p).await,
            Command::Unsubscribe(track) => self.unsubscribe(&track).await,
            Command::RemoteTrack(t) => self.publish(t).await,
            Command::PublishedEnded(track) => {
                if let Some((_, task)) = self.published.remove(&track) {
                    task.abort();
                    self.room.unpublish(&self.spec.id, &track);
                }
            }
            Command::PcState(state) => {
                tracing::debug!(%state, "peer connection state");
                if matches!(
                    state,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                ) {
                    tracing::info!(%state, "media connection lost");
                    return Flow::Stop;
                }
            }
            Command::Farewell(msg) => {
                self.send(msg);
                return Flow::Stop;
            }
            Command::Close { code, message } => {
                if let Some(code) = code {
                    self.send(ServerMessage::Error { code, message });
                }
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    async fn publish(&mut self, remote: Arc<dyn TrackRemote>) {
        let kind = match remote.kind().await {
            RtpCodecKind::Audio => TrackKind::Audio,
            RtpCodecKind::Video => TrackKind::Video,
            _ => return,
        };
        if !self.spec.can_publish {
            return self.refuse(
                ErrorCode::PermissionDenied,
                "your token does not allow publishing",
            );
        }
        let Some(ssrc) = remote.ssrcs().await.first().copied() else {
            return tracing::warn!("remote track without SSRC ignored");
        };
        let Some(codec) = remote.codec(ssrc).await else {
            return tracing::warn!(ssrc, "remote track without codec ignored");
        };
        let id = TrackId(format!("TR_{}", crate::ids::random_id(12)));
        let tap = match (kind, self.rooms.transcription()) {
            (TrackKind::Audio, Some(t)) => t.attach(&self.room, &self.spec.id),
            _ => None,
        };
        tracing::info!(track = %id, ?kind, codec = %codec.mime_type, ssrc, "track published");
        let producer = Arc::new(Producer::new(
            id.clone(),
            self.spec.id.clone(),
            kind,
            codec,
            remote,
            ssrc,
            self.metrics.clone(),
            tap,
            self.room.opened(),
        ));
        let reader = {
            let producer = producer.clone();
            let commands = self.handle.commands.clone();
            tokio::spawn(
                async move {
                    let id = producer.id.clone();
                    producer.run_reader().await;
                    let _ = commands.send(Command::PublishedEnded(id));
                }
                .in_current_span(),
            )
        };
        self.published.insert(id, (producer.clone(), reader));
        self.room.publish(producer);
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
        let sink = SinkId::next();
        let rx = producer.fanout.add(sink, SINK_QUEUE_PACKETS);
        let leg = Leg {
            producer: producer.clone(),
            track,
            sender: sender.clone(),
            ssrc,
            connected: self.connected.clone(),
            negotiated: self.negotiated.subscribe(),
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(leg.run(rx).in_current_span());
        self.subscriptions.insert(
            producer.id.clone(),
            Subscription {
                producer,
                sink,
                sender,
                task,
            },
        );
        self.needs_offer = true;
    }

    async fn unsubscribe(&mut self, track: &TrackId) {
        let Some(sub) = self.subscriptions.remove(track) else {
            return;
        };
        // Stop the forwarder first: it may be polling the local track, whose lock
        // remove_track needs.
        sub.task.abort();
        let _ = sub.task.await;
        sub.producer.fanout.remove(sub.sink);
        if let Err(e) = self.pc.remove_track(&sub.sender).await {
            tracing::debug!(%track, error = %e, "remove_track failed");
        }
        self.needs_offer = true;
    }

    async fn cleanup(mut self) {
        for (_, sub) in self.subscriptions.drain() {
            sub.task.abort();
            sub.producer.fanout.remove(sub.sink);
        }
        for (_, (_, reader)) in self.published.drain() {
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

/// One outgoing leg: a producer's packets rewritten for one subscriber's track.
struct Leg {
    producer: Arc<Producer>,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    connected: watch::Receiver<bool>,
    negotiated: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
}

impl Leg {
    async fn run(mut self, mut rx: mpsc::Receiver<rtp::Packet>) {
        // Writing before DTLS completes fails ("srtp context not set"); packets that arrive
        // meanwhile are dropped, which is what a late joiner would miss anyway.
        let mut payload_type: Option<u8> = None;
        let mut started = false;
        let mut feedback_open = false;
        loop {
            tokio::select! {
                biased;
                pkt = rx.recv() => {
                    let Some(mut pkt) = pkt else { break };
                    if !*self.connected.borrow() {
                        continue;
                    }
                    if payload_type.is_none() || self.negotiated.has_changed().unwrap_or(false) {
                        self.negotiated.borrow_and_update();
                        payload_type = self.negotiated_payload_type().await;
                    }
                    let Some(pt) = payload_type else { continue };
                    rewrite_for_leg(&mut pkt, self.ssrc, pt);
                    if self.track.write_rtp(pkt).await.is_ok() {
                        Metrics::add(&self.metrics.packets_out, 1);
                        if !started {
                            started = true;
                            feedback_open = true;
                            // A new video subscriber can show nothing until a keyframe.
                            self.producer.request_keyframe().await;
                        }
                    }
                }
                event = self.track.poll(), if feedback_open => {
                    match event {
                        Some(_) => self.producer.request_keyframe().await,
                        None => feedback_open = false,
                    }
                }
            }
        }
    }

    async fn negotiated_payload_type(&self) -> Option<u8> {
        let params = self.sender.get_parameters().await.ok()?;
        let mime = &self.producer.codec.mime_type;
        params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .map(|c| c.payload_type)
    }
}
