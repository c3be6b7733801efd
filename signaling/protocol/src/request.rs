//! Decoding client → server messages.
//!
//! A frame is parsed once into a flat set of optional raw fields, then checked
//! against its `type`. Every field stays a slice of the frame, so the relayed
//! payloads are never copied or re-encoded. Size limits are the server's
//! business (they are configurable); this module checks shapes, and that
//! every value the server copies into other clients' frames is I-JSON
//! ([`ijson`](crate::ijson)), so what one client sends cannot make the
//! others' parsers fail.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;

use crate::ErrorCode;
use crate::ijson;

/// The longest `id` a client may attach to a request (in characters).
pub const MAX_ID_CHARS: usize = 64;

/// Which SDP/ICE relay a request is; each is relayed to one peer with one payload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayKind {
    Offer,
    Answer,
    Candidate,
    Message,
}

impl RelayKind {
    pub const ALL: [RelayKind; 4] = [
        RelayKind::Offer,
        RelayKind::Answer,
        RelayKind::Candidate,
        RelayKind::Message,
    ];

    /// The `type` of the message, sent and relayed alike.
    pub fn type_name(self) -> &'static str {
        match self {
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::Candidate => "candidate",
            RelayKind::Message => "message",
        }
    }

    /// The field that carries the payload.
    pub fn payload_field(self) -> &'static str {
        match self {
            RelayKind::Offer | RelayKind::Answer => "sdp",
            RelayKind::Candidate => "candidate",
            RelayKind::Message => "data",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A decoded client request, borrowing from the frame it came in.
#[derive(Debug)]
pub enum Request<'a> {
    Join(Join<'a>),
    /// `offer`, `answer`, `candidate` (always with `to`) or `message` (`to` optional: broadcast).
    Relay {
        kind: RelayKind,
        to: Option<Cow<'a, str>>,
        /// The payload exactly as sent: a JSON string for `sdp`, an object or `null`
        /// for `candidate`, any JSON for `data`.
        payload: &'a RawValue,
    },
    Update {
        /// A JSON object.
        meta: &'a RawValue,
    },
    Leave,
    Ping,
}

#[derive(Debug)]
pub struct Join<'a> {
    pub room: Cow<'a, str>,
    pub name: Option<Cow<'a, str>>,
    /// A JSON object, when given.
    pub meta: Option<&'a RawValue>,
    pub token: Option<Cow<'a, str>>,
    pub resume: Option<Cow<'a, str>>,
}

/// A decoded frame: the request and the `id` to echo as `ref`.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The raw `id` (a JSON string or number), echoed verbatim as `ref`.
    pub id: Option<&'a RawValue>,
    pub request: Request<'a>,
}

/// Why a frame was refused. `id` is set when the frame was an object whose
/// `id` could be read, so the error can carry `ref`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError<'a> {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub id: Option<&'a RawValue>,
}

/// Every field any request may carry. Each is `Some` exactly when the key is
/// present (even when its value is `null`), so `"candidate": null` and a
/// missing `candidate` can be told apart.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Fields<'a> {
    #[serde(rename = "type", borrow, deserialize_with = "present")]
    ty: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    resume: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    sdp: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    candidate: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn bad<'a>(message: impl Into<Cow<'static, str>>, id: Option<&'a RawValue>) -> DecodeError<'a> {
    DecodeError {
        code: ErrorCode::BadMessage,
        message: message.into(),
        id,
    }
}

