//! The crate's single error type.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong while configuring, running or authenticating against the TURN server.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The configuration cannot produce a working server; the message says which field is wrong.
    #[error("invalid TURN configuration: {0}")]
    InvalidConfig(String),

    /// The UDP listener could not be bound, most often because another process holds the port.
    #[error("cannot bind TURN UDP socket on {addr}: {source}{hint}", hint = bind_hint(source))]
    Bind {
        /// Address that was requested.
        addr: SocketAddr,
        /// Underlying OS error.
        #[source]
        source: io::Error,
    },

    /// The underlying webrtc-rs TURN server reported a failure.
    #[error("TURN server error: {0}")]
    Server(#[from] turn::Error),

    /// A username does not follow the `<unix-expiry>:<identity>` shape.
    #[error("malformed TURN username {0:?}: expected \"<unix-expiry-seconds>:<identity>\"")]
    MalformedUsername(String),

    /// A username's embedded expiry is not in the future any more.
    #[error("TURN credential expired at {expired_at} (now {now})")]
    Expired {
        /// Expiry carried by the username, in Unix seconds.
        expired_at: u64,
        /// Clock reading used for the check, in Unix seconds.
        now: u64,
    },
}

// Operators hit "address in use" far more than any other bind failure, so name the likely cause.
fn bind_hint(err: &io::Error) -> &'static str {
    if err.kind() == io::ErrorKind::AddrInUse {
        " (is another TURN server or Conclave instance already using this port?)"
    } else {
        ""
    }
}
