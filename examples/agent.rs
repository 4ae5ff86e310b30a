//! An external voice agent for Conclave: a separate process that joins a room over the public
//! signaling WebSocket protocol with webrtc-rs, exactly as a third party bringing its own brain
//! would. It publishes one Opus audio track, listens to the room through the signaling messages
//! the server sends (`speaking` from the room's voice detector, `caption` interim and final
//! lines from its transcriber), and runs a short scripted conversation: greet, ask the questions
//! one at a time, wait for the other participant's turn to end before speaking, stop talking when
//! interrupted (and resume if the "interruption" produced no words). It never decodes anybody's
//! audio: the server's captions are its ears.
//!
//! Building blocks from `conclave_media`: `voice` (text to 48 kHz PCM with Piper, flite or
//! espeak-ng), `packetize` (Opus RTP packets with talkspurt markers, paced at 20 ms), `turns`
//! (the turn-taking state machine), `conversation` (what to say next) and `lead` (the BANT
//! score). When it exits (conversation over, everybody gone, Ctrl-C or SIGTERM) it prints one
//! line of JSON on stdout: the lead score (`RuleScorer` over the other participant's final
//! captions), their answers, and a few timings. Logs go to stderr.
//!
//! # Running it against `./scripts/run.sh`
//!
//! `./scripts/run.sh` starts `conclave serve --dev` on http://127.0.0.1:8080 with a Whisper
//! model (captions need it), an API key pair generated into `data/dev-api-key.toml`, and guest
//! access on. In a second terminal:
//!
//! ```sh
//! # A token signed with the dev key pair (the file holds `api_key = "..."`, `api_secret = "..."`).
//! eval "$(sed -n 's/^api_key = /export CONCLAVE_API_KEY=/p; s/^api_secret = /export CONCLAVE_API_SECRET=/p' data/dev-api-key.toml)"
//! TOKEN=$(target/release/conclave token create --room demo --identity agent-1 --name Ava)
//! cargo run --example agent -- --server http://127.0.0.1:8080 --room demo --token "$TOKEN"
//! ```
//!
//! Then open http://127.0.0.1:8080/room/demo in a browser, join, and answer the agent's
//! questions (a headset keeps the agent's voice out of your microphone). Without `--token` the
//! agent asks the server for a guest token (`POST /api/rooms/{room}/guest-token`; dev mode has
//! guest access on). Options:
//!
//! - `--name Ava`: display name.
//! - `--voice auto|piper|flite|espeak-ng` (default `auto`: the Piper voice that
//!   `conclave model install` put in `--data-dir` (default `data`), else flite, else espeak-ng).
//! - `--lead-identity dana`: talk to that participant only (default: anyone who is not an
//!   agent); `--lead-name Dana` overrides the name used in the greeting (default: their display
//!   name).
//! - `--meeting-day 2026-12-01`: the day timelines are resolved against (default: today, UTC).
//! - `--wait-secs 300`: how long to wait for someone to talk to before giving up.
//! - `--udp-bind`: local address for media (default `127.0.0.1:0` when the server is on
//!   loopback, else `0.0.0.0:0`, which means every interface); the server's STUN/TURN servers
//!   from `joined` are used unless the bind is loopback.

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use conclave::agents::score_json;
use conclave_media::conversation::{Conversation, Say, SayKind, Script};
use conclave_media::lead::{Category, Date, LeadAnswer, LeadScore, LeadScorer, RuleScorer};
use conclave_media::packetize::{AudioPacket, FRAME, OpusPacketizer, Pacer};
use conclave_media::transcribe::guard::is_speech;
use conclave_media::turns::{TurnConfig, TurnDecision, TurnEvent, Turns};
use conclave_media::voice::{
    CommandEngine, CommandVoice, Voice, VoiceError, best_available, split_sentences,
};
use conclave_signaling::{
    ClientMessage, IceCandidate, ParticipantId, ParticipantInfo, Role, RoomName, ServerMessage,
    decode_server, encode,
};
use futures::{SinkExt, StreamExt};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

/// How long a lead must be in the room (and the media connected) before the greeting.
const GREET_AFTER_MS: u64 = 1_000;
/// How long a turn's end waits for the lead's final caption before answering anyway.
const FINAL_WAIT_MS: u64 = 4_000;
/// After the lead has been here, with nobody left the agent leaves after this.
const ALONE_LEAVE_MS: u64 = 10_000;
/// After the closing line, the agent stays this long before leaving.
const LINGER_MS: u64 = 1_500;
/// Frames sent at once after a late wake-up; beyond that they are skipped (and counted).
const MAX_BURST_FRAMES: u64 = 5;
/// Opus bitrate of the agent's voice.
const VOICE_BITRATE: i32 = 32_000;
/// Sentences synthesized ahead of playback.
const SYNTH_AHEAD: usize = 4;
/// A final caption the server sends for speech it could not transcribe.
const GAP_TEXT: &str = "[speech not transcribed]";

