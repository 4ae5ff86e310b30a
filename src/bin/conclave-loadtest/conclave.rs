//! Conclave as a load target: started as its own process (pinned to a core), joined over its
//! signaling WebSocket.

use crate::peer::{self, Client};
use crate::{Join, Role};
use anyhow::{Context, bail};
use conclave::auth::{Grants, TokenAuthority, TokenRequest};
use conclave_signaling::{
    ClientMessage, IceCandidate, RoomName, ServerMessage, decode_server, encode,
};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::peer_connection::{RTCIceCandidateInit, RTCSessionDescription};

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const API_KEY: &str = "loadtest";
const API_SECRET: &str = "loadtest-secret-loadtest-secret-0123";

/// A running Conclave server.
pub struct Server {
    /// Its signaling address.
    pub http: SocketAddr,
    /// Its process id (for CPU and memory).
    pub pid: u32,
    child: Option<tokio::process::Child>,
    tokens: TokenAuthority,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Server {
    /// Starts `bin serve` on loopback, transcription off, limits opened for load, pinned to
    /// `cpu` if given.
    pub async fn start(
        bin: &Path,
        cpu: Option<usize>,
        log: &Path,
        extra: &[String],
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("conclave-loadtest-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let http: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut cmd = match cpu {
            Some(c) => {
                let mut t = tokio::process::Command::new("taskset");
                t.args(["-c", &c.to_string()]).arg(bin);
                t
            }
            None => tokio::process::Command::new(bin),
        };
        cmd.arg("serve")
            .args(["--http-addr", &http.to_string()])
            .args(["--udp-ip", "127.0.0.1"])
            .args(["--data-dir", dir.to_str().unwrap()])
            .args(["--api-key", API_KEY, "--api-secret", API_SECRET])
            .args(["--transcription", "false"])
            .args(["--auto-create-rooms", "true"])
            .args(["--max-participants", "1000"])
            .args(["--max-connections", "5000"])
            .args(["--max-connections-per-address", "5000"])
            .args(["--rate-limit-per-minute", "100000"])
            .args(extra)
            .args([
                "--log-level",
                &std::env::var("LOADTEST_SERVER_LOG").unwrap_or("warn".into()),
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(std::fs::OpenOptions::new().append(true).open(log)?)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("server exited at once")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(http).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "conclave did not listen on {http} within 30 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Server {
            http,
            pid,
            child: Some(child),
            tokens: TokenAuthority::new(API_KEY, API_SECRET),
            _dir: TempDir(dir),
        })
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
            if tokio::time::timeout(Duration::from_secs(5), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }

    /// The server's packet counters (what it received, wrote, dropped and skipped).
    pub async fn counters(&self) -> serde_json::Value {
        let Ok((200, text)) =
            crate::http::request(self.http, "GET", "/metrics", None, Duration::from_secs(5)).await
        else {
            return serde_json::Value::Null;
        };
        let mut m = serde_json::Map::new();
        for name in [
            "conclave_rtp_packets_in_total",
            "conclave_rtp_packets_out_total",
            "conclave_rtp_packets_dropped_total",
            "conclave_rtp_packets_skipped_total",
            "conclave_keyframe_requests_total",
            "conclave_foreign_packets_total",
        ] {
            if let Some(v) = crate::http::prometheus_value(&text, name) {
                m.insert(name.trim_start_matches("conclave_").into(), v.into());
            }
        }
        m.into()
    }

    fn token(&self, room: &str, identity: &str, role: &Role) -> String {
        self.tokens.issue(
            &TokenRequest {
                room: room.into(),
                identity: identity.into(),
                grants: Grants {
                    can_publish: matches!(role, Role::Publisher { .. }),
                    can_subscribe: matches!(role, Role::Subscriber { .. }),
                    ..Default::default()
                },
                ttl: Duration::from_secs(3600),
                ..Default::default()
            },
            SystemTime::now(),
        )
    }

    /// Joins one client: signaling, offer, trickled candidates, the server's later offers.
    pub async fn join(&self, j: Join) -> anyhow::Result<Client> {
        let opened = Instant::now();
        if let Role::Subscriber { stats, .. } = &j.role {
            stats.opened(opened);
        }
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(format!("ws://{}/ws", self.http)),
        )
        .await
        .context("signaling connect timed out")??;
        let (mut ws_tx, mut ws_rx) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if ws_tx.send(Message::Text(encode(&m).into())).await.is_err() {
                    break;
                }
            }
        });
        out_tx.send(ClientMessage::Join {
            room: RoomName::validate(&j.room).context("invalid room name")?,
            name: Some(j.identity.clone()),
            token: self.token(&j.room, &j.identity, &j.role),
        })?;
        let first = tokio::time::timeout(Duration::from_secs(10), ws_rx.next())
            .await
            .context("no joined message within 10 s")?
            .context("socket closed")??;
        match decode_server(first.to_text()?)? {
            ServerMessage::Joined { .. } => {}
            other => bail!("expected joined, got {other:?}"),
        }
        let light = match &j.role {
            Role::Subscriber {
                stats,
                window,
                video,
                light: true,
            } => Some((
                crate::light::Part::Receive {
                    stats: stats.clone(),
                    video: *video,
                },
                window,
            )),
            Role::Publisher {
                traffic,
                streams,
                sent,
                window,
                light: true,
            } => Some((
                crate::light::Part::Send {
                    traffic: *traffic,
                    stream: streams.0,
                    sent: sent.0.clone(),
                },
                window,
            )),
            _ => None,
        };
        if let Some((part, window)) = light {
            let light = crate::light::start(out_tx, ws_rx, writer, part, window.clone()).await?;
            return Ok(Client::Light(light));
        }
        let mut peer = match &j.role {
            Role::Subscriber {
                stats,
                window,
                video,
                ..
            } => {
                let p = peer::build(Some((stats.clone(), window.clone())), LOOPBACK).await?;
                peer::add_receivers(&p, *video).await?;
                p
            }
            Role::Publisher {
                traffic,
                streams,
                sent,
                window,
                ..
            } => {
                let mut p = peer::build(None, LOOPBACK).await?;
                peer::add_senders(
                    &mut p,
                    &j.identity,
                    *traffic,
                    *streams,
                    sent.clone(),
                    window.clone(),
                )
                .await?;
                p
            }
        };
        let offer = peer.pc.create_offer(None).await?;
        peer.pc.set_local_description(offer).await?;
        let sdp = peer
            .pc
            .local_description()
            .await
            .context("no local description")?
            .sdp;
        if j.candidates_first {
            // Some clients trickle what they have gathered before the offer goes out.
            tokio::time::sleep(Duration::from_millis(5)).await;
            while let Ok(c) = peer.candidates.try_recv() {
                out_tx.send(candidate_message(c))?;
            }
        }
        out_tx.send(ClientMessage::Offer { sdp })?;
        // Candidates go after the offer, as a browser sends them.
        let mut candidates = std::mem::replace(&mut peer.candidates, mpsc::unbounded_channel().1);
        let out = out_tx.clone();
        let trickle = tokio::spawn(async move {
            while let Some(c) = candidates.recv().await {
                let _ = out.send(candidate_message(c));
            }
        });
        let pc = peer.pc.clone();
        let reader = tokio::spawn(async move {
            let _keep = out_tx;
            while let Some(Ok(frame)) = ws_rx.next().await {
                let Ok(text) = frame.to_text() else { continue };
                let Ok(msg) = decode_server(text) else {
                    continue;
                };
                let r: anyhow::Result<()> = async {
                    match msg {
                        ServerMessage::Answer { sdp } => {
                            pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
                                .await?;
                        }
                        ServerMessage::Offer { sdp } => {
                            pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
                                .await?;
                            let answer = pc.create_answer(None).await?;
                            pc.set_local_description(answer).await?;
                            let sdp = pc.local_description().await.context("no answer")?.sdp;
                            _keep.send(ClientMessage::Answer { sdp })?;
                        }
                        ServerMessage::Candidate { candidate }
                            if !candidate.candidate.is_empty() =>
                        {
                            pc.add_ice_candidate(RTCIceCandidateInit {
                                candidate: candidate.candidate,
                                sdp_mid: candidate.sdp_mid,
                                sdp_mline_index: candidate.sdp_m_line_index,
                                username_fragment: candidate.username_fragment,
                                ..Default::default()
                            })
                            .await?;
                        }
                        ServerMessage::Error { code, message, .. } => {
                            eprintln!("server error: {code:?}: {message}");
                        }
                        _ => {}
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = r {
                    eprintln!("signaling: {e:#}");
                }
            }
        });
        peer.tasks.extend([writer, trickle, reader]);
        Ok(Client::Webrtc(peer))
    }
}

fn candidate_message(c: RTCIceCandidateInit) -> ClientMessage {
    ClientMessage::Candidate {
        candidate: IceCandidate {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_m_line_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
        },
    }
}

/// A TCP port free on loopback now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
