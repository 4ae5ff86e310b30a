//! Question sets, leads and agent dispatch refuse bad input with a clear error and store
//! nothing for it.

mod common;

use common::{api_key_auth, http, start_server};

#[tokio::test]
async fn bad_question_sets_and_leads_are_refused_and_not_stored() {
    let server = start_server(|_| {}).await;
    let a = server.http_addr;
    let key = api_key_auth();
    let bad_sets = [
        r#"{"name":"","questions":[{"text":"q","category":"budget"}]}"#,
        r#"{"name":"x","questions":[]}"#,
        r#"{"name":"x","questions":[{"text":"q","category":"money"}]}"#,
        r#"{"name":"x","questions":[{"text":"  ","category":"need"}]}"#,
        r#"{"name":"x","questions":[{"text":"q","category":"need"}],"extra":1}"#,
        r#"{"name":"x""#,
    ];
    for body in bad_sets {
        let (status, text) = http(a, "POST", "/api/question-sets", Some(&key), body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains("\"error\""), "{body}: {text}");
    }
    let long = format!(
        r#"{{"name":"x","questions":[{{"text":"{}","category":"need"}}]}}"#,
        "a".repeat(501)
    );
    assert_eq!(
        http(a, "POST", "/api/question-sets", Some(&key), &long)
            .await
            .0,
        400
    );
    let ok = r#"{"name":"x","questions":[{"text":"q","category":"need"}]}"#;
    assert_eq!(http(a, "POST", "/api/question-sets", None, ok).await.0, 401);
    let (_, list) = http(a, "GET", "/api/question-sets", Some(&key), "").await;
    assert_eq!(list, r#"{"question_sets":[]}"#, "nothing stored");

    for body in [
        r#"{"name":" "}"#,
        r#"{"name":"Dana","email":"not an address"}"#,
    ] {
        assert_eq!(
            http(a, "POST", "/api/leads", Some(&key), body).await.0,
            400,
            "{body}"
        );
    }
    let (_, leads) = http(a, "GET", "/api/leads", Some(&key), "").await;
    assert_eq!(leads, r#"{"leads":[]}"#);
    // No transcription on this server: an agent has no ears and is refused, clearly.
    let (status, text) = http(a, "POST", "/api/rooms/r1/agent", Some(&key), "").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("agent_unavailable"), "{text}");
    assert_eq!(
        http(a, "POST", "/api/rooms/r1/agent", Some(&key), "{oops")
            .await
            .0,
        400
    );
    assert_eq!(
        http(a, "DELETE", "/api/rooms/r1/agent", Some(&key), "")
            .await
            .0,
        404
    );
}