#[derive(Parser, Debug)]
#[command(about = "An external Conclave voice agent (webrtc-rs over the signaling protocol)")]
struct Args {
    /// The server's base URL (http:// or https://; the WebSocket is at /ws).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Room to join.
    #[arg(long)]
    room: String,
    /// Access token (JWT) for the room; without it the agent asks for a guest token.
    #[arg(long, env = "CONCLAVE_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Display name.
    #[arg(long, default_value = "Ava")]
    name: String,
    /// Voice engine.
    #[arg(long, default_value = "auto", value_parser = ["auto", "piper", "flite", "espeak-ng"])]
    voice: String,
    /// Data directory of `conclave model install` (for the Piper voice).
    #[arg(long, env = "CONCLAVE_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Talk to the participant with this identity only.
    #[arg(long)]
    lead_identity: Option<String>,
    /// Name to greet the lead with (default: their display name).
    #[arg(long)]
    lead_name: Option<String>,
    /// The meeting's day, YYYY-MM-DD, for "by the end of next month" (default: today, UTC).
    #[arg(long)]
    meeting_day: Option<String>,
    /// Seconds to wait for somebody to talk to.
    #[arg(long, default_value_t = 300)]
    wait_secs: u64,
    /// Local UDP address for media.
    #[arg(long)]
    udp_bind: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Logging

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("[agent {:>8.3}s] {msg}", started().elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// The script

/// The server's own default question set (the example asks the same).
fn script() -> Script {
    conclave::agents::default_script()
}

fn today() -> Date {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Date::from_days((secs / 86_400) as i64)
}

// ---------------------------------------------------------------------------------------------
// The voice

fn pick_voice(args: &Args) -> anyhow::Result<Arc<dyn Voice>> {
    let piper = || -> Result<Box<dyn Voice>, VoiceError> {
        let files = conclave_model::voice_paths(&args.data_dir);
        if !files.model.is_file() || !files.config.is_file() {
            return Err(VoiceError::Unavailable(format!(
                "no Piper voice at {} (run `conclave model install --data-dir {}`)",
                files.model.display(),
                args.data_dir.display()
            )));
        }
        let v = conclave_media::voice::piper::PiperVoice::load(
            &files.runtime,
            &files.model,
            &files.config,
        )?;
        Ok(Box::new(v))
    };
    let command = |e| CommandVoice::new(e).map(|v| Box::new(v) as Box<dyn Voice>);
    let voice: Box<dyn Voice> = match args.voice.as_str() {
        "piper" => piper()?,
        "flite" => command(CommandEngine::Flite)?,
        "espeak-ng" => command(CommandEngine::EspeakNg)?,
        _ => best_available(piper().ok())
            .ok_or_else(|| anyhow!("no voice: install flite or espeak-ng, or the Piper voice"))?,
    };
    Ok(Arc::from(voice))
}

// ---------------------------------------------------------------------------------------------
// The connection: signaling WebSocket and a webrtc-rs peer connection publishing one track

/// Where the server is.
struct Endpoint {
    ws_url: String,
    /// `host:port` for plain HTTP requests (guest tokens); `None` over TLS.
    http_host: Option<String>,
    loopback: bool,
}

fn endpoint(server: &str) -> anyhow::Result<Endpoint> {
    let (tls, rest) = if let Some(r) = server.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = server.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = server.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = server.strip_prefix("ws://") {
        (false, r)
    } else {
        (false, server)
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let path = path.strip_suffix("/ws").unwrap_or(path);
    if host.is_empty() {
        bail!("--server {server:?} has no host");
    }
    let (hostname, port) = split_host_port(host);
    let loopback = hostname == "localhost"
        || hostname
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let with_port = match port {
        Some(_) => host.to_owned(),
        None => format!("{host}:{}", if tls { 443 } else { 80 }),
    };
    Ok(Endpoint {
        ws_url: format!("{}://{host}{path}/ws", if tls { "wss" } else { "ws" }),
        http_host: (!tls).then_some(with_port),
        loopback,
    })
}

/// `host[:port]` or `[v6][:port]` into the host name and the port, if given.
fn split_host_port(h: &str) -> (&str, Option<u16>) {
    if let Some(rest) = h.strip_prefix('[')
        && let Some((ip, tail)) = rest.split_once(']')
    {
        return (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match h.rsplit_once(':') {
        Some((name, p)) if !name.contains(':') => (name, p.parse().ok()),
        _ => (h, None),
    }
}

/// A guest token from `POST /api/rooms/{room}/guest-token` (plain HTTP/1.1, no client crate).
async fn guest_token(ep: &Endpoint, room: &str, name: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = ep
        .http_host
        .as_deref()
        .ok_or_else(|| anyhow!("guest tokens need an http:// server; pass --token"))?;
    let body = json!({ "name": name }).to_string();
    let req = format!(
        "POST /api/rooms/{room}/guest-token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connect {host}"))?;
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "guest token refused: {} {body}",
            head.lines().next().unwrap_or("")
        );
    }
    // A chunked body starts with its size line; the JSON object is what is between braces.
    let json_text = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => &body[a..=b],
        _ => bail!("guest token: unexpected body {body:?}"),
    };
    let v: Value = serde_json::from_str(json_text)?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("guest token: no token in {v}"))
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Local candidates wait until the offer is on its way: the server refuses candidates that
/// arrive before the description they belong to.
enum CandidateGate {
    Holding(Vec<IceCandidate>),
    Open,
}

struct Handler {
    out: mpsc::UnboundedSender<ClientMessage>,
    gate: Arc<std::sync::Mutex<CandidateGate>>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(c) = event.candidate.to_json() {
            let candidate = IceCandidate {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_m_line_index: c.sdp_mline_index,
                username_fragment: c.username_fragment,
            };
            match &mut *self.gate.lock().expect("candidate gate") {
                CandidateGate::Holding(held) => held.push(candidate),
                CandidateGate::Open => {
                    let _ = self.out.send(ClientMessage::Candidate { candidate });
                }
            }
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        log(format!("media connection {state}"));
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Others' media is offered to every member; the agent listens through captions, so it
        // only drains what arrives.
        tokio::spawn(async move { while track.poll().await.is_some() {} });
    }
}

struct Conn {
    me: ParticipantId,
    participants: Vec<ParticipantInfo>,
    out: mpsc::UnboundedSender<ClientMessage>,
    events: mpsc::UnboundedReceiver<ServerMessage>,
    pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    audio: mpsc::UnboundedSender<AudioPacket>,
    ssrc: u32,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn rtc_err(what: &'static str) -> impl FnOnce(webrtc::error::Error) -> anyhow::Error {
    move |e| anyhow!("{what}: {e}")
}

async fn connect(args: &Args, ep: &Endpoint, token: String) -> anyhow::Result<Conn> {
    let room = RoomName::validate(&args.room).ok_or_else(|| anyhow!(RoomName::RULE))?;
    let (ws, _) = tokio_tungstenite::connect_async(ep.ws_url.as_str())
        .await
        .with_context(|| format!("WebSocket {}", ep.ws_url))?;
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
            room,
            name: Some(args.name.clone()),
            token,
        })
        .map_err(|_| anyhow!("signaling closed"))?;

