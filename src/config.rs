//! Server settings, merged from a TOML file, `CONCLAVE_*` environment variables and flags.
//!
//! Precedence: a flag beats its environment variable (clap reads both), which beats the file,
//! which beats the built-in default.

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Members per room unless configured: a large meeting, well within one node's forwarding.
pub const DEFAULT_MAX_PARTICIPANTS: usize = 100;
/// TCP connections at once unless configured (well under a default 65,536-descriptor limit,
/// leaving room for UDP sockets: one per participant).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// TCP connections at once from one address unless configured (a NAT of an office, or a
/// load test from one machine, needs many).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

/// Flags (and their environment variables) of `conclave serve`. Every field is optional so
/// that an unset flag falls through to the file and then to the default.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "CONCLAVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP/WebSocket listen address.
    #[arg(long, env = "CONCLAVE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// IP address the WebRTC UDP sockets bind to (never a wildcard: see docs/configuration).
    #[arg(long, env = "CONCLAVE_UDP_IP")]
    pub udp_ip: Option<IpAddr>,
    /// Lowest UDP port for WebRTC (default 50000; 0 with --udp-port-max 0 means any free
    /// port, which leaves TURN relays able to reach every port of this host's address).
    #[arg(long, env = "CONCLAVE_UDP_PORT_MIN")]
    pub udp_port_min: Option<u16>,
    /// Highest UDP port for WebRTC (default 60000).
    #[arg(long, env = "CONCLAVE_UDP_PORT_MAX")]
    pub udp_port_max: Option<u16>,
    /// Public IP advertised in ICE candidates instead of the bound one (1:1 NAT).
    #[arg(long, env = "CONCLAVE_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// Which media stack carries participants: `worker` (the media plane, the default: one UDP
    /// socket on the first free port of the UDP range, driven by one thread; see
    /// docs/performance.md) or `webrtc` (a webrtc-rs PeerConnection per participant).
    #[arg(long, env = "CONCLAVE_MEDIA_PLANE")]
    pub media_plane: Option<String>,
    /// Run the embedded TURN server.
    #[arg(long, env = "CONCLAVE_TURN_ENABLED")]
    pub turn_enabled: Option<bool>,
    /// UDP port of the embedded TURN server.
    #[arg(long, env = "CONCLAVE_TURN_PORT")]
    pub turn_port: Option<u16>,
    /// TURN realm.
    #[arg(long, env = "CONCLAVE_TURN_REALM")]
    pub turn_realm: Option<String>,
    /// Lifetime of the TURN credentials handed out at join, in seconds.
    #[arg(long, env = "CONCLAVE_TURN_TTL_SECS")]
    pub turn_ttl_secs: Option<u64>,
    /// Lowest UDP port for TURN relay sockets (default 40000; must not overlap the WebRTC range).
    #[arg(long, env = "CONCLAVE_TURN_RELAY_PORT_MIN")]
    pub turn_relay_port_min: Option<u16>,
    /// Highest UDP port for TURN relay sockets (default 49999).
    #[arg(long, env = "CONCLAVE_TURN_RELAY_PORT_MAX")]
    pub turn_relay_port_max: Option<u16>,
    /// Allocations one TURN credential may hold at once.
    #[arg(long, env = "CONCLAVE_TURN_ALLOCATIONS_PER_USER")]
    pub turn_allocations_per_user: Option<usize>,
    /// Allocations one client address may hold at once.
    #[arg(long, env = "CONCLAVE_TURN_ALLOCATIONS_PER_ADDRESS")]
    pub turn_allocations_per_address: Option<usize>,
    /// Directory for the database, models and generated keys.
    #[arg(long, env = "CONCLAVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter (`info`, `debug`, `conclave=debug,webrtc=warn`, ...).
    #[arg(long, env = "CONCLAVE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "CONCLAVE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// API key that signs access tokens (its name, put in the token's `iss`).
    #[arg(long, env = "CONCLAVE_API_KEY")]
    pub api_key: Option<String>,
    /// API secret (HS256 key) for access tokens.
    #[arg(long, env = "CONCLAVE_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    /// Development mode: generate (and keep in the data directory) an API key pair if none is
    /// configured, and print it.
    #[arg(long, env = "CONCLAVE_DEV")]
    pub dev: bool,
    /// Largest signaling message accepted, in bytes.
    #[arg(long, env = "CONCLAVE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Create rooms on first join (otherwise rooms must be created through the API).
    #[arg(long, env = "CONCLAVE_AUTO_CREATE_ROOMS")]
    pub auto_create_rooms: Option<bool>,
    /// Most members one room holds; joins beyond it are refused with `room_full`.
    #[arg(long, env = "CONCLAVE_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
    /// Let anyone with the room link get a guest token (`POST /api/rooms/{room}/guest-token`).
    #[arg(long, env = "CONCLAVE_GUEST_ACCESS")]
    pub guest_access: Option<bool>,
    /// Database URL: empty for SQLite in the data directory, or `postgres://...`.
    #[arg(long, env = "CONCLAVE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Seconds a meeting waits for a departed host before handing over or ending.
    #[arg(long, env = "CONCLAVE_HOST_GRACE_SECS")]
    pub host_grace_secs: Option<u64>,
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "CONCLAVE_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "CONCLAVE_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Seconds a connection may stay silent both ways (WebSockets included; the server pings joined sockets every third of it).
    #[arg(long, env = "CONCLAVE_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a signaling socket has to send `join` after it opens.
    #[arg(long, env = "CONCLAVE_JOIN_TIMEOUT_SECS")]
    pub join_timeout_secs: Option<u64>,
    /// Requests per minute one client address may make to the endpoints that create
    /// meetings, rooms and tokens or check passwords (bursts of a third of it).
    #[arg(long, env = "CONCLAVE_RATE_LIMIT_PER_MINUTE")]
    pub rate_limit_per_minute: Option<u32>,
    /// Password hashes computed at once (each takes 19 MiB and a core for ~50 ms); more wait.
    #[arg(long, env = "CONCLAVE_PASSWORD_HASHES")]
    pub password_hashes: Option<usize>,
    /// PEM certificate chain: serve HTTPS and WSS directly (with `--tls-key`).
    #[arg(long, env = "CONCLAVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "CONCLAVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a room created through the API may stay empty before it is removed.
    #[arg(long, env = "CONCLAVE_EMPTY_ROOM_TTL_SECS")]
    pub empty_room_ttl_secs: Option<u64>,
    /// Bearer token that `/metrics` and `/api/stats` require (unset: they are public, as
    /// when a firewall keeps them internal).
    #[arg(long, env = "CONCLAVE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// TCP connections open at once (HTTP and WebSocket).
    #[arg(long, env = "CONCLAVE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// TCP connections open at once from one client address.
    #[arg(long, env = "CONCLAVE_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Live transcription of rooms (needs a Whisper model).
    #[arg(long, env = "CONCLAVE_TRANSCRIPTION")]
    pub transcription: Option<bool>,
    /// Whisper model in ggml format (default: the `--model`'s file in `<data_dir>/models/`,
    /// installed by `conclave model install`).
    #[arg(long, env = "CONCLAVE_WHISPER_MODEL")]
    pub whisper_model: Option<PathBuf>,
    /// Which installed Whisper to use: `tiny.en` (default) or `base`.
    #[arg(long, env = "CONCLAVE_MODEL")]
    pub model: Option<String>,
    /// Spoken language for a multilingual model: a Whisper code (`en`, `de`, ...) or `auto`.
    /// English-only models always use `en`.
    #[arg(long, env = "CONCLAVE_LANGUAGE")]
    pub language: Option<String>,
    /// Threads per Whisper transcription (fixed: no bursting when set).
    #[arg(long, env = "CONCLAVE_WHISPER_THREADS")]
    pub whisper_threads: Option<usize>,
    /// Silence that ends an utterance, ms (default 300 with Silero, 500 with webrtc-vad).
    #[arg(long, env = "CONCLAVE_ENDPOINT_SILENCE_MS")]
    pub endpoint_silence_ms: Option<u64>,
    /// Transcriptions run at once (worker threads of the pool).
    #[arg(long, env = "CONCLAVE_TRANSCRIPTION_WORKERS")]
    pub transcription_workers: Option<usize>,
    /// Transcription jobs queued or running per room before new ones are dropped.
    #[arg(long, env = "CONCLAVE_MAX_TRANSCRIPTIONS_PER_ROOM")]
    pub max_transcriptions_per_room: Option<usize>,
    /// Transcription jobs queued or running on the server before new ones are dropped.
    #[arg(long, env = "CONCLAVE_MAX_TRANSCRIPTIONS")]
    pub max_transcriptions: Option<usize>,
    /// webrtc-vad aggressiveness, 0 (most sensitive) to 3, for when webrtc-vad is in use.
    #[arg(long, env = "CONCLAVE_VAD_AGGRESSIVENESS")]
    pub vad_aggressiveness: Option<u8>,
    /// Voice detector in front of Whisper: `silero` (default; falls back to `webrtc` when its
    /// files are missing) or `webrtc`.
    #[arg(long, env = "CONCLAVE_VAD")]
    pub vad: Option<String>,
    /// Silero VAD model (default `<data_dir>/models/silero_vad.onnx`, from `conclave model install`).
    #[arg(long, env = "CONCLAVE_SILERO_MODEL")]
    pub silero_model: Option<PathBuf>,
    /// Smart Turn end-of-turn model the agents' turn-taking uses (default
    /// `<data_dir>/turn/smart-turn-v3.2-cpu.onnx`, from `conclave model install`; absent:
    /// turns end on silence and words alone).
    #[arg(long, env = "CONCLAVE_TURN_MODEL")]
    pub turn_model: Option<PathBuf>,
    /// ONNX Runtime library that runs Silero (default `<data_dir>/models/libonnxruntime.so.1.31.1`).
    #[arg(long, env = "CONCLAVE_ONNXRUNTIME")]
    pub onnxruntime: Option<PathBuf>,
    /// Speech probability at which Silero starts an utterance (0.05-0.95).
    #[arg(long, env = "CONCLAVE_VAD_THRESHOLD")]
    pub vad_threshold: Option<f32>,
    /// The agents' voice: `auto` (default: Piper when installed, else flite, else espeak-ng),
    /// `piper`, `flite`, `espeak-ng` or `none`.
    #[arg(long, env = "CONCLAVE_VOICE")]
    pub voice: Option<String>,
    /// AI agents the server runs at once.
    #[arg(long, env = "CONCLAVE_MAX_AGENTS")]
    pub max_agents: Option<usize>,
    /// SMTP server for meeting email (invitations, reminders, summaries): `smtp://host:port`,
    /// `smtp://host?tls=required`, `smtps://user:password@host:465`. Absent: no email.
    #[arg(long, env = "CONCLAVE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of meeting email, `Name <address>`.
    #[arg(long, env = "CONCLAVE_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// How often queued email is sent, ms (0: never, in this process).
    #[arg(long, env = "CONCLAVE_EMAIL_TICK_MS")]
    pub email_tick_ms: Option<u64>,
    /// How often due webhook deliveries are sent, ms (0: never, in this process).
    #[arg(long, env = "CONCLAVE_WEBHOOK_TICK_MS")]
    pub webhook_tick_ms: Option<u64>,
    /// Scheduler tick, ms (0: no scheduler loop in this process).
    #[arg(long, env = "CONCLAVE_SCHEDULER_TICK_MS")]
    pub scheduler_tick_ms: Option<u64>,
    /// A scheduled meeting's room opens this many minutes before its start.
    #[arg(long, env = "CONCLAVE_READY_LEAD_MINUTES")]
    pub ready_lead_minutes: Option<i64>,
    /// A scheduled meeting nobody came to is missed this many minutes after its end.
    #[arg(long, env = "CONCLAVE_MISSED_GRACE_MINUTES")]
    pub missed_grace_minutes: Option<i64>,
    /// Piper voice model (default `<data_dir>/voices/en_US-joe-medium.onnx`, from `conclave
    /// model install`); its config is the same path with `.json` added.
    #[arg(long, env = "CONCLAVE_PIPER_MODEL")]
    pub piper_model: Option<PathBuf>,
    /// Redis URL (`redis://host:6379`): this node joins the cluster of nodes sharing it; rooms
    /// are pinned to nodes and signaling is relayed (docs/cluster.md). Absent: one node.
    #[arg(long, env = "CONCLAVE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's id in the cluster (default: a fresh random one at each start).
    #[arg(long, env = "CONCLAVE_NODE_ID")]
    pub node_id: Option<String>,
    /// URL of this node's HTTP/WebSocket as other nodes and operators reach it (default
    /// `http://<http_addr>`).
    #[arg(long, env = "CONCLAVE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Prefix of the cluster's Redis keys and channels (clusters can share one Redis).
    #[arg(long, env = "CONCLAVE_CLUSTER_PREFIX")]
    pub cluster_prefix: Option<String>,
    /// A node whose registration is this old is dead and loses its rooms, ms (default 5000;
    /// it heartbeats every fifth of it).
    #[arg(long, env = "CONCLAVE_NODE_TTL_MS")]
    pub node_ttl_ms: Option<u64>,
    /// Start draining: no new rooms are placed here; rooms already here run to their end.
    #[arg(long, env = "CONCLAVE_DRAIN")]
    pub drain: bool,
    /// Shared secret of the TURN credentials (every node of a cluster needs the same one;
    /// default: a random one per process, enough for one node).
    #[arg(long, env = "CONCLAVE_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
}

