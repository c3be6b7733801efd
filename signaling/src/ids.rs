//! Newtypes for the ids that flow through the server, so they cannot be swapped.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                $name(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A room name (validated before one is made).
    RoomId
);
id_type!(
    /// A peer's id: assigned by the server, random, unique across the cluster.
    PeerId
);
id_type!(
    /// A server instance's id.
    NodeId
);

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // The OS RNG failing is not something a server can recover from.
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * n);
    for b in buf {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

impl PeerId {
    /// A fresh random id (64 bits, 16 hex chars).
    pub fn random() -> Self {
        PeerId::new(random_hex(8))
    }
}

/// Milliseconds since the Unix epoch, on this machine's clock.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How far the cluster's clock (Redis's `TIME`) is ahead of this machine's,
/// in ms, as learned on the last heartbeat. One value per process: a
/// process is one node, and nodes sharing a machine share its clock.
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch on the cluster's clock: what every
/// timestamp another node compares with (`joined_at`, stream `ts`) must
/// use, so that one node's broken NTP cannot reorder or age its peers.
/// Standalone (no Redis) it is this machine's clock.
pub fn cluster_ms() -> u64 {
    unix_ms().saturating_add_signed(CLOCK_OFFSET_MS.load(Ordering::Relaxed))
}

/// Learns the cluster clock from one reading of it, `cluster_now`, taken
/// between the local readings `sent` and `received` (the midpoint is the
/// best guess of when Redis read it).
pub fn learn_cluster_clock(sent: u64, cluster_now: u64, received: u64) {
    let local = sent / 2 + received / 2;
    let offset = i64::try_from(cluster_now)
        .unwrap_or(i64::MAX)
        .saturating_sub(i64::try_from(local).unwrap_or(i64::MAX));
    CLOCK_OFFSET_MS.store(offset, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts docs/protocol.md §2.1.
    #[test]
    fn random_hex_is_lowercase_hex_of_the_asked_length_and_varies() {
        let a = random_hex(8);
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        // 64 random bits: equal twice in a row means the bytes are not random.
        assert_ne!(a, random_hex(8));
        // Every nibble value shows up over enough bytes.
        let many = random_hex(512);
        assert!("0123456789abcdef".chars().all(|c| many.contains(c)));
    }

    #[test]
    fn the_cluster_clock_follows_the_last_reading() {
        let local = unix_ms();
        learn_cluster_clock(local, local - 30_000, local);
        let behind = cluster_ms();
        learn_cluster_clock(local, local, local);
        assert!(cluster_ms() >= local);
        assert!((local - 30_000..local - 29_000).contains(&behind));
    }
}