    // `joined`, possibly after `waiting` (a meeting that has not started).
    let mut deadline = Some(tokio::time::Instant::now() + Duration::from_secs(15));
    let (me, participants, ice_servers) = loop {
        let next = match deadline {
            Some(d) => tokio::time::timeout_at(d, ws_rx.next())
                .await
                .map_err(|_| anyhow!("no answer to join within 15 s"))?,
            None => ws_rx.next().await,
        };
        let frame = next
            .ok_or_else(|| anyhow!("the server closed the connection"))?
            .context("WebSocket")?;
        let Message::Text(text) = frame else { continue };
        match decode_server(text.as_str()) {
            Ok(ServerMessage::Joined {
                participant_id,
                participants,
                ice_servers,
                meeting,
                ..
            }) => {
                if let Some(m) = meeting {
                    log(format!(
                        "meeting {} ({}), role {:?}",
                        m.code, m.name, m.role
                    ));
                }
                break (participant_id, participants, ice_servers);
            }
            Ok(ServerMessage::Waiting { meeting }) => {
                log(format!("meeting {} has not started; waiting", meeting.code));
                deadline = None;
            }
            Ok(ServerMessage::Error { code, message }) => {
                bail!("join refused: {code:?}: {message}")
            }
            Ok(_) | Err(_) => {}
        }
    };
    log(format!(
        "joined {} as {me}, {} others here",
        args.room,
        participants.len()
    ));

    let bind = args.udp_bind.clone().unwrap_or_else(|| {
        if ep.loopback {
            "127.0.0.1:0".to_owned()
        } else {
            "0.0.0.0:0".to_owned()
        }
    });
    let loopback_bind = bind.starts_with("127.") || bind.starts_with("[::1]");
    let mut config = RTCConfigurationBuilder::new();
    if !loopback_bind && !ice_servers.is_empty() {
        config = config.with_ice_servers(
            ice_servers
                .into_iter()
                .map(|s| RTCIceServer {
                    urls: s.urls,
                    username: s.username.unwrap_or_default(),
                    credential: s.credential.unwrap_or_default(),
                })
                .collect(),
        );
    }
    let mut media = MediaEngine::default();
    media.register_default_codecs().map_err(rtc_err("codecs"))?;
    let registry = register_default_interceptors(Registry::new(), &mut media)
        .map_err(rtc_err("interceptors"))?;
    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let gate = Arc::new(std::sync::Mutex::new(CandidateGate::Holding(Vec::new())));
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(config.build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_handler(Arc::new(Handler {
                out: out_tx.clone(),
                gate: gate.clone(),
                state: state_tx,
            }))
            .with_udp_addrs(vec![bind])
            .build()
            .await
            .map_err(rtc_err("peer connection"))?,
    );