/// The `[...]` tables of the TOML file; field names match the flags with `_`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http_addr: Option<SocketAddr>,
    udp_ip: Option<IpAddr>,
    udp_port_min: Option<u16>,
    udp_port_max: Option<u16>,
    public_ip: Option<IpAddr>,
    media_plane: Option<String>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    log_format: Option<String>,
    api_key: Option<String>,
    api_secret: Option<String>,
    max_message_bytes: Option<usize>,
    auto_create_rooms: Option<bool>,
    max_participants: Option<usize>,
    guest_access: Option<bool>,
    database_url: Option<String>,
    host_grace_secs: Option<u64>,
    header_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    join_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    rate_limit_per_minute: Option<u32>,
    password_hashes: Option<usize>,
    metrics_token: Option<String>,
    empty_room_ttl_secs: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    redis_url: Option<String>,
    node_id: Option<String>,
    advertise_url: Option<String>,
    cluster_prefix: Option<String>,
    node_ttl_ms: Option<u64>,
    #[serde(default)]
    turn: FileTurn,
    #[serde(default)]
    transcription: FileTranscription,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTranscription {
    enabled: Option<bool>,
    whisper_model: Option<PathBuf>,
    model: Option<String>,
    language: Option<String>,
    whisper_threads: Option<usize>,
    endpoint_silence_ms: Option<u64>,
    workers: Option<usize>,
    max_per_room: Option<usize>,
    max_per_server: Option<usize>,
    vad_aggressiveness: Option<u8>,
    vad: Option<String>,
    silero_model: Option<PathBuf>,
    turn_model: Option<PathBuf>,
    onnxruntime: Option<PathBuf>,
    vad_threshold: Option<f32>,
}

