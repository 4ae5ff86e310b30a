//! The meetings REST API on SQLite and PostgreSQL: every endpoint, every error, concurrency
//! and restarts.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use common::{API_KEY, API_SECRET, databases, start_server, start_server_in};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    app: axum::Router,
}

impl Api {
    fn new(server: &conclave::server::RunningServer) -> Api {
        Api {
            app: conclave::http::app(server.state.clone()),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let req = match body {
            Some(text) => b
                .header("content-type", "application/json")
                .body(Body::from(text))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, v)
    }

    async fn post(&self, path: &str, auth: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, auth, Some(body.to_string())).await
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn basic(key: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
    )
}

fn code_of(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_its_errors() {
    for (db, url) in databases().await {
        let server = start_server(|a| a.database_url = Some(url.clone())).await;
        let api = Api::new(&server);

        // Create (anonymously, as the home page does).
        let (s, created) = api
            .post(
                "/api/meetings",
                None,
                json!({"name": "Board review", "password": "s3cret", "host_name": "Hana"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{db}: {created}");
        let code = created["code"].as_str().unwrap().to_owned();
        assert!(
            conclave::meetings::model::MeetingCode::parse(&code).is_some(),
            "{code}"
        );
        assert_eq!(
            (
                created["status"].as_str(),
                created["has_password"].as_bool()
            ),
            (Some("waiting"), Some(true))
        );
        assert!(
            created.get("password").is_none() && !created.to_string().contains("argon2"),
            "no secrets: {created}"
        );
        let host = bearer(created["host_token"].as_str().unwrap());

        // Public info.
        let (s, info) = api
            .call("GET", &format!("/api/meetings/{code}"), None, None)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(info["name"], "Board review");
        assert!(!info.to_string().contains("argon2") && !info.to_string().contains("s3cret"));
        let (s, info2) = api
            .call(
                "GET",
                &format!("/api/meetings/{}", code.to_lowercase().replace('-', "")),
                None,
                None,
            )
            .await;
        assert_eq!(
            (s, &info2["code"]),
            (StatusCode::OK, &info["code"]),
            "codes are forgiving"
        );
        let (s, e) = api
            .call("GET", "/api/meetings/AAA-AAA-AAA", None, None)
            .await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::NOT_FOUND, "meeting_not_found")
        );

        // Join: password checks.
        let join = format!("/api/meetings/{code}/join");
        let (s, e) = api.post(&join, None, json!({"name": "Gus"})).await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::UNAUTHORIZED, "password_required")
        );
        let (s, e) = api
            .post(&join, None, json!({"name": "Gus", "password": "guess"}))
            .await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::UNAUTHORIZED, "wrong_password")
        );
        let (s, e) = api
            .post(
                "/api/meetings/AAA-AAA-AAA/join",
                None,
                json!({"name": "Gus"}),
            )
            .await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::NOT_FOUND, "meeting_not_found")
        );
        let (s, guest) = api
            .post(&join, None, json!({"name": "Gus", "password": "s3cret"}))
            .await;
        assert_eq!(s, StatusCode::OK, "{guest}");
        assert_eq!(
            (guest["role"].as_str(), guest["room"].as_str()),
            (Some("participant"), Some(code.as_str()))
        );
        let guest_auth = bearer(guest["token"].as_str().unwrap());
        let (s, host_join) = api.post(&join, Some(&host), json!({"name": "Hana"})).await;
        assert_eq!(
            (s, host_join["role"].as_str()),
            (StatusCode::OK, Some("host")),
            "host needs no password"
        );

        // Malformed and oversized bodies.
        let (s, e) = api
            .call("POST", &join, None, Some("{\"name\":".into()))
            .await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        let (s, e) = api.post(&join, None, json!({"nom": "x"})).await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );
        let (s, e) = api
            .post(
                "/api/meetings",
                None,
                json!({"name": "x".repeat(200 * 1024)}),
            )
            .await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
        let (s, e) = api.post("/api/meetings", None, json!({"name": ""})).await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );

        // Start/end: host only.
        let start = format!("/api/meetings/{code}/start");
        let end = format!("/api/meetings/{code}/end");
        let (s, e) = api.post(&start, None, json!({})).await;
        assert_eq!((s, code_of(&e)), (StatusCode::UNAUTHORIZED, "unauthorized"));
        let (s, e) = api.post(&start, Some(&guest_auth), json!({})).await;
        assert_eq!((s, code_of(&e)), (StatusCode::FORBIDDEN, "not_host"));
        let (s, e) = api
            .post(&start, Some("Bearer forged.token.here"), json!({}))
            .await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::UNAUTHORIZED, "invalid_token")
        );
        let (s, e) = api
            .post(&start, Some(&basic(API_KEY, "wrong-secret")), json!({}))
            .await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::UNAUTHORIZED, "invalid_api_key")
        );
        let (s, e) = api.post(&start, Some("Digest x"), json!({})).await;
        assert_eq!((s, code_of(&e)), (StatusCode::UNAUTHORIZED, "unauthorized"));
        let (s, m) = api.post(&start, Some(&host), json!({})).await;
        assert_eq!(
            (s, m["status"].as_str()),
            (StatusCode::OK, Some("active")),
            "{m}"
        );
        assert!(m["started_at"].as_str().is_some());
        let (s, e) = api.post(&start, Some(&host), json!({})).await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::CONFLICT, "invalid_transition")
        );
        let (s, e) = api.post(&end, Some(&guest_auth), json!({})).await;
        assert_eq!((s, code_of(&e)), (StatusCode::FORBIDDEN, "not_host"));

        // Participants and leave.
        let parts = format!("/api/meetings/{code}/participants");
        let (s, e) = api.call("GET", &parts, None, None).await;
        assert_eq!((s, code_of(&e)), (StatusCode::UNAUTHORIZED, "unauthorized"));
        let (s, p) = api.call("GET", &parts, Some(&guest_auth), None).await;
        assert_eq!(s, StatusCode::OK);
        let names: Vec<&str> = p["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Gus", "Hana"]);
        assert_eq!(p["participants"][1]["role"], "host");
        let (s, _) = api
            .call(
                "POST",
                &format!("/api/meetings/{code}/leave"),
                Some(&guest_auth),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (_, p) = api
            .call("GET", &parts, Some(&basic(API_KEY, API_SECRET)), None)
            .await;
        assert!(p["participants"][0]["left_at"].as_str().is_some(), "{p}");
        assert!(p["participants"][1]["left_at"].is_null());

        // End; then nobody joins and nothing restarts it.
        let (s, m) = api.post(&end, Some(&host), json!({})).await;
        assert_eq!((s, m["status"].as_str()), (StatusCode::OK, Some("ended")));
        let (s, e) = api
            .post(&join, None, json!({"name": "Late", "password": "s3cret"}))
            .await;
        assert_eq!((s, code_of(&e)), (StatusCode::GONE, "meeting_ended"));
        let (s, e) = api.post(&start, Some(&host), json!({})).await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::CONFLICT, "invalid_transition")
        );
        let (s, e) = api.post(&end, Some(&host), json!({})).await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::CONFLICT, "invalid_transition")
        );

        // Listing: the host sees theirs; API clients see what they created; paging works.
        let svc = basic(API_KEY, API_SECRET);
        for i in 0..3 {
            let (s, _) = api
                .post(
                    "/api/meetings",
                    Some(&svc),
                    json!({"name": format!("ops {i}")}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED);
        }
        let (s, page1) = api
            .call("GET", "/api/meetings?limit=2", Some(&svc), None)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(page1["meetings"].as_array().unwrap().len(), 2);
        assert_eq!(page1["meetings"][0]["name"], "ops 2", "newest first");
        assert_eq!(page1["next_offset"], 2);
        let (_, page2) = api
            .call("GET", "/api/meetings?limit=2&offset=2", Some(&svc), None)
            .await;
        assert_eq!(page2["meetings"].as_array().unwrap().len(), 1);
        assert!(page2["next_offset"].is_null());
        let (_, mine) = api.call("GET", "/api/meetings", Some(&host), None).await;
        assert_eq!(mine["meetings"].as_array().unwrap().len(), 1);
        assert_eq!(mine["meetings"][0]["code"].as_str(), Some(code.as_str()));
        let (s, e) = api.call("GET", "/api/meetings", None, None).await;
        assert_eq!((s, code_of(&e)), (StatusCode::UNAUTHORIZED, "unauthorized"));
        let (s, e) = api
            .call("GET", "/api/meetings?limit=0", Some(&svc), None)
            .await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );
        server.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_joins_give_fifty_participants() {
    for (db, url) in databases().await {
        // Fifty joins from one address at once: above the per-address rate on purpose
        // (tests/abuse.rs covers the limit), so the limit is raised here.
        let server = start_server(|a| {
            a.database_url = Some(url.clone());
            a.rate_limit_per_minute = Some(100_000);
        })
        .await;
        let api = std::sync::Arc::new(Api::new(&server));
        let (_, created) = api
            .post(
                "/api/meetings",
                None,
                json!({"name": "crowd", "password": "pw"}),
            )
            .await;
        let code = created["code"].as_str().unwrap().to_owned();
        let joins: Vec<_> = (0..50)
            .map(|i| {
                let api = api.clone();
                let code = code.clone();
                tokio::spawn(async move {
                    api.post(
                        &format!("/api/meetings/{code}/join"),
                        None,
                        json!({"name": format!("p{i}"), "password": "pw"}),
                    )
                    .await
                })
            })
            .collect();
        let mut identities = std::collections::HashSet::new();
        for j in joins {
            let (s, v) = j.await.unwrap();
            assert_eq!(s, StatusCode::OK, "{db}: {v}");
            identities.insert(v["identity"].as_str().unwrap().to_owned());
        }
        assert_eq!(identities.len(), 50, "{db}: distinct identities");
        let (_, p) = api
            .call(
                "GET",
                &format!("/api/meetings/{code}/participants"),
                Some(&basic(API_KEY, API_SECRET)),
                None,
            )
            .await;
        let rows = p["participants"].as_array().unwrap();
        assert_eq!(rows.len(), 50, "{db}");
        let names: std::collections::HashSet<&str> =
            rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names.len(), 50, "{db}: every join recorded once");
        server.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meetings_and_history_survive_a_restart() {
    for (db, url) in databases().await {
        let dir =
            std::env::temp_dir().join(format!("conclave-restart-{}", conclave::ids::random_id(8)));
        let server = start_server_in(dir.clone(), |a| a.database_url = Some(url.clone())).await;
        let api = Api::new(&server);
        let (_, created) = api
            .post(
                "/api/meetings",
                None,
                json!({"name": "durable", "password": "pw"}),
            )
            .await;
        let code = created["code"].as_str().unwrap().to_owned();
        let host = bearer(created["host_token"].as_str().unwrap());
        api.post(
            &format!("/api/meetings/{code}/join"),
            None,
            json!({"name": "Gus", "password": "pw"}),
        )
        .await;
        api.post(
            &format!("/api/meetings/{code}/start"),
            Some(&host),
            json!({}),
        )
        .await;
        server.shutdown().await.unwrap();

        let server = start_server_in(dir, |a| a.database_url = Some(url.clone())).await;
        let api = Api::new(&server);
        let (s, info) = api
            .call("GET", &format!("/api/meetings/{code}"), None, None)
            .await;
        assert_eq!(
            (s, info["status"].as_str(), info["name"].as_str()),
            (StatusCode::OK, Some("active"), Some("durable")),
            "{db}"
        );
        let (_, p) = api
            .call(
                "GET",
                &format!("/api/meetings/{code}/participants"),
                Some(&host),
                None,
            )
            .await;
        assert_eq!(p["participants"][0]["name"], "Gus", "{db}: {p}");
        // The old host token still works, and the password is still required of others.
        let (s, e) = api
            .post(
                &format!("/api/meetings/{code}/join"),
                None,
                json!({"name": "Eve", "password": "nope"}),
            )
            .await;
        assert_eq!(
            (s, code_of(&e)),
            (StatusCode::UNAUTHORIZED, "wrong_password")
        );
        let (s, _) = api
            .post(&format!("/api/meetings/{code}/end"), Some(&host), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{db}");
        server.shutdown().await.unwrap();
    }
}
