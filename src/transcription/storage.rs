//! The storage consumer: writes a room's final transcript lines to the store. It holds no
//! reference to the room, only what a line needs, and runs until the room's frame channel
//! closes, which happens after the last pipeline has flushed: a final that arrives after
//! everyone left is still stored, under the name the speaker had in the room.

use super::{BusyGuard, ConsumerStats, Names, is_speech};
use crate::store::{Store, TranscriptLine};
use conclave_media::frames::Frame;
use conclave_signaling::ParticipantId;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::broadcast;

/// What a stored line needs to know about its room.
pub(super) struct RoomMeta {
    pub room: String,
    pub meeting_code: Option<String>,
    pub opened_unix_ms: i64,
}

pub(super) async fn run(
    meta: RoomMeta,
    mut frames: broadcast::Receiver<Frame>,
    names: Names,
    store: Store,
    stats: Arc<ConsumerStats>,
    _busy: BusyGuard,
) {
    loop {
        let t = match frames.recv().await {
            Ok(Frame::FinalTranscript(t)) if is_speech(&t.text) => t,
            Ok(Frame::TranscriptGap(g)) => {
                stats.gaps.fetch_add(1, Ordering::Relaxed);
                conclave_media::frames::Transcript {
                    speaker: g.speaker,
                    start_ms: g.start_ms,
                    end_ms: g.end_ms,
                    text: super::GAP_TEXT.to_owned(),
                }
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!(
                    missed = n,
                    "transcript store fell behind; lines may be lost"
                );
                stats.storage_frames_missed.fetch_add(n, Ordering::Relaxed);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let (identity, name) = names
            .lock()
            .expect("names")
            .get(&ParticipantId(t.speaker.clone()))
            .cloned()
            .unwrap_or_else(|| (t.speaker.clone(), t.speaker.clone()));
        let line = TranscriptLine {
            id: 0,
            room: meta.room.clone(),
            meeting_code: meta.meeting_code.clone(),
            speaker_identity: identity,
            speaker_name: name,
            start_ms: meta.opened_unix_ms + t.start_ms as i64,
            end_ms: meta.opened_unix_ms + t.end_ms as i64,
            text: t.text.trim().to_owned(),
        };
        match store.insert_transcript(&line).await {
            Ok(_) => {
                stats.lines_stored.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.lines_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(room = %meta.room, error = %e, "transcript line not stored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_media::frames::{Gap, GapReason, Transcript};

    #[tokio::test]
    async fn finals_and_gaps_are_stored_under_the_speakers_name_and_filler_is_not() {
        let dir =
            std::env::temp_dir().join(format!("conclave-storage-{}", crate::ids::random_id(8)));
        let store = Store::open("", &dir).await.unwrap();
        let (tx, rx) = broadcast::channel(16);
        let names: Names = Arc::default();
        names.lock().unwrap().insert(
            ParticipantId("PA_1".into()),
            ("sam".into(), "Sam Okafor".into()),
        );
        let stats = Arc::new(ConsumerStats::default());
        let busy = Arc::new(super::super::Busy::default());
        let meta = RoomMeta {
            room: "r1".into(),
            meeting_code: None,
            opened_unix_ms: 1_000_000,
        };
        let task = tokio::spawn(run(
            meta,
            rx,
            names,
            store.clone(),
            stats.clone(),
            BusyGuard::new(&busy),
        ));
        let t = |start_ms, text: &str| Transcript {
            speaker: "PA_1".into(),
            start_ms,
            end_ms: start_ms + 900,
            text: text.into(),
        };
        tx.send(Frame::FinalTranscript(t(0, "We can sign on Friday.")))
            .unwrap();
        tx.send(Frame::FinalTranscript(t(1_000, "Mm-hmm.")))
            .unwrap();
        tx.send(Frame::TranscriptGap(Gap {
            speaker: "PA_1".into(),
            start_ms: 2_000,
            end_ms: 4_000,
            reason: GapReason::Dropped,
        }))
        .unwrap();
        // The channel closing (the room's last pipeline gone) ends the consumer.
        drop(tx);
        task.await.unwrap();
        let lines = store.room_transcript("r1", 10, 0).await.unwrap();
        let got: Vec<(&str, &str, i64)> = lines
            .iter()
            .map(|l| (l.speaker_name.as_str(), l.text.as_str(), l.start_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Sam Okafor", "We can sign on Friday.", 1_000_000),
                ("Sam Okafor", super::super::GAP_TEXT, 1_002_000),
            ]
        );
        assert_eq!(stats.gaps.load(Ordering::Relaxed), 1);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
