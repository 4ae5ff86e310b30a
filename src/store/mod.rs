//! Persistence. All SQL lives here, behind [`Store`]: SQLite (a file in the data directory,
//! WAL mode) by default, PostgreSQL when the database URL is `postgres://...`. Both run the
//! same portable statements through sqlx's `Any` driver; only the migrations differ.

mod agents;
mod meetings;
mod notify;
mod schedule;
mod transcripts;

pub use agents::{AgentRunRecord, ConversationEvent, LeadRecord, QuestionSetRecord, QuestionSpec};
pub use meetings::{NewMeeting, ParticipantRecord};
pub use notify::{DeliveryRecord, EmailRecord, NotificationRecord, WebhookRecord};
pub use schedule::{
    AutoJoinLog, HostPreferences, Invitee, OccurrenceEvent, OccurrenceRecord, ScheduleRecord,
    ScheduleSpec,
};
pub use transcripts::TranscriptLine;

use sqlx::AnyPool;
use sqlx::Executor;
use sqlx::any::AnyPoolOptions;
use std::path::Path;
use std::time::Duration;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was hit (e.g. a meeting code already taken).
    #[error("already exists")]
    Conflict,
    /// Anything the database said.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value the code does not understand.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    fn from_write(e: sqlx::Error) -> StoreError {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(e),
        }
    }
}

/// The database handle.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens `url` (`sqlite://...` or `postgres://...`) and applies migrations. An empty URL
    /// means `<data_dir>/conclave.db`.
    pub async fn open(url: &str, data_dir: &Path) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = if url.is_empty() {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| StoreError::Corrupt(format!("data dir: {e}")))?;
            (
                format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("conclave.db").display()
                ),
                Backend::Sqlite,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_owned(), Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            (url.to_owned(), Backend::Sqlite)
        } else {
            return Err(StoreError::Corrupt(format!(
                "unsupported database URL {url:?}: use sqlite:// or postgres://"
            )));
        };
        let mut opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            opts = opts.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    // Writers wait for each other instead of failing with SQLITE_BUSY.
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
        } else {
            opts = opts.max_connections(16);
        }
        let pool = opts.connect(&url).await?;
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL").await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        Ok(Store { pool, backend })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
