//! A webrtc-rs client speaking Conclave's signaling protocol, for tests.

use bytes::Bytes;
use conclave_signaling::{
    ClientMessage, IceCandidate, ParticipantId, ServerMessage, decode_server, encode,
};
use futures::{SinkExt, StreamExt};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

/// What the client received from one remote publisher, per kind.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub audio_packets: u64,
    pub audio_decoded: u64,
    /// Largest RMS of a decoded 20 ms frame, as a fraction of full scale.
    pub audio_peak_rms: f32,
    pub video_packets: u64,
}

/// One audio RTP packet from a remote publisher as it reached this client.
#[derive(Debug, Clone, Copy)]
pub struct AudioArrival {
    /// Monotonic arrival time (taken as the packet came out of the track).
    pub at: tokio::time::Instant,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp (48 kHz for Opus).
    pub rtp_timestamp: u32,
}

/// Audio arrivals kept per remote publisher; later ones are not recorded.
pub const MAX_AUDIO_ARRIVALS: usize = 100_000;

type Inbox = Arc<Mutex<HashMap<String, Received>>>;
type Arrivals = Arc<Mutex<HashMap<String, Vec<AudioArrival>>>>;
type Remotes = Arc<Mutex<Vec<Arc<dyn TrackRemote>>>>;
/// Audio of one publisher (by stream id) fed back into a live queue at a gain: an echo.
type Echo = Arc<Mutex<Option<(String, LiveSpeech, f32)>>>;

struct Handler {
    out: mpsc::UnboundedSender<ClientMessage>,
    inbox: Inbox,
    arrivals: Arrivals,
    remotes: Remotes,
    state: Arc<Mutex<RTCPeerConnectionState>>,
    echo: Echo,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(c) = event.candidate.to_json() {
            let _ = self.out.send(ClientMessage::Candidate {
                candidate: IceCandidate {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_m_line_index: c.sdp_mline_index,
                    username_fragment: c.username_fragment,
                },
            });
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        *self.state.lock().unwrap() = state;
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        self.remotes.lock().unwrap().push(track.clone());
        let inbox = self.inbox.clone();
        let arrivals = self.arrivals.clone();
        let echo = self.echo.clone();
        tokio::spawn(async move {
            let stream = track.stream_id().await.to_string();
            let kind = track.kind().await;
            let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
            let mut pcm = vec![0i16; 5760];
            while let Some(ev) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
                    continue;
                };
                if kind == RtpCodecKind::Audio {
                    let at = tokio::time::Instant::now();
                    let mut arrivals = arrivals.lock().unwrap();
                    let list = arrivals.entry(stream.clone()).or_default();
                    if list.len() < MAX_AUDIO_ARRIVALS {
                        list.push(AudioArrival {
                            at,
                            seq: pkt.header.sequence_number,
                            rtp_timestamp: pkt.header.timestamp,
                        });
                    }
                }
                let mut inbox = inbox.lock().unwrap();
                let r = inbox.entry(stream.clone()).or_default();
                match kind {
                    RtpCodecKind::Audio => {
                        r.audio_packets += 1;
                        if let Ok(n) = decoder.decode(&pkt.payload, &mut pcm, false) {
                            r.audio_decoded += 1;
                            if let Some((from, speech, gain)) = &*echo.lock().unwrap()
                                && *from == stream
                            {
                                // An open loudspeaker next to the microphone, no echo
                                // cancellation: what is heard is sent back.
                                let back: Vec<f32> = pcm[..n]
                                    .iter()
                                    .map(|&s| s as f32 / 32768.0 * gain)
                                    .collect();
                                speech.say(&back);
                            }
                            let rms = (pcm[..n]
                                .iter()
                                .map(|&s| (s as f64 / 32768.0).powi(2))
                                .sum::<f64>()
                                / n.max(1) as f64)
                                .sqrt() as f32;
                            r.audio_peak_rms = r.audio_peak_rms.max(rms);
                        }
                    }
                    _ => r.video_packets += 1,
                }
            }
        });
    }
}

/// A test participant.
pub struct TestClient {
    pub participant_id: ParticipantId,
    pub pc: Arc<dyn PeerConnection>,
    out: mpsc::UnboundedSender<ClientMessage>,
    events: mpsc::UnboundedReceiver<ServerMessage>,
    inbox: Inbox,
    arrivals: Arrivals,
    remotes: Remotes,
    state: Arc<Mutex<RTCPeerConnectionState>>,
    echo: Echo,
    /// Keyframe requests (PLI/FIR) that reached this client's published video track.
    pub keyframe_requests: Arc<std::sync::atomic::AtomicU64>,
    /// Unix ms at which each 20 ms audio packet was sent (index = packet number), so speech
    /// timing can be measured from the sender's side.
    pub audio_sent_at: Arc<Mutex<Vec<i64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn codec(kind: RtpCodecKind) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

impl TestClient {
    /// Joins `room` with `token` and, if `publish`, sends a 440 Hz tone and VP8-shaped video.
    pub async fn join(
        http: SocketAddr,
        room: &str,
        name: &str,
        token: &str,
        publish: bool,
    ) -> TestClient {
        Self::join_with(http, room, name, token, publish, None).await
    }

