//! The load clients' peer connections (webrtc-rs, as the tests use): publishers that send
//! stamped audio and video at a set rate, subscribers that time what arrives.

use crate::stats::{self, Subscriber, Window};
use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, Registry, SettingEngineBuilder, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Audio packets per second (50: one 20 ms Opus frame each).
    pub audio_pps: u32,
    /// Audio payload bytes (Opus voice at ~32 kbit/s: ~80-100).
    pub audio_bytes: usize,
    /// Video bitrate, bits/s (0: no video).
    pub video_bps: u32,
}

/// One stream a publisher sends: its index in the stamp and what it sent inside the window.
#[derive(Debug, Default)]
pub struct Sent {
    /// Packets sent inside the measurement window.
    pub in_window: AtomicU64,
    /// Packets sent in all.
    pub total: AtomicU64,
    /// Light publishers: packets of the window sent more than 1 ms after their time (the
    /// client's core was busy), and the latest one's lateness in µs.
    pub late: AtomicU64,
    pub late_max_us: AtomicU64,
}

struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
    state: watch::Sender<RTCPeerConnectionState>,
    subscriber: Option<(Arc<Subscriber>, Arc<Window>)>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(c) = event.candidate.to_json() {
            let _ = self.candidates.send(c);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some((sub, window)) = self.subscriber.clone() else {
            return;
        };
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(pkt) = ev {
                    sub.packet(&pkt.payload, &window);
                }
            }
        });
    }
}

/// A client peer connection and what it emits.
pub struct Peer {
    /// The connection.
    pub pc: Arc<dyn PeerConnection>,
    /// Its local ICE candidates, as they are gathered (send them after the offer or answer).
    pub candidates: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
    /// Its connection state.
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// Tasks to stop with it.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A joined client: a webrtc-rs peer connection, or a light client (`crate::light`).
pub enum Client {
    /// webrtc-rs, as the tests, Janus's clients and every video publisher use.
    Webrtc(Peer),
    /// The plane's parts as a client: a subscriber, or an audio publisher.
    Light(crate::light::Light),
}

impl Client {
    /// Waits until the client is connected (ICE and DTLS done).
    pub async fn connected(&self) -> anyhow::Result<()> {
        match self {
            Client::Webrtc(p) => {
                let mut st = p.state.clone();
                st.wait_for(|x| *x == RTCPeerConnectionState::Connected)
                    .await?;
            }
            Client::Light(l) => {
                let mut c = l.connected.clone();
                c.wait_for(|x| *x).await?;
            }
        }
        Ok(())
    }

