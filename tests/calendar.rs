//! iCalendar import and export with files written the way Google Calendar and Outlook write
//! them (tests/fixtures): zones by IANA and by Windows name, folded lines, RRULE, EXDATE, a
//! cancelled single occurrence (RECURRENCE-ID), idempotent re-import and updates by UID, the
//! per-meeting .ics and the host's subscribable feed with its secret token.

mod common;

use common::{api_key_auth, http, start_server};
use serde_json::{Value, json};

async fn api(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value, String) {
    let (status, text) = http(addr, method, path, Some(&api_key_auth()), body).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn schedules(addr: std::net::SocketAddr) -> Vec<Value> {
    let (_, v, _) = api(addr, "GET", "/api/schedules?host=sam", "").await;
    v["schedules"].as_array().unwrap().clone()
}

async fn starts(addr: std::net::SocketAddr, id: &Value) -> Vec<String> {
    let (_, v, _) = api(addr, "GET", &format!("/api/schedules/{id}"), "").await;
    v["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["start"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_and_outlook_files_import_once_update_by_uid_and_export_back() {
    let server = start_server(|a| a.scheduler_tick_ms = Some(0)).await;
    let addr = server.http_addr;
    let google = fixture("google-weekly.ics");
    let (got, r, text) = api(addr, "POST", "/api/hosts/sam/calendar", &google).await;
    assert_eq!(got, 200, "{text}");
    assert_eq!(
        (r["created"].as_i64(), r["cancelled"].as_i64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(r["refused"], json!([]), "{r}");
    let list = schedules(addr).await;
    let weekly = list
        .iter()
        .find(|s| s["title"] == "Acme weekly, pipeline review")
        .expect("weekly imported");
    assert_eq!(weekly["time_zone"], "Europe/Berlin");
    assert_eq!(weekly["rrule"], "FREQ=WEEKLY;BYDAY=MO;COUNT=6");
    assert!(
        weekly["description"]
            .as_str()
            .unwrap()
            .contains("\nAgenda in the shared doc."),
        "{weekly}"
    );
    // Six Mondays at 09:00 Berlin, without the EXDATE (15th) and the cancelled one (29th).
    assert_eq!(
        starts(addr, &weekly["id"]).await,
        [
            "2027-03-08T08:00:00+00:00",
            "2027-03-22T08:00:00+00:00",
            "2027-04-05T07:00:00+00:00",
            "2027-04-12T07:00:00+00:00"
        ]
    );
    let single = list
        .iter()
        .find(|s| s["title"] == "Intro call with Globex")
        .unwrap();
    assert_eq!(single["time_zone"], "UTC");
    assert_eq!(single["duration_minutes"], 60);
    // The same file again: nothing new.
    let (_, r, _) = api(addr, "POST", "/api/hosts/sam/calendar", &google).await;
    assert_eq!(
        (r["created"].as_i64(), r["updated"].as_i64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(schedules(addr).await.len(), 2);
    // The organiser renames the series and cancels the single meeting: updated in place.
    let changed = google
        .replacen("SUMMARY:Acme weekly\\, pipeline review", "SUMMARY:Acme weekly review", 1)
        .replace(
            "DTEND:20270310T160000Z\r\nDTSTAMP:20261201T120000Z\r\nUID:7h8j9k0l1z2x3c4v5b6n@google.com\r\nCREATED:20261201T080000Z\r\nSEQUENCE:0\r\nSTATUS:CONFIRMED",
            "DTEND:20270310T160000Z\r\nDTSTAMP:20261201T120000Z\r\nUID:7h8j9k0l1z2x3c4v5b6n@google.com\r\nCREATED:20261201T080000Z\r\nSEQUENCE:1\r\nSTATUS:CANCELLED",
        );
    assert_ne!(changed, google);
    let (_, r, _) = api(addr, "POST", "/api/hosts/sam/calendar", &changed).await;
    assert_eq!(
        (
            r["created"].as_i64(),
            r["updated"].as_i64(),
            r["cancelled"].as_i64()
        ),
        (Some(0), Some(1), Some(1)),
        "{r}"
    );
    let list = schedules(addr).await;
    assert_eq!(
        list.len(),
        1,
        "the cancelled one is no longer active: {list:?}"
    );
    assert_eq!(list[0]["title"], "Acme weekly review");
    assert_eq!(
        list[0]["id"], weekly["id"],
        "same series, same meeting code"
    );
    assert_eq!(list[0]["meeting"]["code"], weekly["meeting"]["code"]);
    // Outlook: a Windows zone name, a folded UID, an alarm inside the event.
    let (got, r, text) = api(
        addr,
        "POST",
        "/api/hosts/kim/calendar",
        &fixture("outlook-biweekly.ics"),
    )
    .await;
    assert_eq!(got, 200, "{text}");
    assert_eq!(r["created"], 1, "{r}");
    let (_, v, _) = api(addr, "GET", "/api/schedules?host=kim", "").await;
    let qbr = &v["schedules"][0];
    assert_eq!(qbr["time_zone"], "America/Los_Angeles");
    assert_eq!(qbr["title"], "Initech QBR prep");
    // Every other Thursday 10:00 Pacific until 15 April (inclusive), across 14 March.
    assert_eq!(
        starts(addr, &qbr["id"]).await,
        [
            "2027-03-04T18:00:00+00:00",
            "2027-03-18T17:00:00+00:00",
            "2027-04-01T17:00:00+00:00",
            "2027-04-15T17:00:00+00:00"
        ]
    );
    // Export: the series as a calendar app will read it, and back through our parser.
    let (got, _, ics) = api(
        addr,
        "GET",
        &format!("/api/schedules/{}/ics", weekly["id"]),
        "",
    )
    .await;
    assert_eq!(got, 200);
    assert!(
        ics.contains("DTSTART;TZID=Europe/Berlin:20270308T090000\r\n"),
        "{ics}"
    );
    assert!(
        ics.contains("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6\r\n"),
        "{ics}"
    );
    assert!(
        ics.contains("EXDATE;TZID=Europe/Berlin:20270329T090000\r\n"),
        "{ics}"
    );
    assert!(
        ics.contains(&format!(
            "/m/{}",
            weekly["meeting"]["code"].as_str().unwrap()
        )),
        "{ics}"
    );
    let (events, refused) = conclave::schedule::ical::parse(&ics).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(events[0].start.to_string(), "2027-03-08 09:00:00");
    assert_eq!(events[0].exdates.len(), 2);
    // The feed: with its token only.
    let (_, f, _) = api(addr, "GET", "/api/hosts/sam/calendar-feed", "").await;
    let url = f["url"].as_str().unwrap();
    let path = &url[url.find("/calendar/").unwrap()..];
    let (got, feed) = http(addr, "GET", path, None, "").await;
    assert_eq!(got, 200);
    assert!(feed.contains("SUMMARY:Acme weekly review"), "{feed}");
    assert!(
        feed.contains("STATUS:CANCELLED"),
        "the cancelled meeting is in the feed as cancelled"
    );
    let (got, _) = http(addr, "GET", &path.replace("token=", "token=x"), None, "").await;
    assert_eq!(got, 404);
    let (got, _) = http(addr, "GET", "/calendar/kim.ics", None, "").await;
    assert_eq!(got, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_calendars_and_events_are_refused_with_reasons() {
    let server = start_server(|a| a.scheduler_tick_ms = Some(0)).await;
    let addr = server.http_addr;
    let (got, v, _) = api(
        addr,
        "POST",
        "/api/hosts/sam/calendar",
        "this is not a calendar",
    )
    .await;
    assert_eq!(got, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_calendar");
    let file = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n\
        BEGIN:VEVENT\r\nDTSTART:20270310T150000Z\r\nSUMMARY:No UID\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:zone@x\r\nDTSTART;TZID=Middle Earth Standard Time:20270310T150000\r\nSUMMARY:Odd zone\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:monthly@x\r\nDTSTART:20270310T150000Z\r\nRRULE:FREQ=MONTHLY\r\nSUMMARY:Monthly\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:past@x\r\nDTSTART:20200310T150000Z\r\nSUMMARY:Long ago\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:fine@x\r\nDTSTART:20270310T150000Z\r\nDURATION:PT45M\r\nSUMMARY:Fine\r\nEND:VEVENT\r\n\
        END:VCALENDAR\r\n";
    let (got, r, text) = api(addr, "POST", "/api/hosts/sam/calendar", file).await;
    assert_eq!(got, 200, "{text}");
    assert_eq!(r["created"], 1, "{r}");
    let reasons: Vec<String> = r["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{}: {}",
                x["uid"].as_str().unwrap(),
                x["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("no UID"), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("zone@x") && r.contains("unknown time zone")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("monthly@x") && r.contains("MONTHLY")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("past@x") && r.contains("past")),
        "{reasons:?}"
    );
    let (_, v, _) = api(addr, "GET", "/api/schedules?host=sam", "").await;
    assert_eq!(v["schedules"][0]["duration_minutes"], 45);
    // Too big.
    let huge = format!(
        "BEGIN:VCALENDAR\r\n{}END:VCALENDAR\r\n",
        "X-PAD:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(20_000)
    );
    let (got, _, _) = api(addr, "POST", "/api/hosts/sam/calendar", &huge).await;
    assert_eq!(got, 413);
    server.shutdown().await.unwrap();
}
