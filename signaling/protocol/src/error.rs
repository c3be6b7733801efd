//! The error codes of the protocol (`docs/protocol.md`, section 6).

/// An `error.code` value. The list is closed: clients switch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadMessage,
    TooLarge,
    RateLimited,
    NotJoined,
    AlreadyJoined,
    InvalidRoom,
    RoomFull,
    UnknownPeer,
    Unauthorized,
    ResumeFailed,
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadMessage,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::InvalidRoom,
        ErrorCode::RoomFull,
        ErrorCode::UnknownPeer,
        ErrorCode::Unauthorized,
        ErrorCode::ResumeFailed,
        ErrorCode::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// Index into [`ErrorCode::ALL`], for per-code counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
