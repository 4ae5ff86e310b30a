//! Notifications and webhooks for scheduled meetings.
//!
//! ```text
//! scheduler events ─▶ Notifier::follow ─▶ notification per host (unless they muted the kind)
//!                                          ├─▶ live feed (dashboard toasts)
//!                                          └─▶ one delivery per matching webhook (queued)
//! delivery loop (every 500 ms) ─▶ lease due deliveries ─▶ POST, signed ─▶ delivered | retry
//!                                   with backoff (10 s doubling, at most 1 h apart) for 24 h
//! ```
//!
//! Signature: `X-Conclave-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! Receivers recompute it, and refuse a `t` too far from their clock (replay) and an
//! `X-Conclave-Event-Id` they already took (duplicates: delivery is at least once).

pub mod email;

use crate::schedule::ScheduleEvent;
use crate::store::{DeliveryRecord, NotificationRecord, Store, StoreError};
use hmac::{Hmac, Mac};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;

/// Every kind of notification.
pub const KINDS: [&str; 6] = [
    "meeting_starting",
    "agent_dispatched",
    "agent_in_call",
    "agent_failed",
    "meeting_ended",
    "lead_scored",
];

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// How often due deliveries are looked for; zero: never (tests deliver by hand).
    pub tick: Duration,
    /// First retry after this; doubling.
    pub base_ms: i64,
    /// Retries at most this far apart.
    pub max_ms: i64,
    /// Give up this long after the event.
    pub give_up_after_ms: i64,
    /// Each POST's deadline.
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            base_ms: 10_000,
            max_ms: 3_600_000,
            give_up_after_ms: 24 * 3_600_000,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Notifications stored.
    pub notifications: AtomicU64,
    /// Webhook POSTs answered 2xx.
    pub delivered: AtomicU64,
    /// Webhook POSTs that failed (retried).
    pub failed_attempts: AtomicU64,
    /// Deliveries given up after 24 h (logged).
    pub gave_up: AtomicU64,
}

/// Stores, pushes and delivers notifications.
pub struct Notifier {
    store: Store,
    live: broadcast::Sender<NotificationRecord>,
    config: WebhookConfig,
    stats: NotifyStats,
}