    let ssrc: u32 = rand::random();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("{}-stream", me),
        format!("{}-voice", me),
        "voice".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    )));
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(rtc_err("add track"))?;
    let (audio_tx, audio_rx) = mpsc::unbounded_channel();
    let rtp_task = tokio::spawn(rtp_writer(track, sender, ssrc, audio_rx));

    let offer = pc.create_offer(None).await.map_err(rtc_err("offer"))?;
    pc.set_local_description(offer)
        .await
        .map_err(rtc_err("local description"))?;
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow!("no local description"))?
        .sdp;
    {
        let mut g = gate.lock().expect("candidate gate");
        let _ = out_tx.send(ClientMessage::Offer { sdp });
        if let CandidateGate::Holding(held) = std::mem::replace(&mut *g, CandidateGate::Open) {
            for candidate in held {
                let _ = out_tx.send(ClientMessage::Candidate { candidate });
            }
        }
    }

    // Signaling in: SDP and candidates go to the peer connection, the rest to the agent.
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let pc2 = pc.clone();
    let out2 = out_tx.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(frame)) = ws_rx.next().await {
            let text = match frame {
                Message::Text(t) => t,
                Message::Close(_) => break,
                // Pings are answered by tungstenite itself.
                _ => continue,
            };
            let msg = match decode_server(text.as_str()) {
                Ok(m) => m,
                Err(e) => {
                    log(format!(
                        "undecodable server message ({e}): {}",
                        text.as_str()
                    ));
                    continue;
                }
            };
            match msg {
                ServerMessage::Offer { sdp } => {
                    if let Err(e) = answer(&*pc2, sdp, &out2).await {
                        log(format!("renegotiation failed: {e:#}"));
                    }
                }
                ServerMessage::Answer { sdp } => {
                    let r = match RTCSessionDescription::answer(sdp) {
                        Ok(d) => pc2.set_remote_description(d).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = r {
                        log(format!("server answer not applied: {e}"));
                    }
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
                    if ev_tx.send(other).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(Conn {
        me,
        participants,
        out: out_tx,
        events: ev_rx,
        pc,
        state: state_rx,
        audio: audio_tx,
        ssrc,
        tasks: vec![writer, reader, rtp_task],
    })
}

async fn answer(
    pc: &dyn PeerConnection,
    sdp: String,
    out: &mpsc::UnboundedSender<ClientMessage>,
) -> anyhow::Result<()> {
    let offer = RTCSessionDescription::offer(sdp).map_err(rtc_err("offer"))?;
    pc.set_remote_description(offer)
        .await
        .map_err(rtc_err("remote description"))?;
    let answer = pc.create_answer(None).await.map_err(rtc_err("answer"))?;
    pc.set_local_description(answer)
        .await
        .map_err(rtc_err("local description"))?;
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow!("no local description"))?
        .sdp;
    let _ = out.send(ClientMessage::Answer { sdp });
    Ok(())
}

/// Writes the agent's packets to its track with the payload type the server negotiated.
async fn rtp_writer(
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    mut rx: mpsc::UnboundedReceiver<AudioPacket>,
) {
    let mut pt: Option<u8> = None;
    let mut failures = 0u64;
    while let Some(pkt) = rx.recv().await {
        if pt.is_none() {
            pt = sender.get_parameters().await.ok().and_then(|p| {
                p.rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("audio/opus"))
                    .map(|c| c.payload_type)
            });
        }
        let Some(payload_type) = pt else {
            failures += 1;
            continue;
        };
        let r = track
            .write_rtp(rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: pkt.marker,
                    payload_type,
                    sequence_number: pkt.seq,
                    timestamp: pkt.timestamp,
                    ssrc,
                    ..Default::default()
                },
                payload: pkt.payload,
            })
            .await;
        if let Err(e) = r {
            failures += 1;
            if failures.is_power_of_two() {
                log(format!("RTP write failed ({failures} so far): {e}"));
            }
        }
    }
}

