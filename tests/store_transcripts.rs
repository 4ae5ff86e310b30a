//! Transcript storage and full-text search on SQLite (FTS5) and PostgreSQL (tsvector).

mod common;

use conclave::store::{Store, TranscriptLine};

fn line(room: &str, meeting: Option<&str>, at: i64, text: &str) -> TranscriptLine {
    TranscriptLine {
        id: 0,
        room: room.into(),
        meeting_code: meeting.map(str::to_owned),
        speaker_identity: "sam".into(),
        speaker_name: "Sam".into(),
        start_ms: at,
        end_ms: at + 2_000,
        text: text.into(),
    }
}

#[tokio::test]
async fn lines_are_listed_in_order_and_found_by_words() {
    for (db, url) in common::databases().await {
        let dir =
            std::env::temp_dir().join(format!("conclave-store-{}", conclave::ids::random_id(8)));
        let store = Store::open(&url, &dir)
            .await
            .unwrap_or_else(|e| panic!("{db}: {e}"));
        let room = format!("r{}", conclave::ids::random_id(6));
        store
            .insert_transcript(&line(
                &room,
                Some("ABC-DEF-GHJ"),
                3_000,
                "The budget review moved to Thursday.",
            ))
            .await
            .unwrap();
        store
            .insert_transcript(&line(
                &room,
                Some("ABC-DEF-GHJ"),
                1_000,
                "Welcome everyone, let's start.",
            ))
            .await
            .unwrap();
        store
            .insert_transcript(&line("elsewhere", None, 2_000, "Budgets are due in March."))
            .await
            .unwrap();

        let listed = store.room_transcript(&room, 100, 0).await.unwrap();
        let texts: Vec<&str> = listed.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Welcome everyone, let's start.",
                "The budget review moved to Thursday."
            ],
            "{db}"
        );
        assert!(
            store
                .meeting_transcript("ABC-DEF-GHJ", 100, 0)
                .await
                .unwrap()
                .len()
                >= 2,
            "{db}"
        );

        // Stemming: "budgets" finds "budget" on both engines; a room filter narrows.
        let found = store
            .search_transcripts("budgets", Some(&room), 10)
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{db}: {found:?}");
        assert!(found[0].text.contains("budget review"));
        let all = store.search_transcripts("budget", None, 100).await.unwrap();
        assert!(
            all.iter().any(|l| l.room == "elsewhere") && all.iter().any(|l| l.room == room),
            "{db}: {all:?}"
        );
        // Every word must match; user input is never query syntax.
        assert!(
            store
                .search_transcripts("budget zebra", Some(&room), 10)
                .await
                .unwrap()
                .is_empty(),
            "{db}"
        );
        assert!(
            store
                .search_transcripts("\"); DROP TABLE transcripts; --", None, 10)
                .await
                .is_ok(),
            "{db}"
        );
        assert_eq!(
            store.room_transcript(&room, 100, 0).await.unwrap().len(),
            2,
            "{db}: table intact"
        );
        store.close().await;
    }
}
