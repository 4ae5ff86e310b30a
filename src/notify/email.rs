//! Email for scheduled meetings over SMTP (lettre), off unless `--smtp-url` is set:
//! an invitation with the meeting's .ics to each invitee when it is scheduled, a reminder when
//! an occurrence opens, a summary (the agent's key points and next step, when it scored) when
//! it ends. Each email is a row with its delivery status; sending is leased, retried twice
//! (after 30 s and 2 min) and then marked failed with the reason.

use crate::schedule::ScheduleEvent;
use crate::store::{EmailRecord, ScheduleRecord, Store, StoreError};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// SMTP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    /// `smtp://host:port` (plain, as to a local relay), `smtp://...?tls=required` (STARTTLS) or
    /// `smtps://user:password@host:465`, as lettre reads them.
    pub url: String,
    /// Sender, `Name <address>`.
    pub from: String,
    /// How often queued emails are sent; zero: never (tests send by hand).
    pub tick: Duration,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MailStats {
    /// Emails the server accepted.
    pub sent: AtomicU64,
    /// Attempts that failed (retried).
    pub failed_attempts: AtomicU64,
    /// Emails given up (logged).
    pub failed: AtomicU64,
}

/// Queues and sends meeting email.
pub struct Mailer {
    store: Store,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    tick: Duration,
    stats: MailStats,
}

const RETRIES_MS: [i64; 2] = [30_000, 120_000];