impl Conn {
    async fn leave(self) {
        let _ = self.out.send(ClientMessage::Leave);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.pc.close().await;
        for t in self.tasks {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The agent

/// What is being played.
struct Playing {
    say: Say,
    sentences: Vec<String>,
    /// Synthesized sentences: (index, samples, synthesis time).
    rx: mpsc::Receiver<(usize, Result<Vec<i16>, VoiceError>, Duration)>,
    queue: VecDeque<(usize, Vec<i16>)>,
    current: Option<(usize, Vec<i16>, usize)>,
    /// First sentence of this playback (a resume starts later).
    from: usize,
    synth_done: bool,
    announced: bool,
}

impl Playing {
    /// The sentence being played, or the next one.
    fn sentence(&self) -> usize {
        self.current
            .as_ref()
            .map(|c| c.0)
            .or_else(|| self.queue.front().map(|q| q.0))
            .unwrap_or(self.from)
    }
}

#[derive(Default)]
struct Stats {
    packets: u64,
    frames_skipped: u64,
    utterances: u64,
    interruptions: u64,
    pauses: u64,
    resumes: u64,
    voice_failures: u64,
    /// Synthesis time per sentence, ms.
    synth_ms: Vec<u64>,
    /// From the lead's speech ending (the server's `speaking: false`) to the agent's reply
    /// starting, ms.
    reply_ms: Vec<u64>,
    /// From the lead being in the room with media connected to the greeting's first packet.
    greeting_ms: Option<u64>,
    connected_ms: Option<u64>,
}

enum Outcome {
    /// The closing line was said.
    Finished,
    /// Ctrl-C or SIGTERM.
    Stopped,
    /// Nobody to talk to, the server closed the session, the meeting ended.
    Left(String),
    /// The media connection failed.
    Failed(String),
}

struct Agent {
    me: ParticipantId,
    voice: Arc<dyn Voice>,
    day: Date,
    lead_identity: Option<String>,
    lead_name: Option<String>,
    wait_ms: u64,
    /// Everyone else in the room, by participant id.
    people: HashMap<String, ParticipantInfo>,
    turns: Turns,
    /// Made at the greeting, when the lead's name is known.
    conv: Option<Conversation>,
    /// Finals heard from the lead before the greeting (scored, answer nothing).
    early: Vec<LeadAnswer>,
    score: LeadScore,
    playing: Option<Playing>,
    /// Interrupted utterance and the sentence it was cut in, for a resume.
    cut: Option<(Say, usize)>,
    /// Playback holds its place: a voice came over it, its words not known yet.
    paused: bool,
    packetizer: OpusPacketizer,
    pacer: Option<Pacer>,
    last_packet_ms: Option<u64>,
    audio: mpsc::UnboundedSender<AudioPacket>,
    /// Lead speakers whose final caption is still to come.
    awaiting_final: Vec<String>,
    /// A turn ended at this time; the agent waits for the final caption, then answers.
    speak_pending: Option<u64>,
    lead_seen_at: Option<u64>,
    had_lead: bool,
    alone_since: Option<u64>,
    greeted: bool,
    done_at: Option<u64>,
    /// When the lead last stopped speaking, for the reply latency.
    lead_stopped_at: Option<u64>,
    question_index: Option<usize>,
    events: Vec<Value>,
    stats: Stats,
}

impl Agent {
    fn now_ms(&self) -> u64 {
        started().elapsed().as_millis() as u64
    }

    fn record(&mut self, who: &str, kind: &str, text: &str, at_ms: u64) {
        log(format!("{who} {kind}: {text}"));
        self.events
            .push(json!({"at_ms": at_ms, "who": who, "kind": kind, "text": text}));
    }

    fn is_lead(&self, id: &str) -> bool {
        if id == self.me.as_str() {
            return false;
        }
        let Some(p) = self.people.get(id) else {
            return false;
        };
        p.role != Some(Role::Agent)
            && self
                .lead_identity
                .as_ref()
                .is_none_or(|want| *want == p.identity)
    }

    fn answers(&self) -> Vec<LeadAnswer> {
        let mut all = self.early.clone();
        if let Some(c) = &self.conv {
            all.extend_from_slice(c.answers());
        }
        all
    }

    async fn converse(&mut self, conn: &mut Conn) -> Outcome {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_turn_tick = 0u64;
        let mut last_ping = 0u64;
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    log("signal: leaving");
                    self.stop_playing();
                    return Outcome::Stopped;
                }
                msg = conn.events.recv() => match msg {
                    None => return Outcome::Left("the server closed the session".into()),
                    Some(m) => {
                        if let Some(o) = self.on_message(m) {
                            return o;
                        }
                    }
                },
                _ = tick.tick() => {
                    let now = self.now_ms();
                    let state = *conn.state.borrow();
                    if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
                        return Outcome::Failed(format!("media connection {state}"));
                    }
                    let connected = state == RTCPeerConnectionState::Connected;
                    if connected && self.stats.connected_ms.is_none() {
                        self.stats.connected_ms = Some(now);
                    }
                    self.play(now);
                    if now >= last_turn_tick + 100 {
                        last_turn_tick = now;
                        if let Some(d) = self.turns.on(TurnEvent::Tick, now) {
                            self.decide(d, now);
                        }
                        if let Some(o) = self.housekeeping(now, connected) {
                            return o;
                        }
                    }
                    if now >= last_ping + 15_000 {
                        last_ping = now;
                        let _ = conn.out.send(ClientMessage::Ping { id: Some(now) });
                    }
                }
            }
        }
    }

    fn on_message(&mut self, msg: ServerMessage) -> Option<Outcome> {
        let now = self.now_ms();
        match msg {
            ServerMessage::ParticipantJoined { participant } => {
                log(format!(
                    "{} ({}) joined",
                    participant.name, participant.identity
                ));
                self.people.insert(participant.id.to_string(), participant);
            }
            ServerMessage::ParticipantLeft { participant_id } => {
                let id = participant_id.to_string();
                if let Some(p) = self.people.remove(&id) {
                    log(format!("{} ({}) left", p.name, p.identity));
                }
                self.awaiting_final.retain(|s| *s != id);
                // Whoever leaves stops speaking.
                self.feed(TurnEvent::PersonStopped { who: id }, now);
            }
            ServerMessage::Speaking {
                participant_id,
                speaking,
            } => {
                let who = participant_id.to_string();
                if who == self.me.as_str() {
                    return None;
                }
                if speaking {
                    self.feed(TurnEvent::PersonStarted { who }, now);
                } else {
                    if self.is_lead(&who) {
                        self.lead_stopped_at = Some(now);
                        if !self.awaiting_final.contains(&who) {
                            self.awaiting_final.push(who.clone());
                        }
                    }
                    self.feed(TurnEvent::PersonStopped { who }, now);
                }
            }
            ServerMessage::Caption {
                participant_id,
                text,
                is_final,
                start_ms,
                ..
            } => {
                let who = participant_id.to_string();
                if who == self.me.as_str() {
                    // The server transcribing the agent's own voice.
                    return None;
                }
                if !is_final {
                    self.feed(TurnEvent::Transcript { who, text }, now);
                    return None;
                }
                self.awaiting_final.retain(|s| *s != who);
                if text == GAP_TEXT {
                    return None;
                }
                let text = text.trim().to_owned();
                if self.is_lead(&who) && is_speech(&text) {
                    // Acknowledgements are kept but answer nothing; anything else is an answer,
                    // even said over the agent (if it is three words or more).
                    // A word or two over the agent acknowledges, as the turn engine takes it
                    // (the server's clock is not ours, so "over" means "while it plays").
                    let backchannel = self.turns.acknowledges(&text, self.turns.agent_playing());
                    self.record(
                        "lead",
                        if backchannel { "backchannel" } else { "answer" },
                        &text,
                        start_ms,
                    );
                    if !backchannel {
                        match &mut self.conv {
                            Some(c) => c.hear(&text, start_ms),
                            None => self.early.push(LeadAnswer {
                                text: text.clone(),
                                at_ms: start_ms,
                                category: None,
                            }),
                        }
                        self.score = RuleScorer.score(&self.answers(), self.day);
                        log(format!(
                            "score {} ({})",
                            self.score.score,
                            self.score.band.as_str()
                        ));
                    }
                }
                self.feed(TurnEvent::Transcript { who, text }, now);
            }
            ServerMessage::MeetingEnded { reason } => {
                return Some(Outcome::Left(format!("meeting ended ({reason})")));
            }
            ServerMessage::Error { code, message } => {
                log(format!("server error {code:?}: {message}"));
            }
            ServerMessage::TrackPublished {
                participant_id,
                track,
            } => {
                if let Some(p) = self.people.get_mut(participant_id.as_str()) {
                    p.tracks.retain(|t| t.id != track.id);
                    p.tracks.push(track);
                }
            }
            _ => {}
        }
        None
    }

    /// Feeds the turn machine; a stop is applied at once, other decisions as they come.
    fn feed(&mut self, event: TurnEvent, now: u64) {
        if let Some(d) = self.turns.on(event, now) {
            self.decide(d, now);
        }
    }

    fn decide(&mut self, d: TurnDecision, now: u64) {
        match d {
            TurnDecision::Speak => {
                log(format!(
                    "turn over (waiting for {} final caption(s))",
                    self.awaiting_final.len()
                ));
                self.speak_pending = Some(now);
            }
            TurnDecision::Stop => self.cut_off(now),
            TurnDecision::Pause => {
                if self.playing.is_some() && !self.paused {
                    self.paused = true;
                    self.pacer = None;
                    self.stats.pauses += 1;
                    log("voice over the agent: paused");
                }
            }
            TurnDecision::Resume if self.paused => {
                self.paused = false;
                self.stats.resumes += 1;
                log("resumed where it paused");
            }
            TurnDecision::Resume => {
                if let Some((say, from)) = self.cut.take() {
                    self.stats.resumes += 1;
                    self.record("agent", "resumed", &say.text, now);
                    self.speak(say, from, now);
                }
            }
            TurnDecision::Reprompt => {
                if let Some(say) = self.conv.as_ref().and_then(|c| c.reprompt()) {
                    self.speak(say, 0, now);
                }
            }
            TurnDecision::MoveOn => {
                let score = self.score.clone();
                if let Some(say) = self.conv.as_mut().and_then(|c| c.move_on(&score)) {
                    self.speak(say, 0, now);
                }
            }
        }
    }

    /// Greets when a lead is here, answers finished turns, leaves when alone or done.
    fn housekeeping(&mut self, now: u64, connected: bool) -> Option<Outcome> {
        let people = self
            .people
            .values()
            .filter(|p| p.role != Some(Role::Agent))
            .count();
        if people == 0 {
            let since = *self.alone_since.get_or_insert(now);
            let limit = if self.had_lead {
                ALONE_LEAVE_MS
            } else {
                self.wait_ms
            };
            if now >= since + limit {
                return Some(Outcome::Left("nobody left to talk to".into()));
            }
        } else {
            self.alone_since = None;
        }
        let lead = self
            .people
            .keys()
            .find(|id| self.is_lead(id))
            .and_then(|id| self.people.get(id))
            .cloned();
        match &lead {
            Some(_) if connected => {
                self.had_lead = true;
                self.lead_seen_at.get_or_insert(now);
            }
            _ => self.lead_seen_at = None,
        }
        if !self.greeted
            && self.lead_seen_at.is_some_and(|t| now >= t + GREET_AFTER_MS)
            && !self.turns.someone_speaking()
            && self.playing.is_none()
        {
            self.greeted = true;
            let name = self
                .lead_name
                .clone()
                .or_else(|| lead.map(|l| l.name))
                .filter(|n| !n.starts_with("guest-"));
            let mut conv = Conversation::new(script(), name, self.day);
            let say = conv.opening();
            self.conv = Some(conv);
            self.speak(say, 0, now);
        }
        if let Some(t) = self.speak_pending
            && (self.awaiting_final.is_empty() || now >= t + FINAL_WAIT_MS)
        {
            self.speak_pending = None;
            self.answer_turn(now);
        }
        if let Some(t) = self.done_at
            && now >= t + LINGER_MS
        {
            return Some(Outcome::Finished);
        }
        None
    }

    /// The lead's turn is over and their words are in: say what comes next.
    fn answer_turn(&mut self, now: u64) {
        if self.playing.is_some() {
            return;
        }
        let Some(conv) = &mut self.conv else { return };
        if !conv.has_answer() {
            // Interrupted by words that were not the lead's answer: finish what was cut.
            if let Some((say, from)) = self.cut.take() {
                self.speak(say, from, now);
            }
            return;
        }
        self.cut = None;
        let score = self.score.clone();
        if let Some(say) = conv.next(&score) {
            self.speak(say, 0, now);
        }
    }

    /// Starts saying `say` from sentence `from`: synthesis runs on a blocking thread, a few
    /// sentences ahead of playback.
    fn speak(&mut self, say: Say, from: usize, now: u64) {
        let sentences = split_sentences(&say.text);
        let (tx, rx) = mpsc::channel(SYNTH_AHEAD);
        let voice = self.voice.clone();
        let todo: Vec<(usize, String)> = sentences.iter().cloned().enumerate().skip(from).collect();
        tokio::task::spawn_blocking(move || {
            for (i, s) in todo {
                let t = Instant::now();
                let r = voice.synthesize(&s);
                if tx.blocking_send((i, r, t.elapsed())).is_err() {
                    return;
                }
            }
        });
        self.stats.utterances += 1;
        if from == 0 {
            self.record("agent", say.kind.as_str(), &say.text, now);
        }
        if say.index.is_some() {
            self.question_index = say.index;
        }
        self.playing = Some(Playing {
            say,
            sentences,
            rx,
            queue: VecDeque::new(),
            current: None,
            from,
            synth_done: false,
            announced: false,
        });
    }

    fn send(&mut self, pkt: AudioPacket, now: u64) {
        let _ = self.audio.send(pkt);
        self.stats.packets += 1;
        self.last_packet_ms = Some(now);
    }

    /// Stops playing at once (barge-in), keeping where it was for a resume.
    fn cut_off(&mut self, now: u64) {
        self.paused = false;
        let Some(p) = self.playing.take() else {
            return;
        };
        let sentence = p.sentence().min(p.sentences.len().saturating_sub(1));
        self.stats.interruptions += 1;
        let cut_text = p.sentences.get(sentence).cloned().unwrap_or_default();
        self.record("agent", "interrupted", &cut_text, now);
        self.cut = Some((p.say, sentence));
        if let Ok(Some(pkt)) = self.packetizer.flush() {
            self.send(pkt, now);
        }
        self.pacer = None;
        self.turns.on(TurnEvent::AgentFinished, now);
    }

    fn stop_playing(&mut self) {
        self.paused = false;
        if self.playing.take().is_some() {
            let now = self.now_ms();
            if let Ok(Some(pkt)) = self.packetizer.flush() {
                self.send(pkt, now);
            }
        }
    }

    /// Sends the frames due now.
    fn play(&mut self, now: u64) {
        if self.paused {
            return;
        }
        let Some(p) = self.playing.as_mut() else {
            return;
        };
        loop {
            match p.rx.try_recv() {
                Ok((i, Ok(pcm), took)) => {
                    self.stats.synth_ms.push(took.as_millis() as u64);
                    p.queue.push_back((i, pcm));
                }
                Ok((i, Err(e), _)) => {
                    self.stats.voice_failures += 1;
                    log(format!(
                        "voice failed on {:?}: {e}; sentence skipped",
                        p.sentences[i]
                    ));
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    p.synth_done = true;
                    break;
                }
            }
        }
        if p.current.is_none() && p.queue.is_empty() {
            if p.synth_done {
                // Everything played.
                let p = self.playing.take().expect("playing");
                if let Ok(Some(pkt)) = self.packetizer.flush() {
                    self.send(pkt, now);
                }
                self.pacer = None;
                self.turns.on(TurnEvent::AgentFinished, now);
                log(format!("agent finished its {}", p.say.kind.as_str()));
                if p.say.kind == SayKind::Summary {
                    self.done_at = Some(now);
                } else if p.say.question
                    && self.conv.as_ref().is_some_and(|c| c.has_answer())
                    && !self.turns.someone_speaking()
                {
                    // The lead answered while the agent was still asking (a resumed question):
                    // that turn is over already, so go on rather than wait for another answer
                    // (the turn machine alone would re-prompt after its silence timeout).
                    self.speak_pending = Some(now);
                }
            } else {
                // Waiting for the voice: the pause restarts the pacer when audio comes.
                self.pacer = None;
            }
            return;
        }
        let pacer = match &mut self.pacer {
            Some(pc) => pc,
            None => {
                // (Re)start: the RTP clock moves on by the silence since the last packet.
                if let Some(last) = self.last_packet_ms {
                    let gap = now.saturating_sub(last) / 20;
                    if gap > 0 {
                        self.packetizer.pause(gap as u32);
                    }
                }
                self.pacer.insert(Pacer::new(now))
            }
        };
        let mut due = pacer.take_due(now);
        if due > MAX_BURST_FRAMES {
            self.stats.frames_skipped += due - MAX_BURST_FRAMES;
            due = MAX_BURST_FRAMES;
        }
        if !p.announced && due > 0 {
            p.announced = true;
            let text = p.say.text.clone();
            let question = p.say.question;
            let kind = p.say.kind;
            match kind {
                SayKind::Greeting => {
                    if self.stats.greeting_ms.is_none() {
                        self.stats.greeting_ms = self.lead_seen_at.map(|t| now.saturating_sub(t));
                    }
                }
                SayKind::Question | SayKind::FollowUp | SayKind::Summary => {
                    if let Some(t) = self.lead_stopped_at.take() {
                        self.stats.reply_ms.push(now.saturating_sub(t));
                        log(format!(
                            "reply starts {} ms after the lead stopped speaking",
                            now.saturating_sub(t)
                        ));
                    }
                }
                SayKind::Reprompt => {}
            }
            if let Some(TurnDecision::Stop) = self
                .turns
                .on(TurnEvent::AgentStarted { text, question }, now)
            {
                // Someone started speaking: never over a person.
                self.cut_off(now);
                return;
            }
        }
        let p = self.playing.as_mut().expect("playing");
        for _ in 0..due {
            let mut frame = [0i16; FRAME];
            let mut filled = 0;
            while filled < FRAME {
                if p.current.is_none() {
                    match p.queue.pop_front() {
                        Some((i, pcm)) => p.current = Some((i, pcm, 0)),
                        None => break,
                    }
                }
                let (_, pcm, pos) = p.current.as_mut().expect("current");
                let n = (FRAME - filled).min(pcm.len() - *pos);
                frame[filled..filled + n].copy_from_slice(&pcm[*pos..*pos + n]);
                filled += n;
                *pos += n;
                if *pos >= pcm.len() {
                    p.current = None;
                }
            }
            if filled == 0 {
                break;
            }
            match self.packetizer.push(&frame[..filled]) {
                Ok(packets) => {
                    for pkt in packets {
                        let _ = self.audio.send(pkt);
                        self.stats.packets += 1;
                        self.last_packet_ms = Some(now);
                    }
                }
                Err(e) => log(format!("audio not encoded: {e}")),
            }
        }
    }

    fn report(&self, outcome: &Outcome, room: &str) -> Value {
        let (status, reason) = match outcome {
            Outcome::Finished => ("finished", None),
            Outcome::Stopped => ("stopped", None),
            Outcome::Left(r) => ("left", Some(r.clone())),
            Outcome::Failed(r) => ("failed", Some(r.clone())),
        };
        let answers: Vec<Value> = self
            .answers()
            .iter()
            .map(|a| {
                json!({
                    "text": a.text,
                    "at_ms": a.at_ms,
                    "category": a.category.map(category_str),
                })
            })
            .collect();
        let total = self
            .conv
            .as_ref()
            .map_or(script().questions.len(), |c| c.len());
        json!({
            "status": status,
            "reason": reason,
            "room": room,
            "participant_id": self.me.as_str(),
            "voice": self.voice.name(),
            "question_index": self.question_index.map(|i| i + 1),
            "questions_total": total,
            "lead_score": score_json(&self.score),
            "answers": answers,
            "events": self.events,
            "stats": {
                "packets_sent": self.stats.packets,
                "frames_skipped": self.stats.frames_skipped,
                "utterances": self.stats.utterances,
                "interruptions": self.stats.interruptions,
                "pauses": self.stats.pauses,
                "resumes": self.stats.resumes,
                "voice_failures": self.stats.voice_failures,
                "synth_ms": self.stats.synth_ms,
                "reply_ms": self.stats.reply_ms,
                "greeting_ms": self.stats.greeting_ms,
                "connected_ms": self.stats.connected_ms,
            },
        })
    }
}

