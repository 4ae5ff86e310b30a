//! `/api/users/{identity}/notifications`, `/api/hosts/{identity}/webhooks`, `/api/webhooks/{id}`.
//! API key only.

use super::error::{ApiJson, AppError, ErrorBody, service_only, store_err};
use crate::meetings::Caller;
use crate::notify::KINDS;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// `?unread=true`.
#[derive(Debug, Deserialize)]
pub struct UnreadQuery {
    /// Only unread ones.
    #[serde(default)]
    pub unread: bool,
}

#[utoipa::path(get, path = "/api/users/{identity}/notifications", tag = "notifications",
    params(("identity" = String, Path), ("unread" = Option<bool>, Query)),
    responses((status = 200, description = "{\"notifications\": [...]}, newest first, at most 200")), security(("api_key" = [])))]
/// `GET /api/users/{identity}/notifications`.
pub async fn list(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
    Query(q): Query<UnreadQuery>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let n = s
        .meetings
        .store()
        .notifications(&identity, q.unread, 200)
        .await
        .map_err(store_err)?;
    Ok(Json(json!({ "notifications": n })))
}

#[utoipa::path(post, path = "/api/users/{identity}/notifications/{id}/read", tag = "notifications",
    params(("identity" = String, Path), ("id" = i64, Path)),
    responses((status = 204, description = "marked read"), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
/// `POST /api/users/{identity}/notifications/{id}/read`.
pub async fn mark_read(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path((identity, id)): Path<(String, i64)>,
) -> Result<StatusCode, AppError> {
    service_only(&caller)?;
    if !s
        .meetings
        .store()
        .mark_notification_read(&identity, id, crate::clock::now_ms())
        .await
        .map_err(store_err)?
    {
        return Err(AppError::not_found(format!(
            "no notification {id} for {identity}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/users/{identity}/notification-preferences", tag = "notifications",
    params(("identity" = String, Path)), responses((status = 200, description = "{kind: enabled} for every kind")),
    security(("api_key" = [])))]
/// `GET /api/users/{identity}/notification-preferences`.
pub async fn get_preferences(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
) -> Result<Json<BTreeMap<String, bool>>, AppError> {
    service_only(&caller)?;
    let muted = s
        .meetings
        .store()
        .muted_kinds(&identity)
        .await
        .map_err(store_err)?;
    Ok(Json(
        KINDS
            .iter()
            .map(|k| ((*k).to_owned(), !muted.iter().any(|m| m == k)))
            .collect(),
    ))
}

#[utoipa::path(put, path = "/api/users/{identity}/notification-preferences", tag = "notifications",
    params(("identity" = String, Path)), request_body = Object,
    responses((status = 200, description = "{kind: enabled} for every kind"), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
/// `PUT /api/users/{identity}/notification-preferences`: `{kind: enabled}` for the kinds to change.
pub async fn put_preferences(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
    ApiJson(b): ApiJson<BTreeMap<String, bool>>,
) -> Result<Json<BTreeMap<String, bool>>, AppError> {
    service_only(&caller)?;
    if let Some(k) = b.keys().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "unknown_kind",
            format!("{k:?} is not a notification kind ({})", KINDS.join(", ")),
        ));
    }
    for (k, on) in &b {
        s.meetings
            .store()
            .set_notification_kind(&identity, k, *on)
            .await
            .map_err(store_err)?;
    }
    get_preferences(State(s), caller, Path(identity)).await
}

/// A webhook to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Kinds to send (empty or absent: all).
    #[serde(default)]
    pub kinds: Vec<String>,
}

#[utoipa::path(post, path = "/api/hosts/{identity}/webhooks", tag = "notifications", params(("identity" = String, Path)),
    request_body = WebhookBody,
    responses((status = 201, description = "the webhook with its signing secret (shown only now)"), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
/// `POST /api/hosts/{identity}/webhooks`.
pub async fn add_webhook(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
    ApiJson(b): ApiJson<WebhookBody>,
) -> Result<impl IntoResponse, AppError> {
    service_only(&caller)?;
    let url = b.url.trim();
    let ok = url.len() <= 2_000
        && url
            .parse::<hyper::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if !ok {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_url",
            "url must be an http:// or https:// URL",
        ));
    }
    if let Some(k) = b.kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "unknown_kind",
            format!("{k:?} is not a notification kind"),
        ));
    }
    let secret = format!("whsec_{}", crate::ids::random_id(32));
    let w = s
        .meetings
        .store()
        .insert_webhook(&identity, url, &secret, &b.kinds, crate::clock::now_ms())
        .await
        .map_err(store_err)?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": w.id, "host_identity": w.host_identity, "url": w.url, "kinds": w.kinds, "secret": secret,
                    "signature": "X-Conclave-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>"}),
        ),
    ))
}

