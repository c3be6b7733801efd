//! The room-name rule (1 to `max_len` chars of `A-Z a-z 0-9 _ . -`) and the
//! display-name rule (at most `max_chars` characters, no control character).

/// The default longest room name.
pub const DEFAULT_MAX_ROOM_LEN: usize = 64;

/// Whether `name` is a valid room name of at most `max_len` characters.
pub fn is_valid_room(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `name` is a valid display name of at most `max_chars`
/// characters: what a `join` may ask for and the admin API may set.
pub fn is_valid_name(name: &str, max_chars: usize) -> bool {
    name.chars().count() <= max_chars && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts docs/protocol.md §2.1.
    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(is_valid_room("Az09_.-", 64));
        assert!(is_valid_room(&"r".repeat(64), 64));
    }

    /// Asserts docs/protocol.md §2.1.
    #[test]
    fn refuses_everything_else() {
        for bad in ["", "a b", "../x", "a/b", "caf\u{e9}", "a\nb", "x%20y"] {
            assert!(!is_valid_room(bad, 64), "{bad:?}");
        }
        assert!(!is_valid_room(&"r".repeat(65), 64));
    }
}