/// Reads a raw JSON value as a string, borrowing when it has no escapes.
pub fn raw_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    if let Ok(s) = serde_json::from_str::<&str>(text) {
        return Some(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

fn valid_id(raw: &RawValue) -> bool {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => raw_str(raw).is_some_and(|s| s.chars().count() <= MAX_ID_CHARS),
        // Echoed as `ref`: a number no double holds would break the sender's parser.
        Some(b'-' | b'0'..=b'9') => text.len() <= MAX_ID_CHARS && ijson::check(raw).is_ok(),
        _ => false,
    }
}

/// Decodes one text frame.
pub fn decode(frame: &str) -> Result<Envelope<'_>, DecodeError<'_>> {
    // serde would accept a JSON array as a struct (by position): only objects are messages.
    if !frame.trim_start().starts_with('{') {
        return Err(bad(
            if serde_json::from_str::<serde::de::IgnoredAny>(frame).is_ok() {
                "a message must be a JSON object"
            } else {
                "not valid JSON"
            },
            None,
        ));
    }
    let f: Fields<'_> = serde_json::from_str(frame).map_err(|e| {
        bad(
            if e.is_syntax() || e.is_eof() {
                Cow::Borrowed("not valid JSON")
            } else {
                Cow::Owned(format!("malformed message: {e}"))
            },
            None,
        )
    })?;
    let id = match f.id {
        Some(raw) if !valid_id(raw) => {
            return Err(bad(
                "`id` must be a string of at most 64 characters or a finite number",
                None,
            ));
        }
        id => id,
    };
    let ty =
        f.ty.and_then(raw_str)
            .ok_or_else(|| bad("missing or non-string `type`", id))?;
    let request = match ty.as_ref() {
        "join" => Request::Join(Join {
            room: req_str(f.room, "room", id)?,
            name: opt_str(f.name, "name", id)?,
            meta: opt_object(f.meta, "meta", id)?
                .map(|m| relayable(m, "meta", id))
                .transpose()?,
            token: opt_str(f.token, "token", id)?,
            resume: opt_str(f.resume, "resume", id)?,
        }),
        "offer" | "answer" => Request::Relay {
            kind: if ty == "offer" {
                RelayKind::Offer
            } else {
                RelayKind::Answer
            },
            to: Some(req_str(f.to, "to", id)?),
            payload: match f.sdp {
                Some(raw) if raw.get().starts_with('"') => relayable(raw, "sdp", id)?,
                _ => return Err(bad("`sdp` must be a string", id)),
            },
        },
        "candidate" => Request::Relay {
            kind: RelayKind::Candidate,
            to: Some(req_str(f.to, "to", id)?),
            payload: match f.candidate {
                Some(raw) if is_object(raw) || raw.get() == "null" => {
                    relayable(raw, "candidate", id)?
                }
                _ => return Err(bad("`candidate` must be an object or null", id)),
            },
        },
        "message" => Request::Relay {
            kind: RelayKind::Message,
            to: strict_opt_str(f.to, "to", id)?,
            payload: relayable(f.data.ok_or_else(|| bad("missing `data`", id))?, "data", id)?,
        },
        "update" => Request::Update {
            meta: relayable(
                opt_object(f.meta, "meta", id)?.ok_or_else(|| bad("missing `meta`", id))?,
                "meta",
                id,
            )?,
        },
        "leave" => Request::Leave,
        "ping" => Request::Ping,
        _ => return Err(bad("unknown message type", id)),
    };
    Ok(Envelope { id, request })
}

/// A value the server will copy into other clients' frames, once it is I-JSON.
fn relayable<'a>(
    raw: &'a RawValue,
    field: &str,
    id: Option<&'a RawValue>,
) -> Result<&'a RawValue, DecodeError<'a>> {
    match ijson::check(raw) {
        Ok(()) => Ok(raw),
        Err(why) => Err(bad(
            format!("`{field}` is not I-JSON (RFC 7493): {why}"),
            id,
        )),
    }
}

fn req_str<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    id: Option<&'a RawValue>,
) -> Result<Cow<'a, str>, DecodeError<'a>> {
    match raw {
        None => Err(bad(format!("missing `{field}`"), id)),
        Some(raw) => raw_str(raw).ok_or_else(|| bad(format!("`{field}` must be a string"), id)),
    }
}

/// An optional string field; `null` counts as absent.
fn opt_str<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    id: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, DecodeError<'a>> {
    strict_opt_str(raw.filter(|r| r.get() != "null"), field, id)
}

/// An optional string field that must be a string when present: `message.to`,
/// where treating `null` as absent would turn a directed message into a broadcast.
fn strict_opt_str<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    id: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, DecodeError<'a>> {
    raw.map(|raw| raw_str(raw).ok_or_else(|| bad(format!("`{field}` must be a string"), id)))
        .transpose()
}