    /// Leaves as a client does (a light client's socket closes when it is dropped).
    pub async fn close(&self) {
        if let Client::Webrtc(p) = self {
            let _ = tokio::time::timeout(Duration::from_secs(2), p.pc.close()).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
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

/// A peer connection on its own UDP socket on `ip` (loopback, or the address Janus uses), default codecs and interceptors (what a
/// browser negotiates: NACK, reports, TWCC).
pub async fn build(
    subscriber: Option<(Arc<Subscriber>, Arc<Window>)>,
    ip: std::net::IpAddr,
) -> anyhow::Result<Peer> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    // The keyframe tap makes PLI/FIR from the server reach the publishing track's poll().
    let registry = register_default_interceptors(Registry::new(), &mut media)?.with(
        rtc::interceptor::Slot::from(conclave::peer::rtcp::KEYFRAME_SLOT),
        conclave::peer::rtcp::KeyframeRequestTap::default(),
    );
    let (cand_tx, cand_rx) = mpsc::unbounded_channel();
    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                // Connectivity checks paced as a browser paces them (about 50 ms) rather than
                // webrtc-rs's 200 ms: against an ICE-lite server (the media plane) the client's
                // checks are the only ones, and two 200 ms ticks (check, then nomination) made
                // every join 400 ms. 28 attempts keep webrtc-rs's 1.4 s per pair.
                .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(28))
                .build(),
        )
        .with_handler(Arc::new(Handler {
            candidates: cand_tx,
            state: state_tx,
            subscriber,
        }))
        .with_udp_addrs(vec![std::net::SocketAddr::new(ip, 0)])
        .build()
        .await?;
    Ok(Peer {
        pc: Arc::new(pc),
        candidates: cand_rx,
        state: state_rx,
        tasks: Vec::new(),
    })
}

/// Adds receive-only audio and video transceivers (a subscriber's first offer).
pub async fn add_receivers(peer: &Peer, video: bool) -> anyhow::Result<()> {
    let kinds: &[RtpCodecKind] = if video {
        &[RtpCodecKind::Audio, RtpCodecKind::Video]
    } else {
        &[RtpCodecKind::Audio]
    };
    for kind in kinds {
        peer.pc
            .add_transceiver_from_kind(
                *kind,
                Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                    direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await?;
    }
    Ok(())
}

/// Adds a publisher's tracks and starts sending once connected; `streams` gives the stamp
/// index of its audio and (if any) video stream.
pub async fn add_senders(
    peer: &mut Peer,
    name: &str,
    traffic: Traffic,
    streams: (u16, u16),
    sent: (Arc<Sent>, Arc<Sent>),
    window: Arc<Window>,
) -> anyhow::Result<()> {
    let mut kinds = vec![(RtpCodecKind::Audio, streams.0, sent.0)];
    if traffic.video_bps > 0 {
        kinds.push((RtpCodecKind::Video, streams.1, sent.1));
    }
    for (kind, stream, sent) in kinds {
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
        let sender = peer
            .pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await?;
        let asked = Arc::new(AtomicU64::new(0));
        if kind == RtpCodecKind::Video {
            // Keyframe requests (PLI/FIR) from the server, answered as an encoder would.
            let (track, asked) = (track.clone(), asked.clone());
            peer.tasks.push(tokio::spawn(async move {
                loop {
                    match track.poll().await {
                        Some(_) => {
                            asked.fetch_add(1, Ordering::Relaxed);
                        }
                        None => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        let state = peer.state.clone();
        let window = window.clone();
        peer.tasks.push(tokio::spawn(async move {
            send(
                kind, track, sender, ssrc, stream, traffic, state, sent, window, asked,
            )
            .await
        }));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn send(
    kind: RtpCodecKind,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    stream: u16,
    traffic: Traffic,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    sent: Arc<Sent>,
    window: Arc<Window>,
    asked: Arc<AtomicU64>,
) {
    // Wait to be connected, then for the negotiated payload type.
    if state
        .wait_for(|s| *s == RTCPeerConnectionState::Connected)
        .await
        .is_err()
    {
        return;
    }
    let pt = loop {
        let pt = sender.get_parameters().await.ok().and_then(|p| {
            p.rtp_parameters
                .codecs
                .iter()
                .find(|c| {
                    c.rtp_codec
                        .mime_type
                        .eq_ignore_ascii_case(&codec(kind).mime_type)
                })
                .map(|c| c.payload_type)
        });
        if let Some(pt) = pt {
            break pt;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut buf = vec![0u8; 1200];
    match kind {
        RtpCodecKind::Audio => {
            let period = Duration::from_secs_f64(1.0 / f64::from(traffic.audio_pps.max(1)));
            let ts_step = (48_000 / traffic.audio_pps.max(1)).max(1);
            let size = traffic.audio_bytes.clamp(stats::HEADER, buf.len());
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tick.tick().await;
                let now = stats::now_ns();
                // 0x78: an Opus TOC (SILK wideband, 20 ms, one frame).
                stats::stamp(&mut buf, &[0x78, 0, 0, 0, 0, 0, 0, 0], stream, now);
                let pkt = packet(
                    pt,
                    seq,
                    ts,
                    ssrc,
                    false,
                    Bytes::copy_from_slice(&buf[..size]),
                );
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(ts_step);
                if track.write_rtp(pkt).await.is_err() {
                    return;
                }
                count(&sent, &window, now);
            }
        }
        _ => {
            // 30 frames a second; keyframes 5x a delta frame; ~1100-byte packets.
            let frame_bytes = (traffic.video_bps / 8 / 30) as usize;
            let mut tick = tokio::time::interval(Duration::from_micros(33_333));
            let mut frame = 0u64;
            let mut answered = 0u64;
            loop {
                tick.tick().await;
                let now_asked = asked.load(Ordering::Relaxed);
                // A keyframe every 3 s, and (at most every 10 frames) when asked for one.
                let key = frame.is_multiple_of(90) || (now_asked != answered && frame % 10 == 0);
                if key {
                    answered = now_asked;
                }
                frame += 1;
                let bytes = if key { frame_bytes * 5 } else { frame_bytes };
                let packets = bytes.div_ceil(1100).max(1);
                let per = (bytes / packets).clamp(stats::HEADER, buf.len());
                for i in 0..packets {
                    let now = stats::now_ns();
                    // VP8 payload descriptor (S bit on a frame's first packet), then on that
                    // packet the frame tag (bit 0 clear: keyframe) and a keyframe's start code.
                    let prefix: [u8; 8] = match (i, key) {
                        (0, true) => [0x10, 0x00, 0, 0, 0x9d, 0x01, 0x2a, 0],
                        (0, false) => [0x10, 0x01, 0, 0, 0, 0, 0, 0],
                        _ => [0x00; 8],
                    };
                    stats::stamp(&mut buf, &prefix, stream, now);
                    let pkt = packet(
                        pt,
                        seq,
                        ts,
                        ssrc,
                        i + 1 == packets,
                        Bytes::copy_from_slice(&buf[..per]),
                    );
                    seq = seq.wrapping_add(1);
                    if track.write_rtp(pkt).await.is_err() {
                        return;
                    }
                    count(&sent, &window, now);
                }
                ts = ts.wrapping_add(3000);
            }
        }
    }
}

/// Counts one packet sent at `at`.
pub fn count(sent: &Sent, window: &Window, at: u64) {
    sent.total.fetch_add(1, Ordering::Relaxed);
    if window.contains(at) {
        sent.in_window.fetch_add(1, Ordering::Relaxed);
    }
}

fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: Bytes) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}