#[utoipa::path(get, path = "/api/hosts/{identity}/webhooks", tag = "notifications", params(("identity" = String, Path)),
    responses((status = 200, description = "{\"webhooks\": [...]} (without secrets)")), security(("api_key" = [])))]
/// `GET /api/hosts/{identity}/webhooks`.
pub async fn list_webhooks(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let w = s
        .meetings
        .store()
        .webhooks(&identity)
        .await
        .map_err(store_err)?;
    Ok(Json(json!({ "webhooks": w })))
}

#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "notifications", params(("id" = i64, Path)),
    responses((status = 204, description = "removed; its pending deliveries give up"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `DELETE /api/webhooks/{id}`.
pub async fn remove_webhook(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, AppError> {
    service_only(&caller)?;
    if !s
        .meetings
        .store()
        .deactivate_webhook(id, crate::clock::now_ms())
        .await
        .map_err(store_err)?
    {
        return Err(AppError::not_found(format!("no active webhook {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "notifications", params(("id" = i64, Path)),
    responses((status = 200, description = "{\"deliveries\": [...]}, newest first, each with its attempts' status codes"),
              (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
/// `GET /api/webhooks/{id}/deliveries`: the delivery log.
pub async fn deliveries(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, AppError> {
    service_only(&caller)?;
    let store = s.meetings.store();
    if store.webhook(id).await.map_err(store_err)?.is_none() {
        return Err(AppError::not_found(format!("no webhook {id}")));
    }
    let mut out = Vec::new();
    for d in store.deliveries(id, 200).await.map_err(store_err)? {
        let codes = store.attempt_codes(d.id).await.map_err(store_err)?;
        out.push(json!({"id": d.id, "event_id": d.event_id, "kind": d.kind, "status": d.status, "attempts": d.attempts,
                        "attempt_status_codes": codes, "last_error": d.last_error,
                        "next_attempt_at": (d.status == "pending").then(|| crate::clock::rfc3339(d.next_at)),
                        "created_at": crate::clock::rfc3339(d.created_at)}));
    }
    Ok(Json(json!({ "deliveries": out })))
}

#[utoipa::path(get, path = "/api/hosts/{identity}/events", tag = "notifications", params(("identity" = String, Path)),
    responses((status = 200, description = "text/event-stream: `status`/`bot` changes of the host's meetings and their notifications, as they happen")),
    security(("api_key" = [])))]
/// `GET /api/hosts/{identity}/events`: the dashboard's live feed (server-sent events). Each
/// event is `event: schedule` (a status or agent change) or `event: notification`, with JSON
/// data; `event: resync` when the feed fell behind (reload everything); a comment every 15 s.
pub async fn events(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(identity): Path<String>,
) -> Result<axum::response::Response, AppError> {
    service_only(&caller)?;
    let mut changes = s.scheduler.subscribe();
    let mut notes = s.notifier.subscribe();
    let mut stopping = s.stopping.subscribe();
    let store = s.meetings.store().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let mut hosts: std::collections::HashMap<i64, bool> = std::collections::HashMap::new();
        let mut beat = tokio::time::interval(std::time::Duration::from_secs(15));
        let _ = tx.send(": connected\n\n".into()).await;
        loop {
            let out = tokio::select! {
                r = stopping.changed() => {
                    let stop = r.is_err() || *stopping.borrow();
                    if stop {
                        return;
                    }
                    continue;
                }
                _ = beat.tick() => ": keep-alive\n\n".to_owned(),
                e = changes.recv() => match e {
                    Ok(e) => {
                        let mine = match hosts.get(&e.schedule_id) {
                            Some(m) => *m,
                            None => {
                                let m = matches!(store.schedule(e.schedule_id).await, Ok(Some(x)) if x.spec.host_identity == identity);
                                hosts.insert(e.schedule_id, m);
                                m
                            }
                        };
                        if !mine {
                            continue;
                        }
                        format!("event: schedule\ndata: {}\n\n", serde_json::to_string(&e).unwrap_or_default())
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => "event: resync\ndata: {}\n\n".to_owned(),
                    Err(_) => return,
                },
                n = notes.recv() => match n {
                    Ok(n) if n.user_identity == identity => {
                        format!("event: notification\ndata: {}\n\n", serde_json::to_string(&n).unwrap_or_default())
                    }
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => "event: resync\ndata: {}\n\n".to_owned(),
                    Err(_) => return,
                },
            };
            // A client that does not read is dropped rather than buffered without bound.
            match tokio::time::timeout(std::time::Duration::from_secs(5), tx.send(out)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| {
            (
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(chunk)),
                rx,
            )
        })
    });
    Ok(axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "text/event-stream")
        .header(axum::http::header::CACHE_CONTROL, "no-cache")
        .body(axum::body::Body::from_stream(stream))
        .expect("static response parts"))
}
