//! Meeting email against a local SMTP sink process the test starts (Python's smtpd
//! DebuggingServer, which prints every message it accepts): invitations with the .ics attached
//! when a meeting is scheduled, a reminder when it opens, a summary when it ended, each with
//! its delivery status; and
//! a dead SMTP server: retried, then failed with the reason.

mod common;

use common::agent_call::api;

use chrono::TimeZone;
use common::start_server;
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MIN: i64 = 60_000;

struct Sink {
    child: Child,
    port: u16,
    out: Arc<Mutex<String>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use common::free_port;

/// Starts the sink and waits until it accepts connections.
fn sink() -> Sink {
    let port = free_port();
    let mut child = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-u",
            "-m",
            "smtpd",
            "-n",
            "-c",
            "DebuggingServer",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs (scripts/setup.sh)");
    let out: Arc<Mutex<String>> = Arc::default();
    let mut stdout = child.stdout.take().unwrap();
    let o = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            o.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Sink { child, port, out };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the SMTP sink did not start");
}

fn schedule_body(start: i64) -> Value {
    json!({"title": "Acme call", "host_identity": "sam", "time_zone": "UTC",
           "start": chrono::Utc.timestamp_millis_opt(start).unwrap().format("%Y-%m-%dT%H:%M").to_string(),
           "duration_minutes": 30,
           "invitees": [{"name": "Dana Scully", "email": "dana@acme.test"}, {"name": "Kim", "email": "kim@acme.test"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_and_reminders_reach_an_smtp_server_with_their_status() {
    let smtp = sink();
    let server = start_server(|a| {
        a.scheduler_tick_ms = Some(0);
        a.email_tick_ms = Some(0);
        a.smtp_url = Some(format!("smtp://127.0.0.1:{}", smtp.port));
        a.smtp_from = Some("Conclave <meet@conclave.test>".into());
    })
    .await;
    let addr = server.http_addr;
    let mailer = server.state.mailer.clone().expect("email is on");
    let start = (conclave::clock::now_ms() / MIN + 30) * MIN;
    let (got, s) = api(addr, "POST", "/api/schedules", schedule_body(start)).await;
    assert_eq!(got, 201, "{s}");
    let id = s["id"].as_i64().unwrap();
    let now = conclave::clock::now_ms();
    assert_eq!(mailer.send_due(now).await.unwrap(), 2);
    let (_, e) = api(
        addr,
        "GET",
        &format!("/api/schedules/{id}/emails"),
        Value::Null,
    )
    .await;
    let emails = e["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 2, "{e}");
    assert!(
        emails
            .iter()
            .all(|m| m["status"] == "sent" && m["kind"] == "invitation"),
        "{e}"
    );
    // What the sink received.
    assert!(
        common::eventually(Duration::from_secs(5), || smtp
            .out
            .lock()
            .unwrap()
            .matches("MESSAGE FOLLOWS")
            .count()
            >= 2)
        .await
    );
    let got = smtp.out.lock().unwrap().clone();
    assert!(got.contains("Subject: Invitation: Acme call"), "{got}");
    assert!(
        got.contains("dana@acme.test") && got.contains("kim@acme.test"),
        "{got}"
    );
    assert!(got.contains("From: Conclave <meet@conclave.test>"), "{got}");
    assert!(got.contains("text/calendar"), "the .ics is attached: {got}");
    assert!(
        got.contains(&format!("/m/{}", s["meeting"]["code"].as_str().unwrap())),
        "{got}"
    );
    // Sent once: nothing more is due.
    assert_eq!(mailer.send_due(now + 60 * MIN).await.unwrap(), 0);
    // The room opens: a reminder to each invitee.
    server.state.scheduler.tick(start - 15 * MIN).await.unwrap();
    let mut queued = 0;
    for _ in 0..100 {
        queued = server
            .state
            .meetings
            .store()
            .emails_of(id)
            .await
            .unwrap()
            .len();
        if queued == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queued, 4, "reminders queued");
    assert_eq!(mailer.send_due(start - 15 * MIN).await.unwrap(), 2);
    assert!(
        common::eventually(Duration::from_secs(5), || smtp
            .out
            .lock()
            .unwrap()
            .contains("Subject: Starting soon: Acme call"))
        .await
    );
    let (_, e) = api(
        addr,
        "GET",
        &format!("/api/schedules/{id}/emails"),
        Value::Null,
    )
    .await;
    assert!(
        e["emails"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "sent"),
        "{e}"
    );
    // Someone comes and goes; at the end a summary goes out.
    let code = s["meeting"]["code"].as_str().unwrap().to_owned();
    let (got, grant) = api(
        addr,
        "POST",
        &format!("/api/meetings/{code}/join"),
        json!({"name": "Dana"}),
    )
    .await;
    assert_eq!(got, 200, "{grant}");
    let guest = common::client::TestClient::join(
        addr,
        &code,
        "Dana",
        grant["token"].as_str().unwrap(),
        false,
    )
    .await;
    let room = conclave_signaling::RoomName::validate(&code).unwrap();
    assert!(
        common::eventually(Duration::from_secs(10), || server
            .state
            .rooms
            .get(&room)
            .is_some_and(|r| r.with_members(|m| m.count()) == 1))
        .await
    );
    server.state.scheduler.tick(start).await.unwrap();
    guest.leave().await;
    assert!(
        common::eventually(Duration::from_secs(10), || server
            .state
            .rooms
            .get(&room)
            .is_none_or(|r| r.with_members(|m| m.count()) == 0))
        .await
    );
    server.state.scheduler.tick(start + 30 * MIN).await.unwrap();
    let mut queued = 0;
    for _ in 0..100 {
        queued = server
            .state
            .meetings
            .store()
            .emails_of(id)
            .await
            .unwrap()
            .len();
        if queued == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queued, 6, "summaries queued");
    assert_eq!(mailer.send_due(start + 30 * MIN).await.unwrap(), 2);
    assert!(
        common::eventually(Duration::from_secs(5), || smtp
            .out
            .lock()
            .unwrap()
            .contains("Subject: Summary: Acme call"))
        .await
    );
    assert!(smtp.out.lock().unwrap().contains("has ended"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_smtp_server_is_retried_then_the_email_fails_with_the_reason() {
    let dead = free_port();
    let server = start_server(|a| {
        a.scheduler_tick_ms = Some(0);
        a.email_tick_ms = Some(0);
        a.smtp_url = Some(format!("smtp://127.0.0.1:{dead}"));
    })
    .await;
    let addr = server.http_addr;
    let mailer = server.state.mailer.clone().unwrap();
    let start = (conclave::clock::now_ms() / MIN + 30) * MIN;
    let (_, s) = api(addr, "POST", "/api/schedules", schedule_body(start)).await;
    let id = s["id"].as_i64().unwrap();
    let mut t = conclave::clock::now_ms();
    for _ in 0..4 {
        mailer.send_due(t).await.unwrap();
        t += 5 * MIN;
    }
    let (_, e) = api(
        addr,
        "GET",
        &format!("/api/schedules/{id}/emails"),
        Value::Null,
    )
    .await;
    for m in e["emails"].as_array().unwrap() {
        assert_eq!(m["status"], "failed", "{e}");
        assert_eq!(m["attempts"], 3, "{e}");
        assert!(m["last_error"].as_str().unwrap_or("").len() > 3, "{e}");
    }
    // Bad settings refuse to start rather than lose mail silently.
    let bad = conclave::notify::email::Mailer::new(
        server.state.meetings.store().clone(),
        &conclave::notify::email::MailConfig {
            url: "carrier-pigeon://coop".into(),
            from: "not an address".into(),
            tick: Duration::ZERO,
        },
    );
    assert!(bad.is_err());
    server.shutdown().await.unwrap();
}
