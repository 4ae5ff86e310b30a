//! Scheduled meetings end to end over the REST API, on SQLite and PostgreSQL: validation, the
//! status machine driven by the scheduler at injected times (ready, ongoing with a real
//! WebRTC participant, completed), restart catch-up, two schedulers on one database, and the
//! agent's auto-join with its statuses and overrides.

mod common;

use common::agent_call::api;

use chrono::{TimeZone, Utc};
use common::client::TestClient;
use common::{api_key_auth, databases, http, start_server, start_server_in};
use serde_json::{Value, json};
use std::time::Duration;

const MIN: i64 = 60_000;

/// `ms` (unix) as a local time in `zone`, `YYYY-MM-DDTHH:MM`.
fn local(ms: i64, zone: &str) -> String {
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    tz.timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

/// A minute boundary `minutes` from now.
fn minute_from_now(minutes: i64) -> i64 {
    let now = conclave::clock::now_ms();
    (now / MIN + minutes) * MIN
}

fn body(title: &str, host: &str, start_ms: i64, minutes: i64) -> Value {
    json!({
        "title": title,
        "host_identity": host,
        "time_zone": "Europe/Berlin",
        "start": local(start_ms, "Europe/Berlin"),
        "duration_minutes": minutes,
    })
}

fn no_loop(a: &mut conclave::config::ServeArgs) {
    // The tests drive the scheduler at times of their choosing.
    a.scheduler_tick_ms = Some(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_get_clear_errors_and_store_nothing() {
    let server = start_server(no_loop).await;
    let addr = server.http_addr;
    let start = minute_from_now(60);
    let ok = body("Acme discovery", "sam", start, 30);
    let with = |patch: Value| {
        let mut b = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (patch, status, code) in [
        (
            json!({"time_zone": "Mars/Olympus"}),
            400,
            "unknown_time_zone",
        ),
        (
            json!({"end": local(start - MIN, "Europe/Berlin"), "duration_minutes": null}),
            400,
            "end_before_start",
        ),
        (json!({"duration_minutes": 0}), 400, "end_before_start"),
        (json!({"duration_minutes": 2000}), 400, "too_long"),
        (
            json!({"start": local(start - 3 * 60 * MIN, "Europe/Berlin")}),
            400,
            "in_the_past",
        ),
        (json!({"start": "next tuesday"}), 400, "invalid_time"),
        (json!({"rrule": "FREQ=MONTHLY"}), 400, "invalid_rrule"),
        (json!({"title": "  "}), 400, "invalid_title"),
        (
            json!({"invitees": [{"name": "Dana", "email": "not-an-email"}]}),
            400,
            "invalid_invitee",
        ),
        (json!({"lead_id": 999}), 400, "unknown_lead"),
        (json!({"question_set_id": 999}), 400, "unknown_question_set"),
        (json!({"colour": "blue"}), 400, ""),
    ] {
        let (got, v) = api(addr, "POST", "/api/schedules", with(patch.clone())).await;
        assert_eq!(got, status, "{patch}: {v}");
        assert!(
            v["error"]["code"].as_str().unwrap_or("").contains(code),
            "{patch}: {v}"
        );
    }
    let (got, _) = http(addr, "POST", "/api/schedules", None, &ok.to_string()).await;
    assert_eq!(got, 401, "the API key is needed");
    let (got, v) = http(
        addr,
        "POST",
        "/api/schedules",
        Some(&api_key_auth()),
        "{\"title\":",
    )
    .await;
    assert_eq!(got, 400, "{v}");
    let (_, list) = api(addr, "GET", "/api/schedules", Value::Null).await;
    assert_eq!(list["schedules"], json!([]), "nothing was stored");
    // A good one, then an overlapping one for the same host: 409 unless forced.
    let (got, first) = api(addr, "POST", "/api/schedules", ok.clone()).await;
    assert_eq!(got, 201, "{first}");
    let overlapping = body("Another call", "sam", start + 15 * MIN, 30);
    let (got, v) = api(addr, "POST", "/api/schedules", overlapping.clone()).await;
    assert_eq!(got, 409, "{v}");
    assert_eq!(v["error"]["code"], "schedule_conflict");
    let (got, _) = api(
        addr,
        "POST",
        "/api/schedules",
        body("Other host", "kim", start, 30),
    )
    .await;
    assert_eq!(got, 201, "another host's meeting does not conflict");
    let mut forced = overlapping;
    forced["force"] = json!(true);
    let (got, _) = api(addr, "POST", "/api/schedules", forced).await;
    assert_eq!(got, 201);
    // The code and link are fixed at scheduling.
    let code = first["meeting"]["code"].as_str().unwrap();
    assert_eq!(first["meeting"]["url"], format!("/m/{code}"));
    let (got, m) = api(addr, "GET", &format!("/api/meetings/{code}"), Value::Null).await;
    assert_eq!(got, 200, "{m}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_meeting_expands_in_its_zone_and_reschedules() {
    let server = start_server(no_loop).await;
    let addr = server.http_addr;
    // Every Monday 09:00 Berlin from the next Monday, six times: the Berlin offset changes
    // only in spring, so pick dates across 2027-03-28.
    let b = json!({
        "title": "Weekly pipeline review", "host_identity": "sam", "time_zone": "Europe/Berlin",
        "start": "2027-03-15T09:00", "duration_minutes": 30,
        "rrule": "FREQ=WEEKLY;BYDAY=MO;COUNT=4", "exdates": ["2027-03-22T09:00"],
    });
    let (got, s) = api(addr, "POST", "/api/schedules", b.clone()).await;
    assert_eq!(got, 201, "{s}");
    let starts: Vec<&str> = s["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2027-03-15T08:00:00+00:00",
            "2027-03-29T07:00:00+00:00",
            "2027-04-05T07:00:00+00:00"
        ],
        "09:00 local on both sides of the change, without the exception"
    );
    // Reschedule to 10:00 with the version read; a stale version is a conflict.
    let id = s["id"].as_i64().unwrap();
    let mut moved = b.clone();
    moved["start"] = json!("2027-03-15T10:00");
    moved["version"] = s["version"].clone();
    let (got, s2) = api(addr, "PUT", &format!("/api/schedules/{id}"), moved.clone()).await;
    assert_eq!(got, 200, "{s2}");
    assert_eq!(s2["occurrences"][0]["start"], "2027-03-15T09:00:00+00:00");
    let (got, v) = api(addr, "PUT", &format!("/api/schedules/{id}"), moved).await;
    assert_eq!(got, 409, "{v}");
    assert_eq!(v["error"]["code"], "version_conflict");
    server.shutdown().await.unwrap();
}

async fn occurrence(addr: std::net::SocketAddr, id: i64) -> Value {
    let (got, v) = api(addr, "GET", &format!("/api/occurrences/{id}"), Value::Null).await;
    assert_eq!(got, 200, "{v}");
    v
}

fn history(o: &Value) -> Vec<String> {
    o["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}>{}:{}",
                h["from"].as_str().unwrap(),
                h["to"].as_str().unwrap(),
                h["cause"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occurrence_goes_ready_ongoing_and_completed_with_a_real_participant() {
    for (db, url) in databases().await {
        let server = start_server(|a| {
            no_loop(a);
            a.database_url = Some(url.clone());
        })
        .await;
        let addr = server.http_addr;
        let sched = &server.state.scheduler;
        let start = minute_from_now(40);
        let (got, s) = api(
            addr,
            "POST",
            "/api/schedules",
            body("Acme demo", "sam", start, 30),
        )
        .await;
        assert_eq!(got, 201, "{db}: {s}");
        let code = s["meeting"]["code"].as_str().unwrap().to_owned();
        let room = conclave_signaling::RoomName::validate(&code).unwrap();
        // 20 minutes before: created, still scheduled; no room.
        sched.tick(start - 20 * MIN).await.unwrap();
        let (_, s) = api(
            addr,
            "GET",
            &format!("/api/schedules/{}", s["id"]),
            Value::Null,
        )
        .await;
        let occ_id = s["occurrences"][0]["id"]
            .as_i64()
            .expect("occurrence stored");
        assert_eq!(
            occurrence(addr, occ_id).await["status"],
            "scheduled",
            "{db}"
        );
        assert!(
            server.state.rooms.get(&room).is_none(),
            "{db}: no room before ready"
        );
        // Joining before then says when it opens.
        let (got, v) = api(
            addr,
            "POST",
            &format!("/api/meetings/{code}/join"),
            json!({"name": "Early"}),
        )
        .await;
        assert_eq!(got, 409, "{db}: {v}");
        assert_eq!(v["error"]["code"], "not_open_yet", "{db}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&conclave::clock::rfc3339(start - 15 * MIN)),
            "{db}: {v}"
        );
        // 15 minutes before: ready, and the room exists.
        let r = sched.tick(start - 15 * MIN).await.unwrap();
        assert_eq!(r.transitions, 1, "{db}");
        assert_eq!(occurrence(addr, occ_id).await["status"], "ready", "{db}");
        assert!(
            server.state.rooms.get(&room).is_some(),
            "{db}: the room exists from ready on"
        );
        // Ticking again changes nothing.
        assert_eq!(
            sched.tick(start - 15 * MIN).await.unwrap().transitions,
            0,
            "{db}"
        );
        // A guest joins through the meeting and connects: ongoing.
        let (got, grant) = api(
            addr,
            "POST",
            &format!("/api/meetings/{code}/join"),
            json!({"name": "Dana"}),
        )
        .await;
        assert_eq!(got, 200, "{db}: {grant}");
        let guest =
            TestClient::join(addr, &code, "Dana", grant["token"].as_str().unwrap(), true).await;
        assert!(
            common::eventually(Duration::from_secs(10), || server
                .state
                .rooms
                .get(&room)
                .is_some_and(|r| r.with_members(|m| m.count()) == 1))
            .await
        );
        sched.tick(start - 5 * MIN).await.unwrap();
        assert_eq!(occurrence(addr, occ_id).await["status"], "ongoing", "{db}");
        guest.leave().await;
        assert!(
            common::eventually(Duration::from_secs(10), || server
                .state
                .rooms
                .get(&room)
                .is_none_or(|r| r.with_members(|m| m.count()) == 0))
            .await
        );
        // Empty before the end: still on (they may come back); at the end: completed.
        sched.tick(start + 10 * MIN).await.unwrap();
        assert_eq!(occurrence(addr, occ_id).await["status"], "ongoing", "{db}");
        sched.tick(start + 30 * MIN).await.unwrap();
        let o = occurrence(addr, occ_id).await;
        assert_eq!(o["status"], "completed", "{db}");
        assert_eq!(
            history(&o),
            [
                "scheduled>ready:lead_time",
                "ready>ongoing:joined",
                "ongoing>completed:past_end"
            ],
            "{db}"
        );
        server.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_the_meeting_catches_up_and_leaves_nothing_hanging() {
    let dir =
        std::env::temp_dir().join(format!("conclave-restart-{}", conclave::ids::random_id(6)));
    let start = minute_from_now(30);
    let (occ_id, id) = {
        let server = start_server_in(dir.clone(), no_loop).await;
        let (got, s) = api(
            server.http_addr,
            "POST",
            "/api/schedules",
            body("Missed call", "sam", start, 30),
        )
        .await;
        assert_eq!(got, 201, "{s}");
        server.state.scheduler.tick(start - 20 * MIN).await.unwrap();
        let (_, s) = api(
            server.http_addr,
            "GET",
            &format!("/api/schedules/{}", s["id"]),
            Value::Null,
        )
        .await;
        let occ = s["occurrences"][0]["id"].as_i64().unwrap();
        server.shutdown().await.unwrap();
        (occ, s["id"].as_i64().unwrap())
    };
    // Down through the ready time, the start and the end: the next start catches up in one
    // tick, in order, and a second one owes nothing.
    let server = start_server_in(dir, no_loop).await;
    let later = start + 30 * MIN + 11 * MIN;
    let r = server.state.scheduler.tick(later).await.unwrap();
    assert_eq!(r.transitions, 2, "{r:?}");
    let o = occurrence(server.http_addr, occ_id).await;
    assert_eq!(o["status"], "missed");
    assert_eq!(
        history(&o),
        ["scheduled>ready:lead_time", "ready>missed:nobody_came"]
    );
    assert_eq!(
        server
            .state
            .scheduler
            .tick(later)
            .await
            .unwrap()
            .transitions,
        0
    );
    // Cancelling a series: nothing of it runs.
    let start2 = minute_from_now(120);
    let (_, s) = api(
        server.http_addr,
        "POST",
        "/api/schedules",
        body("Cancelled", "sam", start2, 30),
    )
    .await;
    let id2 = s["id"].as_i64().unwrap();
    server
        .state
        .scheduler
        .tick(start2 - 30 * MIN)
        .await
        .unwrap();
    let (got, c) = api(
        server.http_addr,
        "POST",
        &format!("/api/schedules/{id2}/cancel"),
        Value::Null,
    )
    .await;
    assert_eq!(got, 200, "{c}");
    assert_eq!(c["status"], "cancelled");
    let occ2 = c["occurrences"].as_array().unwrap();
    assert!(occ2.iter().all(|o| o["status"] == "cancelled"), "{c}");
    server.state.scheduler.tick(start2).await.unwrap();
    let (_, s) = api(
        server.http_addr,
        "GET",
        &format!("/api/schedules/{id2}"),
        Value::Null,
    )
    .await;
    assert!(
        s["occurrences"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "cancelled"),
        "{s}"
    );
    let _ = id;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_database_make_each_change_once() {
    let Some((_, url)) = databases()
        .await
        .into_iter()
        .find(|(db, _)| *db == "postgres")
    else {
        eprintln!("skipped: needs CONCLAVE_TEST_POSTGRES_URL (CI sets it)");
        return;
    };
    let a = start_server(|a| {
        no_loop(a);
        a.database_url = Some(url.clone());
    })
    .await;
    let b = start_server(|a| {
        no_loop(a);
        a.database_url = Some(url.clone());
    })
    .await;
    let start = minute_from_now(30);
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut m = body(&format!("Call {i}"), &format!("host-{i}"), start, 30);
        m["rrule"] = json!("FREQ=DAILY;COUNT=3");
        let (got, s) = api(a.http_addr, "POST", "/api/schedules", m).await;
        assert_eq!(got, 201, "{s}");
        ids.push(s["id"].as_i64().unwrap());
    }
    // Both tick at the same times, at once.
    for at in [start - 20 * MIN, start - 15 * MIN, start + 45 * MIN] {
        let (ra, rb) = tokio::join!(a.state.scheduler.tick(at), b.state.scheduler.tick(at));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        eprintln!(
            "at {}: a {ra:?}, b {rb:?}",
            Utc.timestamp_millis_opt(at).unwrap()
        );
    }
    for id in ids {
        let (_, s) = api(
            b.http_addr,
            "GET",
            &format!("/api/schedules/{id}"),
            Value::Null,
        )
        .await;
        let stored: Vec<&Value> = s["occurrences"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| !o["id"].is_null())
            .collect();
        assert_eq!(stored.len(), 3, "each day created once: {s}");
        // Today's: both processes tried every change; each exists once, in order.
        let today = occurrence(a.http_addr, stored[0]["id"].as_i64().unwrap()).await;
        assert_eq!(today["status"], "missed", "{today}");
        assert_eq!(
            history(&today),
            ["scheduled>ready:lead_time", "ready>missed:nobody_came"]
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
