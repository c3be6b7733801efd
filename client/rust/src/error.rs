/// What can go wrong.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server refused a request (`error` with this code).
    #[error("server refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("not in a room")]
    NotJoined,
    #[error("the connection is closed")]
    Closed,
    #[error("gave up reconnecting after {attempts} attempts")]
    GaveUp { attempts: u32 },
    #[error("the session was taken over by another connection")]
    Replaced,
    #[error("no reply within {0:?}")]
    Timeout(std::time::Duration),
}
