//! Wiring only: builds the parts (keys, TURN, store, rooms, router, transcription, meetings),
//! serves HTTP, and shuts everything down in order.

use crate::auth::TokenAuthority;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::peer::PeerFactory;
use crate::room::RoomManager;
use crate::routing::{LocalRouter, RoomRouter};
use crate::state::{AppState, TurnService};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A started server: where it listens and how to stop it.
pub struct RunningServer {
    /// HTTP address actually bound.
    pub http_addr: SocketAddr,
    /// TURN address actually bound, if enabled.
    pub turn_addr: Option<SocketAddr>,
    /// Shared state (tests read counts from it).
    pub state: Arc<AppState>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Disconnects everyone, stops accepting, and waits for the HTTP server to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        self.task.await.context("server task")?
    }

    /// Waits until the server stops on its own (Ctrl-C / SIGTERM).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }
}

/// Resolves the API key pair: configured, or generated and kept in the data directory in
/// development mode.
fn token_authority(config: &Config) -> anyhow::Result<TokenAuthority> {
    match (&config.api_key, &config.api_secret) {
        (Some(k), Some(s)) => {
            anyhow::ensure!(s.len() >= 32, "api_secret must be at least 32 characters");
            Ok(TokenAuthority::new(k, s))
        }
        (None, None) if config.dev => {
            let path = config.data_dir.join("dev-api-key.toml");
            let (key, secret) = match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let v: toml::Table = toml::from_str(&text).context("dev-api-key.toml")?;
                    let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
                    (
                        get("api_key").context("api_key")?,
                        get("api_secret").context("api_secret")?,
                    )
                }
                Err(_) => {
                    let key = format!("dev_{}", crate::ids::random_id(8));
                    let secret = crate::ids::random_id(40);
                    std::fs::create_dir_all(&config.data_dir)?;
                    write_secret(
                        &path,
                        &format!("api_key = \"{key}\"\napi_secret = \"{secret}\"\n"),
                    )?;
                    (key, secret)
                }
            };
            tracing::warn!(api_key = %key, file = %path.display(), "development mode: API key pair (secret in the file)");
            Ok(TokenAuthority::new(&key, &secret))
        }
        _ => anyhow::bail!(
            "no API key pair: set api_key and api_secret (CONCLAVE_API_KEY / CONCLAVE_API_SECRET), or run with --dev"
        ),
    }
}