fn category_str(c: Category) -> &'static str {
    match c {
        Category::Budget => "budget",
        Category::Authority => "authority",
        Category::Need => "need",
        Category::Timeline => "timeline",
        Category::Other => "other",
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(args: Args) -> anyhow::Result<Value> {
    started();
    let voice = pick_voice(&args)?;
    log(format!("voice: {}", voice.name()));
    let day = match &args.meeting_day {
        Some(d) => {
            Date::parse_iso(d).ok_or_else(|| anyhow!("--meeting-day {d:?}: want YYYY-MM-DD"))?
        }
        None => today(),
    };
    let ep = endpoint(&args.server)?;
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            let t = guest_token(&ep, &args.room, &args.name).await?;
            log("using a guest token");
            t
        }
    };
    let mut conn = connect(&args, &ep, token).await?;
    let packetizer = OpusPacketizer::new(rand::random(), rand::random(), VOICE_BITRATE)?;
    let mut agent = Agent {
        me: conn.me.clone(),
        voice,
        day,
        lead_identity: args.lead_identity.clone(),
        lead_name: args.lead_name.clone(),
        wait_ms: args.wait_secs * 1_000,
        people: conn
            .participants
            .drain(..)
            .map(|p| (p.id.to_string(), p))
            .collect(),
        turns: Turns::new(TurnConfig::default()),
        conv: None,
        early: Vec::new(),
        score: RuleScorer.score(&[], day),
        playing: None,
        cut: None,
        paused: false,
        packetizer,
        pacer: None,
        last_packet_ms: None,
        audio: conn.audio.clone(),
        awaiting_final: Vec::new(),
        speak_pending: None,
        lead_seen_at: None,
        had_lead: false,
        alone_since: None,
        greeted: false,
        done_at: None,
        lead_stopped_at: None,
        question_index: None,
        events: Vec::new(),
        stats: Stats::default(),
    };
    log(format!("publishing audio with SSRC {}", conn.ssrc));
    let outcome = agent.converse(&mut conn).await;
    match &outcome {
        Outcome::Finished => log("conversation finished"),
        Outcome::Stopped => log("stopped"),
        Outcome::Left(r) => log(format!("leaving: {r}")),
        Outcome::Failed(r) => log(format!("failed: {r}")),
    }
    let report = agent.report(&outcome, &args.room);
    drop(agent);
    conn.leave().await;
    Ok(report)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(report) => {
            println!("{report}");
            let failed = report["status"] == "failed";
            if failed {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            log(format!("error: {e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}