/// An optional object field; `null` counts as absent.
fn opt_object<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    id: Option<&'a RawValue>,
) -> Result<Option<&'a RawValue>, DecodeError<'a>> {
    match raw.filter(|r| r.get() != "null") {
        Some(raw) if !is_object(raw) => Err(bad(format!("`{field}` must be an object"), id)),
        raw => Ok(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(frame: &str) -> ErrorCode {
        decode(frame).expect_err(frame).code
    }

    #[test]
    fn decodes_each_request() {
        let e = decode(r#"{"type":"join","room":"r1","name":"al","meta":{"a":1},"id":7}"#).unwrap();
        assert_eq!(e.id.map(RawValue::get), Some("7"));
        match e.request {
            Request::Join(j) => {
                assert_eq!(j.room, "r1");
                assert_eq!(j.name.as_deref(), Some("al"));
                assert_eq!(j.meta.map(RawValue::get), Some(r#"{"a":1}"#));
            }
            other => panic!("{other:?}"),
        }
        match decode(r#"{"type":"candidate","to":"p","candidate":null}"#)
            .unwrap()
            .request
        {
            Request::Relay { kind, to, payload } => {
                assert_eq!(kind, RelayKind::Candidate);
                assert_eq!(to.as_deref(), Some("p"));
                assert_eq!(payload.get(), "null");
            }
            other => panic!("{other:?}"),
        }
        match decode(r#"{"type":"message","data":{"x":[1]}}"#)
            .unwrap()
            .request
        {
            Request::Relay {
                to: None, payload, ..
            } => assert_eq!(payload.get(), r#"{"x":[1]}"#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(r#"{"type":"ping"}"#).unwrap().request,
            Request::Ping
        ));
        assert!(matches!(
            decode(r#" {"type":"leave","x":[1]}"#).unwrap().request,
            Request::Leave
        ));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        match decode(r#"{"type":"offer","to":"p\u0031","sdp":"v=0\r\n"}"#)
            .unwrap()
            .request
        {
            Request::Relay { to, payload, .. } => {
                assert_eq!(to.as_deref(), Some("p1"));
                assert_eq!(payload.get(), r#""v=0\r\n""#);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Asserts docs/protocol.md §3, §3.1, §3.2, §6, §16.
    #[test]
    fn refuses_bad_shapes() {
        for f in [
            "",
            "hello{",
            "[1,2]",
            "42",
            "null",
            "\"ping\"",
            r#"{"type":"ping""#,
            r#"{"foo":1}"#,
            r#"{"type":5}"#,
            r#"{"type":"PING"}"#,
            r#"{"type":"join"}"#,
            r#"{"type":"join","room":5}"#,
            r#"{"type":"offer","sdp":"v=0"}"#,
            r#"{"type":"offer","to":"b"}"#,
            r#"{"type":"answer","to":"b","sdp":7}"#,
            r#"{"type":"candidate","to":"b"}"#,
            r#"{"type":"candidate","to":"b","candidate":"x"}"#,
            r#"{"type":"message","to":"b"}"#,
            r#"{"type":"offer","to":12,"sdp":"v=0"}"#,
            r#"{"type":"update"}"#,
            r#"{"type":"update","meta":[1]}"#,
            r#"{"type":"join","room":"r","meta":"x"}"#,
            r#"{"type":"ping","id":{"a":1}}"#,
            r#"{"type":"ping","type":"ping"}"#,
            r#"{"type":"message","to":null,"data":1}"#,
            r#"{"type":"update","meta":null}"#,
        ] {
            assert_eq!(code(f), ErrorCode::BadMessage, "{f}");
        }
    }

    /// Asserts docs/protocol.md §3.2, §4.1.
    #[test]
    fn null_optional_fields_count_as_absent() {
        match decode(
            r#"{"type":"join","room":"r","name":null,"meta":null,"resume":null,"token":null}"#,
        )
        .unwrap()
        .request
        {
            Request::Join(j) => {
                assert!(
                    j.name.is_none() && j.meta.is_none() && j.resume.is_none() && j.token.is_none()
                )
            }
            other => panic!("{other:?}"),
        }
    }

    /// Asserts docs/protocol.md §2.1, §3.1, §6, §16.
    #[test]
    fn keeps_the_id_of_a_refused_object() {
        let e = decode(r#"{"type":"nope","id":"req-7"}"#).unwrap_err();
        assert_eq!(e.id.map(RawValue::get), Some(r#""req-7""#));
        let long = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(65));
        assert!(decode(&long).unwrap_err().id.is_none());
    }

    /// Each relayed field with `v` pasted where a client puts it.
    fn carrying(v: &str) -> Vec<(&'static str, String)> {
        vec![
            (
                "meta",
                format!(r#"{{"type":"join","room":"r","meta":{{"k":{v}}},"id":"j"}}"#),
            ),
            (
                "meta",
                format!(r#"{{"type":"update","meta":{{"a":[{v}]}},"id":"j"}}"#),
            ),
            (
                "data",
                format!(r#"{{"type":"message","data":{v},"id":"j"}}"#),
            ),
            (
                "data",
                format!(r#"{{"type":"message","to":"p","data":{{"x":{v}}},"id":"j"}}"#),
            ),
            (
                "candidate",
                format!(
                    r#"{{"type":"candidate","to":"p","candidate":{{"candidate":{v}}},"id":"j"}}"#
                ),
            ),
        ]
    }

    const BAD_STRINGS: [&str; 5] = [
        r#""\ud800""#,
        r#""\udc00x""#,
        r#""\ud83dx""#,
        r#""a\ud83d\u0041""#,
        r#""\ud83d\\ude00""#,
    ];
    const BAD_NUMBERS: [&str; 4] = ["1e999", "-1e400", "1E+309", "2e308"];

    /// Asserts docs/protocol.md §3.2.
    #[test]
    fn refuses_what_is_not_ijson_in_every_relayed_field() {
        let huge = format!("1{}", "0".repeat(400));
        let sdp: Vec<(&str, String)> = BAD_STRINGS
            .iter()
            .flat_map(|b| {
                ["offer", "answer"].map(|t| {
                    (
                        "sdp",
                        format!(r#"{{"type":"{t}","to":"p","sdp":{b},"id":"j"}}"#),
                    )
                })
            })
            .collect();
        let bad = BAD_STRINGS
            .iter()
            .copied()
            .chain(BAD_NUMBERS)
            .chain([huge.as_str()])
            .flat_map(carrying)
            .chain(sdp)
            // Member names are strings too.
            .chain(carrying(r#"{"\udfff":1}"#))
            .chain(carrying(r#"{"a":1,"b":2,"a":3}"#))
            .chain(carrying(r#"{"a":1,"\u0061":2}"#));
        let mut n = 0;
        for (field, frame) in bad {
            let e = decode(&frame).expect_err(&frame);
            assert_eq!(e.code, ErrorCode::BadMessage, "{frame}");
            assert_eq!(e.id.map(RawValue::get), Some(r#""j""#), "{frame}");
            assert!(
                e.message.contains(&format!("`{field}`")) && e.message.contains("I-JSON"),
                "{frame}: {}",
                e.message
            );
            n += 1;
        }
        assert_eq!(n, 10 * 5 + 10 + 3 * 5);
    }

    /// Asserts docs/protocol.md §3.2.
    #[test]
    fn a_repeated_name_in_a_large_object_is_found() {
        let members: Vec<String> = (0..5000).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let frame = format!(
            r#"{{"type":"message","data":{{{},"k4999":0}}}}"#,
            members.join(",")
        );
        let e = decode(&frame).expect_err("repeated k4999");
        assert!(e.message.contains("k4999"), "{}", e.message);
        let ok = format!(r#"{{"type":"message","data":{{{}}}}}"#, members.join(","));
        assert!(decode(&ok).is_ok());
    }

    /// Asserts docs/protocol.md §3.2.
    #[test]
    fn refuses_deep_nesting() {
        let deep = |n: usize| {
            format!(
                r#"{{"type":"message","data":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(decode(&deep(crate::ijson::MAX_DEPTH)).is_ok());
        let too_deep = deep(crate::ijson::MAX_DEPTH + 1);
        let e = decode(&too_deep).expect_err("too deep");
        assert!(e.message.contains("`data`"), "{}", e.message);
        assert!(decode(&deep(10_000)).is_err());
    }

    /// Asserts docs/protocol.md §3.2.
    #[test]
    fn keeps_valid_escapes_and_numbers() {
        for v in [
            r#""\ud83d\ude00""#,
            r#""\uD83D\uDE00 and \u00e9 \u2014 \\u""#,
            r#""\\ud800""#,
            "1e308",
            "-1e308",
            "1.7976931348623157e308",
            "-0",
            "-0.0",
            "1e-400",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#,
            r#"{"\ud83d\ude00":1,"x":"\u0000"}"#,
        ] {
            for (_, frame) in carrying(v) {
                decode(&frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
            }
        }
        for v in [r#""\ud83d\ude00""#, r#""v=0\r\n\u0041""#] {
            let frame = format!(r#"{{"type":"offer","to":"p","sdp":{v}}}"#);
            decode(&frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
        }
    }

    /// Asserts docs/protocol.md §2.1, §3.1, §6.
    #[test]
    fn an_id_no_double_holds_is_not_echoed() {
        let e = decode(r#"{"type":"ping","id":1e999}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadMessage);
        assert!(e.id.is_none());
        assert!(decode(r#"{"type":"ping","id":-0}"#).is_ok());
    }
}
