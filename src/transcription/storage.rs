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
