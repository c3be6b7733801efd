use std::fmt;

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
    /// This same peer resumed on another connection (close code 4000).
    #[error("the session was taken over by another connection")]
    Replaced,
    /// The server ended this peer's membership for good (close codes
    /// 4001-4003): its resume token is dead, so the client does not
    /// reconnect. `reason` is the close frame's text, as the server put it.
    #[error("{why} (close code {})", why.code())]
    Removed { why: Removal, reason: String },
    #[error("no reply within {0:?}")]
    Timeout(std::time::Duration),
}

/// Why the server removed this client from its room, by close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Removal {
    /// The application's backend removed it (4001; the others see
    /// `peer-left` reason `kicked`).
    Kicked,
    /// The application's backend closed the room (4002; `kicked` too).
    RoomClosed,
    /// A newer connection of the same identity took its place (4003;
    /// `peer-left` reason `replaced`).
    Superseded,
}

impl Removal {
    /// The removal a WebSocket close code stands for, if any.
    pub fn from_close_code(code: u16) -> Option<Removal> {
        match code {
            4001 => Some(Removal::Kicked),
            4002 => Some(Removal::RoomClosed),
            4003 => Some(Removal::Superseded),
            _ => None,
        }
    }

    /// The WebSocket close code the server sends for it.
    pub fn code(self) -> u16 {
        match self {
            Removal::Kicked => 4001,
            Removal::RoomClosed => 4002,
            Removal::Superseded => 4003,
        }
    }
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Removal::Kicked => "removed from the room by the server",
            Removal::RoomClosed => "the room was closed by the server",
            Removal::Superseded => "replaced by a newer connection of the same identity",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_map_to_removals_and_back() {
        for code in [4001, 4002, 4003] {
            let why = Removal::from_close_code(code).expect("a removal code");
            assert_eq!(why.code(), code);
        }
        for code in [1000, 1001, 1008, 1012, 4000, 4004] {
            assert_eq!(Removal::from_close_code(code), None, "{code}");
        }
    }

    #[test]
    fn a_removal_says_why_in_plain_words() {
        let e = ClientError::Removed {
            why: Removal::Kicked,
            reason: "removed from the room by the server".into(),
        };
        assert_eq!(
            e.to_string(),
            "removed from the room by the server (close code 4001)"
        );
    }
}
