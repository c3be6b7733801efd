//! I-JSON (RFC 7493) for the values the server pastes into other clients'
//! frames (`meta`, `data`, `sdp`, `candidate`).
//!
//! Capturing a field as a [`RawValue`] only checks JSON syntax: it lets
//! through lone surrogate escapes (`"\ud800"`) and numbers no double can hold
//! (`1e999`), and it has no nesting limit. A client that parses the relayed
//! frame with serde_json (our Rust client included) fails on all three and
//! loses the whole frame, a `joined` that lists such a peer included. So each
//! such value is parsed once more through serde_json's own validating string
//! and number parsers, by a visitor that looks at every string, number and
//! member name and keeps nothing.
//!
//! Also refused, though plain JSON would allow them:
//! - a member name repeated in one object. I-JSON forbids it, parsers
//!   disagree on which copy wins (JavaScript and `serde_json::Value` keep the
//!   last, derived serde structs such as [`IceCandidate`](crate::messages::IceCandidate)
//!   refuse the frame), and a value two receivers read differently is not
//!   worth relaying.
//! - more than [`MAX_DEPTH`] levels of arrays and objects: serde_json refuses
//!   frames nested 128 deep, and a payload sits up to 3 levels down in the
//!   frames that carry it (`joined.peers[].meta`).
//!
//! Cost (callgrind, `examples/decode_cost.rs`): strings, what offers and
//! answers carry, only need a SIMD search for `\u` (a 2 KB offer decodes in
//! 16.5k instructions instead of 15.8k); objects get the second parse (a join
//! with a 1 KB `meta` 21.0k -> 54.2k, a candidate 3.5k -> 5.9k). Those are
//! joins, updates and call set-up, not the relay path, so serde_json's own
//! rules are kept there rather than a second JSON grammar to maintain.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use memchr::memmem;

/// The deepest nesting of arrays and objects a relayed value may have.
pub const MAX_DEPTH: usize = 64;

/// Objects with more members than this are checked for repeats by sorting
/// their names rather than comparing every pair.
const PAIRWISE_NAMES: usize = 16;

/// How much of a repeated member name an error message quotes.
const QUOTED_NAME_CHARS: usize = 32;

/// Built once: making a searcher is a good part of the cost of one search.
static UNICODE_ESCAPE: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\\u"));

/// Why a value is not I-JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotIJson {
    #[error("a string holds a lone surrogate escape (\\ud800 to \\udfff not in a pair)")]
    LoneSurrogate,
    #[error("a number is out of the range of an IEEE 754 double")]
    NumberOutOfRange,
    #[error("the member name \"{0}\" appears twice in one object")]
    DuplicateName(String),
    #[error("arrays and objects nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Not JSON at all (a [`RawValue`] always is; kept so no input panics).
    #[error("not valid JSON: {0}")]
    Syntax(String),
}

/// Checks that `raw` is I-JSON: every string (member names included) valid
/// Unicode, every number finite as a double, no member name twice in one
/// object, at most [`MAX_DEPTH`] levels deep.
pub fn check(raw: &RawValue) -> Result<(), NotIJson> {
    let text = raw.get();
    // A lone surrogate in valid UTF-8 text can only be spelt as a `\u`
    // escape, and a string has no numbers, names or nesting: a string
    // without one (a browser's SDP) is I-JSON. Parsing a 2 KB offer's SDP
    // again would take the decode of the offer from 15.8k to 40.3k
    // instructions; this search, 16.5k (std's `str::contains`: 17.2k).
    if text.starts_with('"') && UNICODE_ESCAPE.find(text.as_bytes()).is_none() {
        return Ok(());
    }
    let mut found = None;
    let mut names = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Check {
        names: &mut names,
        found: &mut found,
        depth: 0,
    };
    match seed.deserialize(&mut de) {
        Ok(()) => Ok(()),
        Err(e) => Err(found.unwrap_or_else(|| classify(&e))),
    }
}

/// serde_json reports these as syntax errors without a code a caller can
/// read, so they are told apart by their (long stable) messages.
fn classify(e: &serde_json::Error) -> NotIJson {
    let text = e.to_string();
    if text.contains("surrogate") || text.contains("hex escape") {
        NotIJson::LoneSurrogate
    } else if text.contains("number out of range") {
        NotIJson::NumberOutOfRange
    } else if text.contains("recursion limit") {
        NotIJson::TooDeep
    } else {
        NotIJson::Syntax(text)
    }
}

/// Visits one value. Member names of the objects being visited are kept in
/// one stack shared by every level (`names`), so checking for repeats costs
/// one allocation per value, not one per object.
struct Check<'s, 'de> {
    names: &'s mut Vec<Cow<'de, str>>,
    /// The reason, when the visitor itself refuses (serde's error type would
    /// only carry it as text).
    found: &'s mut Option<NotIJson>,
    depth: usize,
}

impl<'de> Check<'_, 'de> {
    fn nested(&mut self) -> Check<'_, 'de> {
        Check {
            names: self.names,
            found: self.found,
            depth: self.depth + 1,
        }
    }

    fn refuse<E: de::Error>(&mut self, why: NotIJson) -> E {
        let e = E::custom(&why);
        *self.found = Some(why);
        e
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        if self.depth >= MAX_DEPTH {
            return Err(self.refuse(NotIJson::TooDeep));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Check<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    // serde_json has already refused bad escapes and infinite numbers by the
    // time these are called: reaching them is the check.
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.enter()?;
        while seq.next_element_seed(self.nested())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.enter()?;
        let start = self.names.len();
        while let Some(name) = map.next_key_seed(Name)? {
            self.names.push(name);
            // The value's own names are pushed above this object's and gone
            // again when it returns.
            map.next_value_seed(self.nested())?;
        }
        let repeated = repeated_name(&mut self.names[start..]).map(quote);
        self.names.truncate(start);
        match repeated {
            Some(name) => Err(self.refuse(NotIJson::DuplicateName(name))),
            None => Ok(()),
        }
    }
}

/// A member name, borrowed from the value unless it had escapes.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// A name that occurs twice in `names` (which it may reorder). Small objects
/// compare every pair; large ones sort, so a 64 KB object of short names
/// cannot cost quadratic time.
fn repeated_name<'n>(names: &'n mut [Cow<'_, str>]) -> Option<&'n str> {
    if names.len() <= PAIRWISE_NAMES {
        for (i, a) in names.iter().enumerate() {
            if names[i + 1..].contains(a) {
                return Some(a);
            }
        }
        return None;
    }
    names.sort_unstable();
    names.windows(2).find(|w| w[0] == w[1]).map(|w| &*w[0])
}

fn quote(name: &str) -> String {
    match name.char_indices().nth(QUOTED_NAME_CHARS) {
        Some((end, _)) => format!("{}...", &name[..end]),
        None => name.to_owned(),
    }
}