/// Writes a file only its owner may read (mode 0600 on Unix).
fn write_secret(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// Large allocations (an argon2 hash takes 19 MiB) always come from, and go back to, the
/// system. glibc otherwise raises its mmap threshold after the first such free and keeps
/// later ones in the heap, so a burst of password checks left the memory behind.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before serving.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// A Redis URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Starts TURN and the HTTP/WebSocket server, returning once both listen.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    return_large_allocations();
    let tokens = token_authority(&config)?;
    let metrics = Arc::new(Metrics::default());
    let turn = if config.turn.enabled {
        // A configured secret is shared by every node of a cluster; without one, a fresh one
        // per process is enough for a single node, whose credentials die with it.
        let secret = config
            .turn
            .secret
            .clone()
            .unwrap_or_else(|| crate::ids::random_id(32));
        let server = conclave_turn::TurnServer::start(conclave_turn::TurnConfig {
            bind: SocketAddr::new(config.udp_ip, config.turn.port),
            public_ip: config.advertised_ip(),
            realm: config.turn.realm.clone(),
            shared_secret: secret.clone(),
            relay_port_range: Some(config.turn.relay_ports),
            // Relays reach the SFU's media ports and nothing else on this address.
            peer_port_range: (config.udp_ports != (0, 0)).then_some(config.udp_ports),
            limits: conclave_turn::TurnLimits {
                allocations_per_username: config.turn.allocations_per_user,
                allocations_per_address: config.turn.allocations_per_address,
                ..Default::default()
            },
        })
        .await
        .with_context(|| {
            format!(
                "cannot start TURN on {}:{}",
                config.udp_ip, config.turn.port
            )
        })?;
        tracing::info!(addr = %server.local_addr(), "TURN server listening");
        Some(TurnService {
            server,
            secret,
            ttl: Duration::from_secs(config.turn.ttl_secs),
        })
    } else {
        None
    };
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let store = crate::store::Store::open(&config.database_url, &config.data_dir)
        .await
        .context("cannot open the database")?;
    tracing::info!(backend = ?store.backend(), "database ready");
    let rooms = Arc::new(RoomManager::new(
        config.auto_create_rooms,
        config.max_participants,
        metrics.clone(),
    ));
    let transcription = start_transcription(&config, &store);
    if let Some(t) = &transcription {
        t.follow(&rooms);
    }
    let mut local = LocalRouter::new(
        rooms.clone(),
        PeerFactory::new(config.udp_ip, config.udp_ports, config.public_ip),
        metrics.clone(),
    );
    if config.media_plane_worker {
        let plane = crate::plane::participant::Plane::start(
            config.udp_ip,
            config.udp_ports,
            config.public_ip,
        )
        .context("cannot start the media plane")?;
        local = local.with_plane(Arc::new(plane));
    }
    if let Some(c) = &config.cluster {
        local = local.with_node_id(c.node_id.clone());
    }
    let local = Arc::new(local);
    local.set_draining(config.drain);
    let (router, cluster): (Arc<dyn RoomRouter>, _) = match &config.cluster {
        Some(c) => {
            let mut settings = c.clone();
            if settings.advertise_url.is_none() {
                let scheme = if config.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                settings.advertise_url = Some(format!("{scheme}://{http_addr}"));
            }
            let r = Arc::new(
                crate::cluster::RedisRouter::start(settings, local.clone(), Default::default())
                    .await
                    .with_context(|| {
                        format!("cannot join the cluster at {}", redacted(&c.redis_url))
                    })?,
            );
            (r.clone() as Arc<dyn RoomRouter>, Some(r))
        }
        None => (local.clone() as Arc<dyn RoomRouter>, None),
    };
    let rate_limit = config.rate_limit_per_minute;
    match store.fail_stale_agent_runs(crate::clock::now_ms()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            runs = n,
            "agent runs left running by a crash marked interrupted"
        ),
        Err(e) => tracing::error!(error = %e, "stale agent runs not marked"),
    }
    let (voice, piper_wanted) = initial_voice(&config);
    let agents = crate::agents::AgentService::new(
        rooms.clone(),
        store.clone(),
        voice,
        transcription.is_some(),
        config.max_agents,
    );
    agents.set_turn_model(transcription.as_ref().is_some_and(|t| t.judges_turns()));
    if piper_wanted && config.piper.0.is_file() && config.piper.1.is_file() {
        // Loading the voice takes seconds: the server starts without waiting for it.
        agents.set_voice_loading(true);
        let (runtime, (model, json)) = (
            config.transcription.onnxruntime.clone(),
            config.piper.clone(),
        );
        let agents = agents.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(v) = load_piper(&runtime, &model, &json) {
                agents.set_voice(v);
            }
            agents.set_voice_loading(false);
        });
    } else if piper_wanted {
        tracing::info!(model = %config.piper.0.display(), "Piper voice not installed (conclave model install)");
    }
    let meetings = crate::meetings::MeetingService::new(
        store,
        tokens.clone(),
        router.clone(),
        config.host_grace,
        config.password_hashes,
    );
    match meetings.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(meetings = n, "recovered meetings left active by a crash"),
        Err(e) => tracing::error!(error = %e, "meetings left active by a crash not recovered"),
    }
    router.follow_meetings(
        Arc::downgrade(&meetings) as std::sync::Weak<dyn crate::routing::MeetingEvents>
    );
    let timers = meetings.run_timers();
    meetings.set_schedule_lead(config.scheduler.lead_ms);
    let scheduler = crate::schedule::Scheduler::new(
        meetings.store().clone(),
        meetings.clone(),
        agents.clone(),
        rooms.clone(),
        config.scheduler.clone(),
    );
    let notifier = crate::notify::Notifier::new(meetings.store().clone(), config.webhooks.clone());
    let following = notifier.follow(scheduler.subscribe(), agents.clone());
    let base_url = format!(
        "{}://{}",
        if config.tls.is_some() {
            "https"
        } else {
            "http"
        },
        config.http_addr
    );
    let mailer = match &config.smtp {
        Some(m) => match crate::notify::email::Mailer::new(meetings.store().clone(), m) {
            Ok(mailer) => {
                tracing::info!(from = %m.from, "meeting email on");
                Some(mailer)
            }
            Err(e) => anyhow::bail!("meeting email: {e}"),
        },
        None => None,
    };
    let mail_following = mailer
        .as_ref()
        .map(|m| m.follow(scheduler.subscribe(), agents.clone(), base_url.clone()));
    let sweeper = {
        let rooms = rooms.clone();
        let ttl = config.empty_room_ttl;
        let every = (ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                rooms.expire_empty(ttl);
            }
        })
    };
    let state = Arc::new(AppState {
        router,
        cluster,
        rooms,
        transcription,
        meetings,
        agents,
        scheduler,
        notifier,
        mailer,
        tokens,
        metrics,
        config,
        turn,
        plane: local.plane().cloned(),
        stopping: tokio::sync::watch::channel(false).0,
        abuse: crate::http::abuse::Abuse::new(rate_limit),
    });
    let tls = match &state.config.tls {
        Some((cert, key)) => Some(crate::http::serve::tls_acceptor(cert, key)?),
        None => None,
    };
    let turn_addr = state.turn.as_ref().map(|t| t.local_addr());
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let app = crate::http::app(state.clone());
    let scheduling = state.scheduler.run(state.stopping.subscribe());
    let delivering = state.notifier.run(state.stopping.subscribe());
    let mailing = state
        .mailer
        .as_ref()
        .and_then(|m| m.run(state.stopping.subscribe()));
    let st = state.clone();
    let task = tokio::spawn(async move {
        let st2 = st.clone();
        let signal = async move {
            tokio::select! {
                _ = shutdown_rx.wait_for(|s| *s) => {}
                _ = os_shutdown_signal() => {}
            }
            tracing::info!("shutting down");
            st2.stopping.send_replace(true);
            st2.agents.stop_all();
            st2.router.shutdown();
        };
        let limits = crate::http::serve::ConnectionLimits {
            max_connections: st.config.max_connections,
            max_per_address: st.config.max_connections_per_address,
            header_timeout: st.config.header_timeout,
            idle_timeout: st.config.idle_timeout,
        };
        crate::http::serve::serve(listener, app, limits, tls, st.metrics.clone(), signal).await?;
        // Give participant tasks a moment to close their peer connections, and the sockets
        // to record their departures, before the store closes.
        for _ in 0..50 {
            let sockets = st
                .metrics
                .websockets
                .load(std::sync::atomic::Ordering::Relaxed);
            if st.rooms.counts().1 == 0 && sockets <= 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(t) = &st.turn {
            let _ = t.server.close().await;
        }
        timers.abort();
        sweeper.abort();
        if let Some(s) = scheduling {
            s.abort();
        }
        if let Some(d) = delivering {
            d.abort();
        }
        following.abort();
        if let Some(m) = mailing {
            m.abort();
        }
        if let Some(m) = mail_following {
            m.abort();
        }
        // Let the pipelines flush their last utterances into the store before it closes.
        st.rooms.retire_all();
        if let Some(t) = &st.transcription
            && !t.wait_flushed(Duration::from_secs(10)).await
        {
            tracing::warn!("transcription still busy at shutdown; its last lines may be lost");
        }
        st.meetings.store().close().await;
        Ok(())
    });
    tracing::info!(%http_addr, "listening");
    Ok(RunningServer {
        http_addr,
        turn_addr,
        state,
        shutdown: shutdown_tx,
        task,
    })
}