/// Live transcription settings.
#[derive(Debug, Clone)]
pub struct TranscriptionSettings {
    /// On unless turned off; without a model the server runs without it and says so.
    pub enabled: bool,
    /// ggml model file.
    pub whisper_model: PathBuf,
    /// Language passed to Whisper (`en`, another code, or `auto`).
    pub language: String,
    /// Threads per transcription.
    pub whisper_threads: usize,
    /// Threads a transcription may use while the rest of the machine is idle.
    pub whisper_burst_threads: usize,
    /// Endpointing silence override, ms.
    pub endpoint_silence_ms: Option<u64>,
    /// Concurrent transcriptions.
    pub workers: usize,
    /// Per-room job limit.
    pub max_per_room: usize,
    /// Server-wide job limit.
    pub max_per_server: usize,
    /// 0-3.
    pub vad_aggressiveness: u8,
    /// Use Silero (true) or webrtc-vad only (false).
    pub silero: bool,
    /// Silero's model file.
    pub silero_model: PathBuf,
    /// Smart Turn's model file (used when it exists and ONNX Runtime loads).
    pub turn_model: PathBuf,
    /// ONNX Runtime's shared library.
    pub onnxruntime: PathBuf,
    /// Silero's start threshold.
    pub vad_threshold: f32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTurn {
    enabled: Option<bool>,
    port: Option<u16>,
    realm: Option<String>,
    ttl_secs: Option<u64>,
    relay_port_min: Option<u16>,
    relay_port_max: Option<u16>,
    allocations_per_user: Option<usize>,
    allocations_per_address: Option<usize>,
    secret: Option<String>,
}

/// TURN settings.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// Whether the embedded TURN server runs.
    pub enabled: bool,
    /// Its UDP port (0 = any free port, mostly for tests).
    pub port: u16,
    /// Realm in TURN authentication.
    pub realm: String,
    /// Lifetime of handed-out credentials.
    pub ttl_secs: u64,
    /// Inclusive UDP port range of relay sockets.
    pub relay_ports: (u16, u16),
    /// Allocations one credential may hold at once.
    pub allocations_per_user: usize,
    /// Allocations one client address may hold at once.
    pub allocations_per_address: usize,
    /// Shared secret of the credentials, when configured (else one per process).
    pub secret: Option<String>,
}