/// `t=<unix s>,v1=<hex>` for `body` signed with `secret` at `unix_secs`.
pub fn signature(secret: &str, unix_secs: i64, body: &str) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{unix_secs}.{body}").as_bytes());
    format!(
        "t={unix_secs},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

impl Notifier {
    /// A notifier over `store`.
    pub fn new(store: Store, config: WebhookConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            live: broadcast::channel(256).0,
            config,
            stats: NotifyStats::default(),
        })
    }

    /// Counters.
    pub fn stats(&self) -> &NotifyStats {
        &self.stats
    }

    /// Every notification from now on (the dashboard's toasts).
    pub fn subscribe(&self) -> broadcast::Receiver<NotificationRecord> {
        self.live.subscribe()
    }

    /// Stores a notification for `user` (unless they muted `kind`), pushes it live and queues
    /// it for their webhooks.
    pub async fn notify(
        &self,
        user: &str,
        kind: &str,
        title: &str,
        data: serde_json::Value,
        now: i64,
    ) -> Result<Option<NotificationRecord>, StoreError> {
        let muted = self.store.muted_kinds(user).await?;
        let n = if muted.iter().any(|m| m == kind) {
            None
        } else {
            let n = self
                .store
                .insert_notification(user, kind, title, &data, now)
                .await?;
            self.stats.notifications.fetch_add(1, Ordering::Relaxed);
            let _ = self.live.send(n.clone());
            Some(n)
        };
        // Webhooks are the host's integrations: they get every kind they subscribed to.
        let event_id = format!("ev_{}", crate::ids::random_id(16));
        let payload = serde_json::json!({
            "id": event_id, "kind": kind, "user": user, "title": title,
            "created_at": crate::clock::rfc3339(now), "data": data,
        })
        .to_string();
        for w in self.store.webhooks(user).await? {
            if w.kinds.is_empty() || w.kinds.iter().any(|k| k == kind) {
                self.store
                    .queue_delivery(w.id, &event_id, kind, &payload, now)
                    .await?;
            }
        }
        Ok(n)
    }

    /// Turns scheduler events into notifications until the scheduler goes away.
    pub fn follow(
        self: &Arc<Self>,
        mut events: broadcast::Receiver<ScheduleEvent>,
        agents: Arc<crate::agents::AgentService>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let e = match events.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "notifications fell behind the scheduler; events missed"
                        );
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if let Err(err) = this.on_event(&e, &agents).await {
                    tracing::warn!(error = %err, ?e, "notification not made");
                }
            }
        })
    }

    async fn on_event(
        &self,
        e: &ScheduleEvent,
        agents: &crate::agents::AgentService,
    ) -> Result<(), StoreError> {
        let Some(s) = self.store.schedule(e.schedule_id).await? else {
            return Ok(());
        };
        let host = &s.spec.host_identity;
        let title = &s.spec.title;
        let occ = self.store.occurrence(e.occurrence_id).await?;
        let base = serde_json::json!({
            "schedule_id": s.id, "occurrence_id": e.occurrence_id, "title": title,
            "meeting_code": s.meeting_code, "url": format!("/m/{}", s.meeting_code),
            "start": occ.as_ref().map(|o| crate::clock::rfc3339(o.starts_at)),
            "end": occ.as_ref().map(|o| crate::clock::rfc3339(o.ends_at)),
        });
        let with = |extra: serde_json::Value| {
            let mut v = base.clone();
            if let (Some(m), Some(x)) = (v.as_object_mut(), extra.as_object()) {
                m.extend(x.clone());
            }
            v
        };
        let (kind, line, data) = match (e.kind, e.to.as_str()) {
            ("status", "ready") => (
                "meeting_starting",
                format!("{title} opens now"),
                with(serde_json::json!({})),
            ),
            ("status", "completed" | "missed") => (
                "meeting_ended",
                format!(
                    "{title} {}",
                    if e.to == "missed" {
                        "was missed"
                    } else {
                        "ended"
                    }
                ),
                with(serde_json::json!({"status": e.to})),
            ),
            ("bot", "dispatched") => (
                "agent_dispatched",
                format!("Agent on its way to {title}"),
                with(serde_json::json!({})),
            ),
            ("bot", "in_call") => (
                "agent_in_call",
                format!("Agent is in {title}"),
                with(serde_json::json!({})),
            ),
            ("bot", "failed") => (
                "agent_failed",
                format!("Agent could not join {title}: {}", e.cause),
                with(serde_json::json!({"reason": e.cause})),
            ),
            ("bot", "left") => {
                // The agent's last score of this meeting, if it scored anyone.
                let Some(room) = conclave_signaling::RoomName::validate(&s.meeting_code) else {
                    return Ok(());
                };
                let Ok(Some(status)) = agents.status(&room).await else {
                    return Ok(());
                };
                let score = status.score;
                if score.get("score").is_none() {
                    return Ok(());
                }
                (
                    "lead_scored",
                    format!(
                        "Lead scored {} ({}) in {title}",
                        score["score"],
                        score["band"].as_str().unwrap_or("?")
                    ),
                    with(serde_json::json!({"score": score})),
                )
            }
            _ => return Ok(()),
        };
        self.notify(host, kind, &line, data, e.at).await?;
        Ok(())
    }

    /// Delivers due webhook events every `config.tick` until `stop` (nothing if zero).
    pub fn run(
        self: &Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.config.tick.is_zero() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(this.config.tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if let Err(e) = this.deliver_due(crate::clock::now_ms()).await {
                    tracing::warn!(error = %e, "webhook deliveries not run; next tick retries");
                }
            }
        }))
    }

    /// Sends what is due at `now` (at most 20), each bounded by the POST timeout. Returns how
    /// many were attempted.
    pub async fn deliver_due(&self, now: i64) -> Result<usize, StoreError> {
        // The lease outlasts one POST, so a second process never sends the same one at once.
        let lease = now + self.config.timeout.as_millis() as i64 + 5_000;
        let due = self.store.lease_due_deliveries(now, lease, 20).await?;
        let n = due.len();
        for d in due {
            self.attempt(&d, now).await?;
        }
        Ok(n)
    }

    async fn attempt(&self, d: &DeliveryRecord, now: i64) -> Result<(), StoreError> {
        let Some(w) = self.store.webhook(d.webhook_id).await? else {
            return Ok(());
        };
        // Signed with the wall clock: receivers compare it with theirs.
        let sig = signature(&w.secret, crate::clock::now_ms() / 1_000, &d.payload);
        let started = std::time::Instant::now();
        let result = post(
            &w.url,
            &d.payload,
            &sig,
            &d.event_id,
            &d.kind,
            self.config.timeout,
        )
        .await;
        let ms = started.elapsed().as_millis() as i64;
        let (code, error) = match &result {
            Ok(c) if (200..300).contains(c) => (Some(*c), None),
            Ok(c) => (Some(*c), Some(format!("HTTP {c}"))),
            Err(e) => (None, Some(e.clone())),
        };
        if error.is_none() {
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            return self
                .store
                .record_attempt(d, code, None, ms, None, false, now)
                .await;
        }
        self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
        let exp = d.attempts.clamp(0, 20) as u32;
        let delay = self
            .config
            .base_ms
            .saturating_mul(1i64 << exp)
            .min(self.config.max_ms);
        let next = now + delay;
        let give_up = next > d.created_at + self.config.give_up_after_ms;
        if give_up {
            self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(webhook = w.id, url = %w.url, event = %d.event_id, attempts = d.attempts + 1, error = ?error, "webhook delivery given up");
        } else {
            tracing::info!(webhook = w.id, event = %d.event_id, attempt = d.attempts + 1, error = ?error, retry_in_ms = delay, "webhook delivery failed; will retry");
        }
        self.store
            .record_attempt(
                d,
                code,
                error.as_deref(),
                ms,
                (!give_up).then_some(next),
                give_up,
                now,
            )
            .await
    }
}

/// POSTs `body` to `url` (http or https) with the signature headers; the response's status.
async fn post(
    url: &str,
    body: &str,
    sig: &str,
    event_id: &str,
    kind: &str,
    timeout: Duration,
) -> Result<u16, String> {
    tokio::time::timeout(timeout, post_inner(url, body, sig, event_id, kind))
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}

async fn post_inner(
    url: &str,
    body: &str,
    sig: &str,
    event_id: &str,
    kind: &str,
) -> Result<u16, String> {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("only http and https URLs".into()),
    };
    let host = uri.host().ok_or("URL without host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, &host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "conclave-webhooks/1")
        .header("x-conclave-signature", sig)
        .header("x-conclave-event-id", event_id)
        .header("x-conclave-event", kind)
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    macro_rules! send {
        ($io:expr) => {{
            let (mut sender, conn) = hyper::client::conn::http1::handshake($io)
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
            Ok(resp.status().as_u16())
        }};
    }
    if https {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name =
            rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send!(TokioIo::new(tls))
    } else {
        send!(TokioIo::new(tcp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Expected value computed independently:
        // python3 -c "import hmac,hashlib;print(hmac.new(b'Jefe',b'1700000000.{}',hashlib.sha256).hexdigest())"
        assert_eq!(
            signature("Jefe", 1_700_000_000, "{}"),
            "t=1700000000,v1=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
    }
}