impl Mailer {
    /// A mailer for `config`, or why the settings are unusable.
    pub fn new(store: Store, config: &MailConfig) -> Result<Arc<Self>, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .map_err(|e| format!("smtp url: {e}"))?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("smtp from {:?}: {e}", config.from))?;
        Ok(Arc::new(Self {
            store,
            transport,
            from,
            tick: config.tick,
            stats: MailStats::default(),
        }))
    }

    /// Counters.
    pub fn stats(&self) -> &MailStats {
        &self.stats
    }

    /// Queues the invitations of a newly scheduled series.
    pub async fn invite(
        &self,
        s: &ScheduleRecord,
        base_url: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let ics = crate::schedule::ical::export(std::slice::from_ref(s), base_url, now);
        let url = format!("{}/m/{}", base_url.trim_end_matches('/'), s.meeting_code);
        let when = describe_when(s);
        for i in &s.spec.invitees {
            let body = format!(
                "Hello {},\n\nYou are invited to \"{}\" ({when}).\n\nJoin: {url}\n\n{}\n",
                i.name, s.spec.title, s.spec.description
            );
            self.store
                .queue_email(
                    s.id,
                    0,
                    "invitation",
                    &i.email,
                    &i.name,
                    &format!("Invitation: {}", s.spec.title),
                    body.trim_end(),
                    Some(&ics),
                    now,
                )
                .await?;
        }
        Ok(())
    }

    /// Queues reminders and summaries from scheduler events until the scheduler goes away.
    pub fn follow(
        self: &Arc<Self>,
        mut events: tokio::sync::broadcast::Receiver<ScheduleEvent>,
        agents: Arc<crate::agents::AgentService>,
        base_url: String,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let e = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "email fell behind the scheduler; reminders may be missing"
                        );
                        continue;
                    }
                    Err(_) => return,
                };
                if let Err(err) = this.on_event(&e, &agents, &base_url).await {
                    tracing::warn!(error = %err, "meeting email not queued");
                }
            }
        })
    }

    async fn on_event(
        &self,
        e: &ScheduleEvent,
        agents: &crate::agents::AgentService,
        base_url: &str,
    ) -> Result<(), StoreError> {
        if e.kind != "status" || !matches!(e.to.as_str(), "ready" | "completed") {
            return Ok(());
        }
        let Some(s) = self.store.schedule(e.schedule_id).await? else {
            return Ok(());
        };
        let url = format!("{}/m/{}", base_url.trim_end_matches('/'), s.meeting_code);
        let (kind, subject, text) = if e.to == "ready" {
            (
                "reminder",
                format!("Starting soon: {}", s.spec.title),
                format!(
                    "\"{}\" opens now ({}).\n\nJoin: {url}",
                    s.spec.title,
                    describe_when(&s)
                ),
            )
        } else {
            let mut text = format!("\"{}\" has ended.", s.spec.title);
            if let Some(room) = conclave_signaling::RoomName::validate(&s.meeting_code)
                && let Ok(Some(a)) = agents.status(&room).await
                && let Some(summary) = a.summary
            {
                if let Some(points) = summary["key_points"].as_array() {
                    text.push_str("\n\nWhat we heard:");
                    for p in points {
                        let line = p["text"].as_str().or_else(|| p.as_str()).unwrap_or("");
                        if !line.is_empty() {
                            text.push_str(&format!("\n- {line}"));
                        }
                    }
                }
                if let Some(next) = summary["next_step"].as_str() {
                    text.push_str(&format!("\n\nNext step: {next}"));
                }
            }
            ("summary", format!("Summary: {}", s.spec.title), text)
        };
        for i in &s.spec.invitees {
            let body = format!("Hello {},\n\n{text}\n", i.name);
            self.store
                .queue_email(
                    s.id,
                    e.occurrence_id,
                    kind,
                    &i.email,
                    &i.name,
                    &subject,
                    body.trim_end(),
                    None,
                    e.at,
                )
                .await?;
        }
        Ok(())
    }

    /// Sends queued emails every tick until `stop` (nothing if the tick is zero).
    pub fn run(
        self: &Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.tick.is_zero() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(this.tick);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    r = stop.changed() => {
                        if r.is_err() || *stop.borrow() {
                            return;
                        }
                        continue;
                    }
                }
                if let Err(e) = this.send_due(crate::clock::now_ms()).await {
                    tracing::warn!(error = %e, "emails not sent this tick");
                }
            }
        }))
    }

    /// Sends what is due at `now` (at most 20); returns how many were attempted.
    pub async fn send_due(&self, now: i64) -> Result<usize, StoreError> {
        let due = self.store.lease_due_emails(now, now + 60_000, 20).await?;
        let n = due.len();
        for e in due {
            self.attempt(&e, now).await?;
        }
        Ok(n)
    }

    async fn attempt(&self, e: &EmailRecord, now: i64) -> Result<(), StoreError> {
        let result = match self.message(e) {
            Ok(m) => self
                .transport
                .send(m)
                .await
                .map(|_| ())
                .map_err(|err| err.to_string()),
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                self.store.record_email(e.id, "sent", None, now, now).await
            }
            Err(err) => {
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                match RETRIES_MS.get(e.attempts as usize) {
                    Some(delay) => {
                        tracing::info!(email = e.id, to = %e.to_addr, error = %err, "email not sent; will retry");
                        self.store
                            .record_email(e.id, "queued", Some(&err), now + delay, now)
                            .await
                    }
                    None => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(email = e.id, to = %e.to_addr, error = %err, "email given up");
                        self.store
                            .record_email(e.id, "failed", Some(&err), now, now)
                            .await
                    }
                }
            }
        }
    }

    fn message(&self, e: &EmailRecord) -> Result<Message, String> {
        let to: Mailbox = format!("{} <{}>", e.to_name.replace(['<', '>', '"'], ""), e.to_addr)
            .parse()
            .map_err(|err| format!("recipient {:?}: {err}", e.to_addr))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&e.subject);
        let text = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(e.body.clone());
        let m = match &e.ics {
            Some(ics) => builder.multipart(
                MultiPart::mixed().singlepart(text).singlepart(
                    Attachment::new("invite.ics".to_owned()).body(
                        ics.clone(),
                        ContentType::parse("text/calendar; charset=utf-8; method=PUBLISH")
                            .map_err(|err| err.to_string())?,
                    ),
                ),
            ),
            None => builder.singlepart(text),
        };
        m.map_err(|err| err.to_string())
    }
}

fn describe_when(s: &ScheduleRecord) -> String {
    let start = s.spec.start_local.replace('T', " ");
    let start = start.strip_suffix(":00").unwrap_or(&start).to_owned();
    match &s.spec.rrule {
        Some(r) => format!("from {start} {}, {r}", s.spec.time_zone),
        None => format!("{start} {}", s.spec.time_zone),
    }
}