/// Cluster settings (`--redis-url` given).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Redis URL.
    pub redis_url: String,
    /// This node's id.
    pub node_id: String,
    /// This node's HTTP URL as others reach it.
    pub advertise_url: Option<String>,
    /// Prefix of keys and channels.
    pub prefix: String,
    /// Age at which a node's registration counts as dead.
    pub node_ttl: std::time::Duration,
}

/// Fully resolved settings of a running server.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP/WebSocket listen address.
    pub http_addr: SocketAddr,
    /// IP the WebRTC UDP sockets bind to.
    pub udp_ip: IpAddr,
    /// Inclusive UDP port range; `(0, 0)` means ephemeral ports.
    pub udp_ports: (u16, u16),
    /// IP advertised in ICE candidates, when different from `udp_ip`.
    pub public_ip: Option<IpAddr>,
    /// Participants' media on the plane's worker instead of a PeerConnection each.
    pub media_plane_worker: bool,
    /// TURN settings.
    pub turn: TurnSettings,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log filter.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// API key name, if configured.
    pub api_key: Option<String>,
    /// API secret, if configured.
    pub api_secret: Option<String>,
    /// Development mode.
    pub dev: bool,
    /// Largest signaling message, bytes.
    pub max_message_bytes: usize,
    /// Create rooms on first join.
    pub auto_create_rooms: bool,
    /// Most members per room.
    pub max_participants: usize,
    /// Hand out guest tokens to anyone with the link.
    pub guest_access: bool,
    /// Database URL; empty means SQLite in the data directory.
    pub database_url: String,
    /// Host-leave grace period.
    pub host_grace: std::time::Duration,
    /// Time for a request's headers.
    pub header_timeout: std::time::Duration,
    /// Time for a request's body.
    pub body_timeout: std::time::Duration,
    /// Idle time after which a connection is closed.
    pub idle_timeout: std::time::Duration,
    /// Time for a socket's `join`.
    pub join_timeout: std::time::Duration,
    /// TCP connections at once.
    pub max_connections: usize,
    /// TCP connections at once per client address.
    pub max_connections_per_address: usize,
    /// Guarded requests per minute per client address.
    pub rate_limit_per_minute: u32,
    /// Password hashes at once.
    pub password_hashes: usize,
    /// Token `/metrics` and `/api/stats` require, if any.
    pub metrics_token: Option<String>,
    /// How long an API-created room may stay empty.
    pub empty_room_ttl: std::time::Duration,
    /// Certificate and key files when serving TLS directly.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Live transcription.
    pub transcription: TranscriptionSettings,
    /// The agents' voice engine: `auto`, `piper`, `flite`, `espeak-ng` or `none`.
    pub voice: String,
    /// AI agents at once.
    pub max_agents: usize,
    /// The scheduler's settings.
    pub scheduler: crate::schedule::SchedulerConfig,
    /// Webhook delivery settings.
    pub webhooks: crate::notify::WebhookConfig,
    /// Meeting email, when an SMTP server is configured.
    pub smtp: Option<crate::notify::email::MailConfig>,
    /// Piper voice model and its JSON config.
    pub piper: (PathBuf, PathBuf),
    /// Several nodes on one Redis, when configured.
    pub cluster: Option<ClusterSettings>,
    /// Start draining (no new rooms here).
    pub drain: bool,
}

