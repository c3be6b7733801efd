//! Room names unique to this run, so runs against the same server never meet
//! in a room.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

fn run_nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 40)
    })
}

/// `bench-<run>-<i>`: at most 30 characters of `[a-z0-9-]`.
pub fn room_name(i: usize) -> String {
    format!("bench-{:x}-{i}", run_nonce())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_valid_rooms_and_distinct() {
        let (a, b) = (super::room_name(0), super::room_name(99_999));
        assert_ne!(a, b);
        assert!(b.len() <= 64);
        assert!(b.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
