//! [`Text`]: one encoded frame for a client, as the server passes it
//! around: shared (a clone is a reference count, so fan-out and the
//! cluster never copy a relayed frame) and known to be UTF-8. The hub, the
//! outboxes and every cluster engine deal in it; only the socket knows the
//! WebSocket library's type underneath.

use axum::extract::ws::Utf8Bytes;
use std::fmt;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Text(Utf8Bytes);

impl Text {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, for the socket that writes them.
    pub(crate) fn into_ws(self) -> Utf8Bytes {
        self.0
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Utf8Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text(Utf8Bytes::from_static(s))
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