impl Config {
    /// Merges flags/environment over the file named by `--config` (if any) over defaults.
    pub fn load(args: ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let udp_ports = (
            args.udp_port_min.or(file.udp_port_min).unwrap_or(50_000),
            args.udp_port_max.or(file.udp_port_max).unwrap_or(60_000),
        );
        let relay_ports = (
            args.turn_relay_port_min
                .or(file.turn.relay_port_min)
                .unwrap_or(40_000),
            args.turn_relay_port_max
                .or(file.turn.relay_port_max)
                .unwrap_or(49_999),
        );
        let media_plane_worker = match args
            .media_plane
            .clone()
            .or(file.media_plane.clone())
            .as_deref()
        {
            None | Some("worker") => true,
            Some("webrtc") => false,
            Some(other) => bail!("media_plane must be `webrtc` or `worker`, not `{other}`"),
        };
        if udp_ports.0 > udp_ports.1 {
            bail!(
                "udp_port_min ({}) is above udp_port_max ({})",
                udp_ports.0,
                udp_ports.1
            );
        }
        let udp_ip = args
            .udp_ip
            .or(file.udp_ip)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        if udp_ip.is_unspecified() {
            bail!(
                "udp_ip {udp_ip} is a wildcard; webrtc-rs would skip loopback. Bind a concrete \
                 address and set public_ip for what clients should reach"
            );
        }
        let data_dir_for_model = args
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("data"));
        let max_message_bytes = args
            .max_message_bytes
            .or(file.max_message_bytes)
            .unwrap_or(64 * 1024);
        if max_message_bytes < 1024 {
            bail!("max_message_bytes must be at least 1024");
        }
        let voice = args.voice.clone().unwrap_or_else(|| "auto".into());
        if !["auto", "piper", "flite", "espeak-ng", "none"].contains(&voice.as_str()) {
            bail!("voice must be auto, piper, flite, espeak-ng or none, not {voice:?}");
        }
        let max_agents = args.max_agents.unwrap_or(8).max(1);
        let mut scheduler = crate::schedule::SchedulerConfig::default();
        if let Some(ms) = args.scheduler_tick_ms {
            scheduler.tick = std::time::Duration::from_millis(ms);
        }
        if let Some(m) = args.ready_lead_minutes {
            if !(0..=24 * 60).contains(&m) {
                bail!("ready_lead_minutes must be 0-1440");
            }
            scheduler.lead_ms = m * 60_000;
        }
        if let Some(m) = args.missed_grace_minutes {
            if !(0..=24 * 60).contains(&m) {
                bail!("missed_grace_minutes must be 0-1440");
            }
            scheduler.grace_ms = m * 60_000;
        }
        let piper = match &args.piper_model {
            Some(m) => (m.clone(), PathBuf::from(format!("{}.json", m.display()))),
            None => {
                let f = conclave_model::voice_paths(&data_dir_for_model);
                (f.model, f.config)
            }
        };
        let turn_secret = args
            .turn_secret
            .clone()
            .or(file.turn.secret.clone())
            .filter(|s| !s.is_empty());
        let redis_url = args
            .redis_url
            .clone()
            .or(file.redis_url.clone())
            .filter(|u| !u.is_empty());
        let cluster = match redis_url {
            None => None,
            Some(redis_url) => {
                let node_id = args
                    .node_id
                    .clone()
                    .or(file.node_id.clone())
                    .unwrap_or_else(|| format!("ND_{}", crate::ids::random_id(8)));
                if node_id.is_empty()
                    || node_id.len() > 64
                    || !node_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    bail!("node_id must be 1-64 letters, digits, '-', '_' or '.'");
                }
                let ttl_ms = args.node_ttl_ms.or(file.node_ttl_ms).unwrap_or(5_000);
                if !(500..=600_000).contains(&ttl_ms) {
                    bail!("node_ttl_ms must be 500-600000");
                }
                let turn_on = args.turn_enabled.or(file.turn.enabled).unwrap_or(true);
                if turn_on && turn_secret.is_none() {
                    bail!(
                        "a cluster needs a shared TURN secret (--turn-secret or turn.secret) so that credentials one node hands out are valid on the others, or TURN off (--turn-enabled false)"
                    );
                }
                Some(ClusterSettings {
                    redis_url,
                    node_id,
                    advertise_url: args
                        .advertise_url
                        .clone()
                        .or(file.advertise_url.clone())
                        .map(|u| u.trim_end_matches('/').to_owned()),
                    prefix: args
                        .cluster_prefix
                        .clone()
                        .or(file.cluster_prefix.clone())
                        .unwrap_or_else(|| "conclave".into()),
                    node_ttl: std::time::Duration::from_millis(ttl_ms),
                })
            }
        };
        if let Some(c) = &cluster {
            // The scheduler's log names the node that acted: the cluster's name for it.
            scheduler.node = c.node_id.clone();
        }
        Ok(Config {
            cluster,
            drain: args.drain,
            piper,
            voice,
            max_agents,
            scheduler,
            smtp: args
                .smtp_url
                .clone()
                .map(|url| crate::notify::email::MailConfig {
                    url,
                    from: args
                        .smtp_from
                        .clone()
                        .unwrap_or_else(|| "Conclave <conclave@localhost>".to_owned()),
                    tick: std::time::Duration::from_millis(args.email_tick_ms.unwrap_or(1_000)),
                }),
            webhooks: crate::notify::WebhookConfig {
                tick: std::time::Duration::from_millis(args.webhook_tick_ms.unwrap_or(500)),
                ..Default::default()
            },
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            udp_ip,
            udp_ports,
            public_ip: args.public_ip.or(file.public_ip),
            media_plane_worker,
            turn: TurnSettings {
                enabled: args.turn_enabled.or(file.turn.enabled).unwrap_or(true),
                port: args.turn_port.or(file.turn.port).unwrap_or(3478),
                realm: args
                    .turn_realm
                    .or(file.turn.realm)
                    .unwrap_or_else(|| "conclave".into()),
                ttl_secs: args.turn_ttl_secs.or(file.turn.ttl_secs).unwrap_or(86_400),
                relay_ports,
                allocations_per_user: args
                    .turn_allocations_per_user
                    .or(file.turn.allocations_per_user)
                    .unwrap_or(5),
                allocations_per_address: args
                    .turn_allocations_per_address
                    .or(file.turn.allocations_per_address)
                    .unwrap_or(32),
                secret: turn_secret,
            },
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("data")),
            log_level: args
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or_else(|| "text".into()),
            api_key: args.api_key.or(file.api_key),
            api_secret: args.api_secret.or(file.api_secret),
            dev: args.dev,
            max_message_bytes,
            auto_create_rooms: args
                .auto_create_rooms
                .or(file.auto_create_rooms)
                .unwrap_or(true),
            max_participants: args
                .max_participants
                .or(file.max_participants)
                .unwrap_or(DEFAULT_MAX_PARTICIPANTS)
                .max(1),
            guest_access: args.guest_access.or(file.guest_access).unwrap_or(true),
            database_url: args.database_url.or(file.database_url).unwrap_or_default(),
            host_grace: std::time::Duration::from_secs(
                args.host_grace_secs.or(file.host_grace_secs).unwrap_or(30),
            ),
            header_timeout: std::time::Duration::from_secs(
                args.header_timeout_secs
                    .or(file.header_timeout_secs)
                    .unwrap_or(10)
                    .max(1),
            ),
            body_timeout: std::time::Duration::from_secs(
                args.body_timeout_secs
                    .or(file.body_timeout_secs)
                    .unwrap_or(10)
                    .max(1),
            ),
            idle_timeout: std::time::Duration::from_secs(
                args.idle_timeout_secs
                    .or(file.idle_timeout_secs)
                    .unwrap_or(30)
                    .max(1),
            ),
            join_timeout: std::time::Duration::from_secs(
                args.join_timeout_secs
                    .or(file.join_timeout_secs)
                    .unwrap_or(10)
                    .max(1),
            ),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                .max(1),
            max_connections_per_address: args
                .max_connections_per_address
                .or(file.max_connections_per_address)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)
                .max(1),
            rate_limit_per_minute: args
                .rate_limit_per_minute
                .or(file.rate_limit_per_minute)
                .unwrap_or(60)
                .max(1),
            tls: match (
                args.tls_cert.or(file.tls_cert),
                args.tls_key.or(file.tls_key),
            ) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => bail!("tls_cert and tls_key go together: set both or neither"),
            },
            empty_room_ttl: std::time::Duration::from_secs(
                args.empty_room_ttl_secs
                    .or(file.empty_room_ttl_secs)
                    .unwrap_or(24 * 3600)
                    .max(1),
            ),
            metrics_token: args
                .metrics_token
                .or(file.metrics_token)
                .filter(|t| !t.is_empty()),
            password_hashes: args
                .password_hashes
                .or(file.password_hashes)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
                .max(1),
            transcription: {
                let t = file.transcription;
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                // Whisper threads spin at barriers, so they must not outnumber the cores
                // tokio leaves free: a quarter of the cores (at least one) stays with
                // forwarding, the rest is split into workers of up to two threads each
                // (1 x 1 on 2 cores, 3 x 2 on 8). Workers also run at a lower priority.
                let fixed_threads = args.whisper_threads.or(t.whisper_threads);
                let budget = match fixed_threads {
                    Some(threads) => conclave_media::pool::ThreadBudget::with_threads_per_job(
                        cores,
                        threads.max(1),
                    ),
                    None => conclave_media::pool::ThreadBudget::for_cores(cores),
                };
                let threads = budget.threads_per_job;
                // Unless the threads were fixed, a job may take two while nothing else
                // runs on the machine (the budget's count is for a busy machine).
                let burst_threads = match fixed_threads {
                    Some(_) => threads,
                    None => threads.max(cores.min(2)),
                };
                let workers = args
                    .transcription_workers
                    .or(t.workers)
                    .unwrap_or(budget.workers)
                    .max(1);
                let vad = args
                    .vad_aggressiveness
                    .or(t.vad_aggressiveness)
                    .unwrap_or(2);
                if vad > 3 {
                    bail!("vad_aggressiveness must be 0-3");
                }
                let silero = match args.vad.or(t.vad).as_deref() {
                    None | Some("silero") => true,
                    Some("webrtc") => false,
                    Some(other) => bail!("vad must be `silero` or `webrtc`, not {other:?}"),
                };
                let vad_threshold = args.vad_threshold.or(t.vad_threshold).unwrap_or(0.5);
                if !(0.05..=0.95).contains(&vad_threshold) {
                    bail!("vad_threshold must be between 0.05 and 0.95");
                }
                let vad_files = conclave_model::vad_paths(&data_dir_for_model);
                let model_name = args.model.or(t.model).unwrap_or_else(|| "tiny.en".into());
                let Some(model) = conclave_model::WhisperModel::parse(&model_name) else {
                    bail!("model must be `tiny.en` or `base`, not {model_name:?}");
                };
                let language = args.language.or(t.language).unwrap_or_else(|| "en".into());
                let language = if model.multilingual() {
                    language
                } else {
                    "en".into()
                };
                let known = language == "auto"
                    || (2..=3).contains(&language.len())
                        && language.bytes().all(|b| b.is_ascii_lowercase());
                if !known {
                    bail!(
                        "language must be a Whisper language code such as `en` or `de`, or `auto`"
                    );
                }
                TranscriptionSettings {
                    enabled: args.transcription.or(t.enabled).unwrap_or(true),
                    whisper_model: args.whisper_model.or(t.whisper_model).unwrap_or_else(|| {
                        data_dir_for_model.join("models").join(model.file_name())
                    }),
                    language,
                    whisper_threads: threads,
                    whisper_burst_threads: burst_threads,
                    endpoint_silence_ms: args.endpoint_silence_ms.or(t.endpoint_silence_ms),
                    workers,
                    max_per_room: args
                        .max_transcriptions_per_room
                        .or(t.max_per_room)
                        .unwrap_or((workers * 2).max(8)),
                    max_per_server: args
                        .max_transcriptions
                        .or(t.max_per_server)
                        .unwrap_or(workers * 16),
                    vad_aggressiveness: vad,
                    silero,
                    silero_model: args
                        .silero_model
                        .or(t.silero_model)
                        .unwrap_or(vad_files.model),
                    turn_model: args
                        .turn_model
                        .or(t.turn_model)
                        .unwrap_or_else(|| conclave_model::smart_turn_path(&data_dir_for_model)),
                    onnxruntime: args
                        .onnxruntime
                        .or(t.onnxruntime)
                        .unwrap_or(vad_files.runtime),
                    vad_threshold,
                }
            },
        })
    }

    /// The IP clients should reach the media sockets at.
    pub fn advertised_ip(&self) -> IpAddr {
        self.public_ip.unwrap_or(self.udp_ip)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("conclave-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "http_addr = \"127.0.0.1:9000\"\nlog_level = \"debug\"\n[turn]\nport = 4000\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            log_level: Some("warn".into()),
            ..Default::default()
        };
        let c = Config::load(args).unwrap();
        assert_eq!(c.http_addr.port(), 9000, "file beats default");
        assert_eq!(c.log_level, "warn", "flag beats file");
        assert_eq!(c.turn.port, 4000);
        assert_eq!(c.max_message_bytes, 65536, "default");
    }

    #[test]
    fn a_cluster_needs_one_turn_secret_and_a_sane_node() {
        let cluster = || ServeArgs {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            ..Default::default()
        };
        assert!(
            Config::load(ServeArgs::default())
                .unwrap()
                .cluster
                .is_none()
        );
        let e = Config::load(cluster()).unwrap_err().to_string();
        assert!(e.contains("TURN secret"), "{e}");
        let c = Config::load(ServeArgs {
            turn_secret: Some("shared".into()),
            ..cluster()
        })
        .unwrap();
        let cl = c.cluster.expect("a cluster");
        assert!(cl.node_id.starts_with("ND_"));
        assert_eq!(cl.prefix, "conclave");
        assert_eq!(cl.node_ttl.as_millis(), 5000);
        assert_eq!(c.turn.secret.as_deref(), Some("shared"));
        // TURN off: no secret needed.
        assert!(
            Config::load(ServeArgs {
                turn_enabled: Some(false),
                ..cluster()
            })
            .is_ok()
        );
        for bad in ["", "a b", "x/y", &"n".repeat(65)] {
            let r = Config::load(ServeArgs {
                node_id: Some(bad.into()),
                turn_enabled: Some(false),
                ..cluster()
            });
            assert!(r.is_err(), "node id {bad:?} accepted");
        }
        let r = Config::load(ServeArgs {
            node_ttl_ms: Some(100),
            turn_enabled: Some(false),
            ..cluster()
        });
        assert!(
            r.is_err(),
            "a 100 ms TTL is below what a heartbeat can keep"
        );
    }

    #[test]
    fn the_media_plane_is_the_default_webrtc_is_asked_for_and_nothing_else_is_taken() {
        let plane = |v: Option<&str>| {
            Config::load(ServeArgs {
                media_plane: v.map(str::to_owned),
                ..Default::default()
            })
        };
        assert!(plane(None).unwrap().media_plane_worker);
        assert!(!plane(Some("webrtc")).unwrap().media_plane_worker);
        assert!(plane(Some("worker")).unwrap().media_plane_worker);
        let e = plane(Some("Worker ")).unwrap_err().to_string();
        assert!(e.contains("`webrtc` or `worker`"), "{e}");
    }

    #[test]
    fn wildcard_udp_ip_and_unknown_keys_are_refused() {
        let args = ServeArgs {
            udp_ip: Some("0.0.0.0".parse().unwrap()),
            ..Default::default()
        };
        assert!(
            Config::load(args)
                .unwrap_err()
                .to_string()
                .contains("wildcard")
        );
        let path = std::env::temp_dir().join(format!("conclave-bad-{}.toml", std::process::id()));
        std::fs::write(&path, "htp_addr = \"x\"\n").unwrap();
        let err = Config::load(ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
    }
}