/// The voice agents have at start, and whether to load Piper in the background (`auto`: the
/// best command-line voice until Piper is ready; `piper`: none until then).
fn initial_voice(config: &Config) -> (Option<Arc<dyn conclave_media::voice::Voice>>, bool) {
    use conclave_media::voice::{CommandEngine, CommandVoice, Voice};
    let command = |e| match CommandVoice::new(e) {
        Ok(v) => Some(Arc::new(v) as Arc<dyn Voice>),
        Err(err) => {
            tracing::warn!(error = %err, "voice not available");
            None
        }
    };
    let (voice, piper) = match config.voice.as_str() {
        "none" => (None, false),
        "flite" => (command(CommandEngine::Flite), false),
        "espeak-ng" => (command(CommandEngine::EspeakNg), false),
        "piper" => (None, true),
        _ => (
            conclave_media::voice::best_available(None).map(Arc::<dyn Voice>::from),
            true,
        ),
    };
    if let Some(v) = &voice {
        tracing::info!(voice = v.name(), "agent voice ready");
    }
    (voice, piper)
}

/// The Piper voice (it runs on the ONNX Runtime Silero uses).
fn load_piper(
    runtime: &std::path::Path,
    model: &std::path::Path,
    json: &std::path::Path,
) -> Option<Arc<dyn conclave_media::voice::Voice>> {
    let started = std::time::Instant::now();
    match conclave_media::voice::piper::PiperVoice::load(runtime, model, json) {
        Ok(v) => {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "Piper voice loaded"
            );
            Some(Arc::new(v))
        }
        Err(e) => {
            tracing::warn!(error = %e, "Piper voice not loaded");
            None
        }
    }
}

