//! Structured logging set-up.

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber; `format` is `text` or `json`.
pub fn init(level: &str, format: &str) {
    // webrtc-rs logs through `log`; keep its chatter at warn unless asked for explicitly.
    let filter = EnvFilter::try_new(if level.contains('=') {
        level.to_owned()
    } else {
        format!("{level},webrtc=warn,rtc=warn,turn=warn")
    })
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