    /// Like [`TestClient::join`], publishing `speech` (48 kHz mono) once, then silence, instead
    /// of the tone.
    pub async fn join_speaking(
        http: SocketAddr,
        room: &str,
        name: &str,
        token: &str,
        speech: Arc<Vec<f32>>,
    ) -> TestClient {
        Self::join_with(http, room, name, token, true, Some(Source::Once(speech))).await
    }

    /// Like [`TestClient::join`], publishing whatever the test pushes into the returned queue
    /// (48 kHz mono), silence while it is empty: a participant that speaks when told to.
    pub async fn join_live(
        http: SocketAddr,
        room: &str,
        name: &str,
        token: &str,
    ) -> (TestClient, LiveSpeech) {
        let q: LiveSpeech = Default::default();
        let c = Self::join_with(http, room, name, token, true, Some(Source::Live(q.clone()))).await;
        (c, q)
    }

    async fn join_with(
        http: SocketAddr,
        room: &str,
        name: &str,
        token: &str,
        publish: bool,
        speech: Option<Source>,
    ) -> TestClient {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
            .await
            .expect("ws connect");
        let (mut ws_tx, mut ws_rx) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if ws_tx.send(Message::Text(encode(&m).into())).await.is_err() {
                    break;
                }
            }
            let _ = ws_tx.close().await;
        });
        out_tx
            .send(ClientMessage::Join {
                room: conclave_signaling::RoomName::validate(room).expect("a valid room name"),
                name: Some(name.into()),
                token: token.into(),
            })
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), ws_rx.next())
            .await
            .expect("joined in time")
            .expect("socket open")
            .expect("frame");
        let joined = decode_server(first.to_text().unwrap()).unwrap();
        let ServerMessage::Joined { participant_id, .. } = joined else {
            panic!("expected joined, got {joined:?}");
        };

        let inbox: Inbox = Default::default();
        let arrivals: Arrivals = Default::default();
        let echo: Echo = Default::default();
        let state = Arc::new(Mutex::new(RTCPeerConnectionState::New));
        let mut media = MediaEngine::default();
        media.register_default_codecs().unwrap();
        // The SFU's own keyframe tap lets this client see keyframe requests for its video.
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .unwrap()
            .with(
                rtc::interceptor::Slot::from(conclave::peer::rtcp::KEYFRAME_SLOT),
                conclave::peer::rtcp::KeyframeRequestTap::default(),
            );
        let remotes: Remotes = Default::default();
        let audio_sent_at: Arc<Mutex<Vec<i64>>> = Default::default();
        let keyframe_requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(media)
                .with_interceptor_registry(registry)
                .with_setting_engine(
                    SettingEngineBuilder::new()
                        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                        .build(),
                )
                .with_handler(Arc::new(Handler {
                    out: out_tx.clone(),
                    inbox: inbox.clone(),
                    arrivals: arrivals.clone(),
                    remotes: remotes.clone(),
                    state: state.clone(),
                    echo: echo.clone(),
                }))
                .with_udp_addrs(vec!["127.0.0.1:0"])
                .build()
                .await
                .expect("client pc"),
        );

        let mut tasks = vec![writer];
        if publish {
            for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                let ssrc: u32 = rand::random();
                let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    format!("{name}-stream"),
                    format!("{name}-{kind}"),
                    format!("{name}-{kind}"),
                    kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: codec(kind),
                        ..Default::default()
                    }],
                )));
                let sender = pc
                    .add_track(track.clone() as Arc<dyn TrackLocal>)
                    .await
                    .unwrap();
                if kind == RtpCodecKind::Video {
                    tasks.push(tokio::spawn(count_keyframe_requests(
                        track.clone(),
                        keyframe_requests.clone(),
                    )));
                }
                tasks.push(tokio::spawn(send_media(
                    kind,
                    track,
                    sender,
                    ssrc,
                    state.clone(),
                    speech.clone(),
                    audio_sent_at.clone(),
                    keyframe_requests.clone(),
                )));
            }
        } else {
            for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                pc.add_transceiver_from_kind(
                    kind,
                    Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                        direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .unwrap();
            }
        }
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let sdp = pc.local_description().await.unwrap().sdp;
        out_tx.send(ClientMessage::Offer { sdp }).unwrap();

        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let pc2 = pc.clone();
        let out2 = out_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = ws_rx.next().await {
                let Ok(text) = frame.to_text() else { continue };
                let Ok(msg) = decode_server(text) else {
                    continue;
                };
                match msg {
                    ServerMessage::Offer { sdp } => {
                        pc2.set_remote_description(RTCSessionDescription::offer(sdp).unwrap())
                            .await
                            .unwrap();
                        let answer = pc2.create_answer(None).await.unwrap();
                        pc2.set_local_description(answer).await.unwrap();
                        let sdp = pc2.local_description().await.unwrap().sdp;
                        let _ = out2.send(ClientMessage::Answer { sdp });
                    }
                    ServerMessage::Answer { sdp } => {
                        pc2.set_remote_description(RTCSessionDescription::answer(sdp).unwrap())
                            .await
                            .unwrap();
                    }
                    ServerMessage::Candidate { candidate } => {
                        let _ = pc2
                            .add_ice_candidate(RTCIceCandidateInit {
                                candidate: candidate.candidate,
                                sdp_mid: candidate.sdp_mid,
                                sdp_mline_index: candidate.sdp_m_line_index,
                                username_fragment: candidate.username_fragment,
                                ..Default::default()
                            })
                            .await;
                    }
                    other => {
                        let _ = ev_tx.send(other);
                    }
                }
            }
        }));
        TestClient {
            participant_id,
            pc,
            out: out_tx,
            events: ev_rx,
            inbox,
            arrivals,
            remotes,
            state,
            echo,
            keyframe_requests,
            audio_sent_at,
            tasks,
        }
    }

    /// Sends what is heard from `publisher` back through `speech` at `gain`, as a microphone
    /// beside a loudspeaker without echo cancellation would (`None` stops it).
    #[allow(dead_code)]
    pub fn echo(&self, source: Option<(&ParticipantId, LiveSpeech, f32)>) {
        *self.echo.lock().unwrap() = source.map(|(p, s, g)| (p.to_string(), s, g));
    }

    /// What was received from `publisher` so far.
    pub fn received_from(&self, publisher: &ParticipantId) -> Received {
        self.inbox
            .lock()
            .unwrap()
            .get(publisher.as_str())
            .cloned()
            .unwrap_or_default()
    }

    /// Every audio packet received from `publisher` so far (up to [`MAX_AUDIO_ARRIVALS`]), in
    /// arrival order.
    pub fn audio_arrivals_from(&self, publisher: &ParticipantId) -> Vec<AudioArrival> {
        self.arrivals
            .lock()
            .unwrap()
            .get(publisher.as_str())
            .cloned()
            .unwrap_or_default()
    }

    /// Sends a PLI for `publisher`'s video, as a decoder that lost sync would.
    pub async fn request_keyframe_from(&self, publisher: &ParticipantId) -> bool {
        let remotes: Vec<_> = self.remotes.lock().unwrap().clone();
        for t in remotes {
            if *t.stream_id().await == *publisher.as_str() && t.kind().await == RtpCodecKind::Video
            {
                let Some(ssrc) = t.ssrcs().await.first().copied() else {
                    continue;
                };
                let pli =
                    rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: ssrc,
                    };
                return t.write_rtcp(vec![Box::new(pli)]).await.is_ok();
            }
        }
        false
    }

    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.state.lock().unwrap()
    }

    pub fn send(&self, msg: ClientMessage) {
        let _ = self.out.send(msg);
    }

    /// Waits for a server message matching `pred`, skipping others.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ServerMessage) -> bool,
    ) -> Option<ServerMessage> {
        tokio::time::timeout(timeout, async {
            while let Some(m) = self.events.recv().await {
                if pred(&m) {
                    return Some(m);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Sends `leave` and closes the peer connection.
    pub async fn leave(self) {
        let _ = self.out.send(ClientMessage::Leave);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = self.pc.close().await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Counts keyframe requests arriving for a published track (once it is bound).
async fn count_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    count: Arc<std::sync::atomic::AtomicU64>,
) {
    loop {
        match track.poll().await {
            Some(_) => {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // Not bound yet (or unbound): look again shortly.
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// What a publishing client sends as audio.
#[derive(Clone)]
pub enum Source {
    /// These samples once, then silence.
    Once(Arc<Vec<f32>>),
    /// Whatever is queued, silence while nothing is.
    Live(LiveSpeech),
}

/// Samples a live client will send, and when it last sent some.
#[derive(Default)]
pub struct LiveQueue {
    samples: std::collections::VecDeque<f32>,
    /// Unix ms of the last packet that carried queued samples.
    pub last_voiced_sent_ms: i64,
}

/// The queue of a [`TestClient::join_live`] client.
#[derive(Clone, Default)]
pub struct LiveSpeech {
    samples: Arc<Mutex<LiveQueue>>,
}

impl LiveSpeech {
    /// Queues `pcm` to be sent from the next packet on.
    pub fn say(&self, pcm: &[f32]) {
        self.samples
            .lock()
            .unwrap()
            .samples
            .extend(pcm.iter().copied());
    }

    /// Whether everything queued has been sent.
    pub fn idle(&self) -> bool {
        self.samples.lock().unwrap().samples.is_empty()
    }

    /// Unix ms at which the last queued samples were sent.
    pub fn last_sent_ms(&self) -> i64 {
        self.samples.lock().unwrap().last_voiced_sent_ms
    }
}

/// Frames between the keyframes a VP8 encoder sends on its own (3 s at 30 fps).
const KEYFRAME_EVERY: u64 = 90;

/// Sends 20 ms Opus frames of a 440 Hz tone, or 30 fps VP8-shaped packets, once connected.
/// Video is a keyframe every [`KEYFRAME_EVERY`] frames and right after a keyframe request,
/// delta frames otherwise, as an encoder does.
#[allow(clippy::too_many_arguments)]
async fn send_media(
    kind: RtpCodecKind,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    state: Arc<Mutex<RTCPeerConnectionState>>,
    speech: Option<Source>,
    sent_at: Arc<Mutex<Vec<i64>>>,
    keyframe_requests: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut frame = 0u64;
    let mut answered = 0u64;
    let mut cursor = 0usize;
    let mut encoder =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let (interval, ts_step) = match kind {
        RtpCodecKind::Audio => (Duration::from_millis(20), 960u32),
        _ => (Duration::from_millis(33), 3000u32),
    };
    let mut tick = tokio::time::interval(interval);
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut phase = 0f32;
    let mut out = vec![0u8; 1500];
    loop {
        tick.tick().await;
        if *state.lock().unwrap() != RTCPeerConnectionState::Connected {
            continue;
        }
        let Some(pt) = sender.get_parameters().await.ok().and_then(|p| {
            p.rtp_parameters
                .codecs
                .iter()
                .find(|c| {
                    c.rtp_codec
                        .mime_type
                        .eq_ignore_ascii_case(&codec(kind).mime_type)
                })
                .map(|c| c.payload_type)
        }) else {
            continue;
        };
        let payload = match kind {
            RtpCodecKind::Audio => {
                let pcm: Vec<f32> = match &speech {
                    // Speech once from the first connected moment, then silence.
                    Some(Source::Once(samples)) => (0..960)
                        .map(|i| samples.get(cursor + i).copied().unwrap_or(0.0))
                        .collect(),
                    Some(Source::Live(q)) => {
                        let mut g = q.samples.lock().unwrap();
                        let n = g.samples.len().min(960);
                        let mut pcm: Vec<f32> = g.samples.drain(..n).collect();
                        if n > 0 {
                            g.last_voiced_sent_ms = conclave::clock::now_ms();
                        }
                        pcm.resize(960, 0.0);
                        pcm
                    }
                    None => (0..960)
                        .map(|_| {
                            phase += 2.0 * std::f32::consts::PI * 440.0 / 48_000.0;
                            0.3 * phase.sin()
                        })
                        .collect(),
                };
                cursor += 960;
                let n = encoder.encode_float(&pcm, &mut out).unwrap();
                Bytes::copy_from_slice(&out[..n])
            }
            // VP8 payload descriptor (start of partition 0), then the frame tag: bit 0 clear
            // for a keyframe (with its start code), set for a delta frame.
            _ => {
                let asked = keyframe_requests.load(std::sync::atomic::Ordering::Relaxed);
                let key = frame.is_multiple_of(KEYFRAME_EVERY) || asked != answered;
                answered = asked;
                frame += 1;
                if key {
                    Bytes::from_static(&[0x10, 0x00, 0x9d, 0x01, 0x2a, 1, 2, 3, 4, 5, 6, 7, 8])
                } else {
                    Bytes::from_static(&[0x10, 0x01, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5, 6, 7, 8])
                }
            }
        };
        let pkt = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: kind != RtpCodecKind::Audio,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload,
        };
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(ts_step);
        let _ = track.write_rtp(pkt).await;
        if kind == RtpCodecKind::Audio {
            sent_at.lock().unwrap().push(conclave::clock::now_ms());
        }
    }
}