/// Loads the Whisper model if transcription is on. A missing or broken model is reported and
/// the server runs without transcription rather than not at all.
fn start_transcription(
    config: &Config,
    store: &crate::store::Store,
) -> Option<Arc<crate::transcription::Transcription>> {
    let t = &config.transcription;
    if !t.enabled {
        tracing::info!("transcription is off");
        return None;
    }
    if !t.whisper_model.exists() {
        tracing::warn!(model = %t.whisper_model.display(), "transcription disabled: no Whisper model; run `conclave model install`");
        return None;
    }
    let pool = conclave_media::pool::PoolConfig {
        workers: t.workers,
        max_per_server: t.max_per_server,
        max_per_room: t.max_per_room,
        deadline_factor: conclave_media::pool::DEFAULT_DEADLINE_FACTOR,
    };
    let silero = if t.silero {
        match conclave_media::silero::SileroModel::load(
            &t.onnxruntime,
            &t.silero_model,
            t.vad_threshold,
        ) {
            Ok(model) => {
                tracing::info!(model = %t.silero_model.display(), "voice detection: Silero VAD");
                Some(model)
            }
            Err(e) => {
                tracing::warn!(error = %e, "voice detection falls back to webrtc-vad, which takes tones and noise for speech; run `conclave model install`");
                None
            }
        }
    } else {
        tracing::info!("voice detection: webrtc-vad (chosen with --vad webrtc)");
        None
    };
    let mut segment = conclave_media::segment::SegmentConfig::default();
    // Silero's decision ends within a window of the speech, libfvad's flickers: the first
    // can end an utterance after a shorter silence (the caption comes that much sooner).
    segment.end_ms = t
        .endpoint_silence_ms
        .unwrap_or(if silero.is_some() { 300 } else { 500 });
    segment.post_roll_ms = segment.post_roll_ms.min(segment.end_ms);
    // Smart Turn judges the lead's pauses for agents; it shares Silero's ONNX Runtime.
    let turn_analysis = if t.turn_model.exists() {
        match conclave_media::smart_turn::SmartTurn::load(&t.onnxruntime, &t.turn_model) {
            Ok(model) => {
                tracing::info!(model = %t.turn_model.display(), "agents' end of turn: Smart Turn");
                Some(conclave_media::pipeline::TurnAnalysis {
                    model: Arc::new(model),
                    wanted: Arc::default(),
                    in_flight: Arc::default(),
                    max_in_flight: 2,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "Smart Turn not loaded; agents end turns on silence and words");
                None
            }
        }
    } else {
        tracing::info!(model = %t.turn_model.display(), "no Smart Turn model; agents end turns on silence and words (`conclave model install` fetches it)");
        None
    };
    let pipeline = conclave_media::pipeline::PipelineConfig {
        vad_aggressiveness: t.vad_aggressiveness,
        silero,
        segment,
        turn_analysis,
        ..Default::default()
    };
    match crate::transcription::Transcription::load(
        &t.whisper_model,
        (t.whisper_threads, t.whisper_burst_threads),
        &t.language,
        pool,
        pipeline,
        store.clone(),
    ) {
        Ok(svc) => {
            tracing::info!(model = %t.whisper_model.display(), language = %t.language, workers = t.workers, threads = t.whisper_threads, burst_threads = t.whisper_burst_threads, "transcription ready");
            Some(svc)
        }
        Err(e) => {
            tracing::error!(error = %e, "transcription disabled: the Whisper model could not be loaded");
            None
        }
    }
}

async fn os_shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
