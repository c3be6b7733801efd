//! The node-to-node format: every message one instance sends another through
//! Redis pub/sub is written by an encoder here and read by [`decode`] into a
//! [`Msg`], and nowhere else. Documented for operators in `docs/cluster.md`
//! ("Node-to-node messages"); keep the two in step.
//!
//! Format version 1 ([`VERSION`]): a one-letter kind and the sending node on
//! the first line, the body after it. Relayed frames travel as the exact
//! bytes their recipients get, so no node re-encodes them.
//!
//! | kind | channel | body |
//! | --- | --- | --- |
//! | `J` joined, `U` updated (or moved) | room | the peer object |
//! | `L` left | room | `<peer_id> <reason>` |
//! | `B` broadcast | room | the encoded `message` frame |
//! | `D` direct | node | `<room> <to peer_id>\n` + the encoded frame |
//! | `R` refused | node | `<room> <from peer_id>[ <ref>]`: a direct message its node could not deliver |
//! | `G` gap | node | `<epoch> <start> <end>`: numbers of the receiver's relays that never arrived (`sequence.rs`) |
//! | `C` claim | node | `<id> <room> <peer_id> <resume secret>`: hand this held peer over for a resume |
//! | `H` hand-over | node | `<id>\n{"peer":<peer object>,"queued":[<frame>, ...]}` |
//! | `N` no hand-over | node | `<id>` |
//! | `P` probe | node | empty: a node checking that its own subscription hears |
//! | `A` act | room | a [`Command`] as JSON: the admin API (or a join elsewhere) acting on the room's members |
//!
//! A direct message's first line goes on after the node: its stamp (see
//! `sequence.rs`), its sender's peer id and the `id` of the sender's request,
//! if it had one (JSON, on one line: a string or a number). A node that reads
//! only the kind and the body (an older one) still delivers it.
//!
//! A later format must keep these kinds readable as they are, or use kinds
//! version 1 does not have: a node meets a message it cannot read (an
//! unknown kind, a body that does not parse) with a [`WireError`], which the
//! engine counts (`signaling_bus_undecodable_total`) and logs. Nothing is
//! misread silently.
//!
//! The presence stream (`sig:presence`, written by the Lua scripts in
//! `scripts.rs`) carries [`STREAM_VERSION`] in a `v` field of each entry.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use signaling_protocol::reply::LeaveReason;
use std::borrow::Cow;
use std::ops::Range;

use super::sequence::STAMP_LEN;

/// The version of the node-to-node format this node speaks.
pub const VERSION: u32 = 1;

/// The `v` field of every presence stream entry.
pub const STREAM_VERSION: &str = "1";

/// One message from another node, as read (borrowing the payload).
#[derive(Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    Joined {
        node: &'a str,
        peer: &'a str,
    },
    Updated {
        node: &'a str,
        peer: &'a str,
    },
    Left {
        node: &'a str,
        peer: &'a str,
        reason: LeaveReason,
    },
    Broadcast {
        node: &'a str,
        frame: &'a str,
    },
    /// `head` is the whole first line after the kind: see [`direct_head`].
    Direct {
        head: &'a str,
        room: &'a str,
        to: &'a str,
        frame: &'a str,
    },
    Refused {
        room: &'a str,
        sender: &'a str,
        reference: Option<&'a str>,
    },
    Gap {
        node: &'a str,
        epoch: u32,
        lost: Range<u64>,
    },
    Claim {
        node: &'a str,
        id: &'a str,
        room: &'a str,
        peer: &'a str,
        secret: &'a str,
    },
    /// `body` is the hand-over's JSON: see [`handoff_body`].
    Handoff {
        node: &'a str,
        id: u64,
        body: &'a str,
    },
    NoHandoff {
        node: &'a str,
        id: u64,
    },
    Probe {
        node: &'a str,
    },
    /// `body` is the command's JSON: see [`command_body`].
    Act {
        node: &'a str,
        body: &'a str,
    },
}

/// Why a payload is not a message of this format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("no `<kind> <node>` first line")]
    NoHead,
    #[error("unknown kind `{0}` (from a newer instance?)")]
    UnknownKind(String),
    #[error("malformed `{0}` body")]
    Malformed(char),
}

impl WireError {
    /// The metric label of the error.
    pub fn label(&self) -> &'static str {
        match self {
            WireError::NotUtf8 => "not_utf8",
            WireError::NoHead => "no_head",
            WireError::UnknownKind(_) => "unknown_kind",
            WireError::Malformed(_) => "malformed",
        }
    }
}

/// Reads one payload.
pub fn decode(bytes: &[u8]) -> Result<Msg<'_>, WireError> {
    let text = std::str::from_utf8(bytes).map_err(|_| WireError::NotUtf8)?;
    let (head, body) = text.split_once('\n').ok_or(WireError::NoHead)?;
    let (kind, node) = head.split_once(' ').ok_or(WireError::NoHead)?;
    let &[k] = kind.as_bytes() else {
        return Err(WireError::UnknownKind(kind.chars().take(16).collect()));
    };
    let bad = || WireError::Malformed(char::from(k));
    Ok(match k {
        b'J' => Msg::Joined { node, peer: body },
        b'U' => Msg::Updated { node, peer: body },
        b'L' => {
            let (peer, reason) = body.split_once(' ').ok_or_else(bad)?;
            let reason = LeaveReason::parse(reason).ok_or_else(bad)?;
            Msg::Left { node, peer, reason }
        }
        b'B' => Msg::Broadcast { node, frame: body },
        b'D' => {
            let (route, frame) = body.split_once('\n').ok_or_else(bad)?;
            let (room, to) = route.split_once(' ').ok_or_else(bad)?;
            Msg::Direct {
                head: node,
                room,
                to,
                frame,
            }
        }
        b'R' => {
            let mut parts = body.splitn(3, ' ');
            let (Some(room), Some(sender)) = (parts.next(), parts.next()) else {
                return Err(bad());
            };
            Msg::Refused {
                room,
                sender,
                reference: parts.next(),
            }
        }
        b'G' => {
            let mut parts = body.split(' ').map(str::parse::<u64>);
            let (Some(Ok(epoch)), Some(Ok(start)), Some(Ok(end))) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            Msg::Gap {
                node,
                epoch: u32::try_from(epoch).map_err(|_| bad())?,
                lost: start..end,
            }
        }
        b'C' => {
            let mut parts = body.splitn(4, ' ');
            let (Some(id), Some(room), Some(peer), Some(secret)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            Msg::Claim {
                node,
                id,
                room,
                peer,
                secret,
            }
        }
        b'H' => {
            let (id, body) = body.split_once('\n').ok_or_else(bad)?;
            Msg::Handoff {
                node,
                id: id.parse().map_err(|_| bad())?,
                body,
            }
        }
        b'N' => Msg::NoHandoff {
            node,
            id: body.parse().map_err(|_| bad())?,
        },
        b'P' => Msg::Probe { node },
        b'A' => Msg::Act { node, body },
        _ => return Err(WireError::UnknownKind(kind.to_string())),
    })
}

/// Whether a payload is a probe (`P`), without decoding the rest.
pub fn is_probe(payload: &[u8]) -> bool {
    payload.first() == Some(&b'P')
}

fn encode(kind: u8, node: &str, body: &[&str]) -> Vec<u8> {
    let len = 3 + node.len() + body.iter().map(|b| b.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(kind);
    out.push(b' ');
    out.extend_from_slice(node.as_bytes());
    out.push(b'\n');
    for b in body {
        out.extend_from_slice(b.as_bytes());
    }
    out
}

/// A peer of `node`'s joined (`J`), or changed or moved (`U`).
pub fn peer(joined: bool, node: &str, object: &str) -> Vec<u8> {
    encode(if joined { b'J' } else { b'U' }, node, &[object])
}

pub fn left(node: &str, peer: &str, reason: LeaveReason) -> Vec<u8> {
    encode(b'L', node, &[peer, " ", reason.as_str()])
}

pub fn broadcast(node: &str, frame: &str) -> Vec<u8> {
    encode(b'B', node, &[frame])
}

/// A direct message, with room left for its stamp; returns the payload
/// and where the stamp goes.
pub fn direct(
    node: &str,
    from: &str,
    reference: Option<&str>,
    room: &str,
    to: &str,
    frame: &str,
) -> (Vec<u8>, usize) {
    let r = reference.map_or(0, |r| r.len() + 1);
    let len = 8 + node.len() + STAMP_LEN + from.len() + r + room.len() + to.len() + frame.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b"D ");
    out.extend_from_slice(node.as_bytes());
    out.push(b' ');
    let at = out.len();
    out.resize(at + STAMP_LEN, b'0');
    out.push(b' ');
    out.extend_from_slice(from.as_bytes());
    if let Some(r) = reference {
        out.push(b' ');
        out.extend_from_slice(r.as_bytes());
    }
    out.push(b'\n');
    for part in [room, " ", to, "\n", frame] {
        out.extend_from_slice(part.as_bytes());
    }
    (out, at)
}

pub fn refused(node: &str, room: &str, sender: &str, reference: Option<&str>) -> Vec<u8> {
    match reference {
        Some(r) => encode(b'R', node, &[room, " ", sender, " ", r]),
        None => encode(b'R', node, &[room, " ", sender]),
    }
}

pub fn gap(node: &str, epoch: u32, lost: &Range<u64>) -> Vec<u8> {
    let body = format!("{epoch} {} {}", lost.start, lost.end);
    encode(b'G', node, &[&body])
}

pub fn claim(node: &str, id: u64, room: &str, peer: &str, secret: &str) -> Vec<u8> {
    let id = id.to_string();
    encode(b'C', node, &[&id, " ", room, " ", peer, " ", secret])
}

/// What a hand-over carries after its id: the peer and its queued frames.
#[derive(Serialize, Deserialize)]
pub struct HandoffBody<'a> {
    #[serde(borrow)]
    pub peer: &'a RawValue,
    #[serde(borrow)]
    pub queued: Vec<Cow<'a, str>>,
}

/// The answer to claim `id`: the peer (its object) and its queued frames.
pub fn handoff<'a>(
    node: &str,
    id: &str,
    object: &str,
    queued: impl Iterator<Item = &'a str>,
) -> Vec<u8> {
    let peer = RawValue::from_string(object.to_owned());
    let json = peer
        .ok()
        .and_then(|peer| {
            serde_json::to_string(&HandoffBody {
                peer: &peer,
                queued: queued.map(Cow::Borrowed).collect(),
            })
            .ok()
        })
        .unwrap_or_default();
    encode(b'H', node, &[id, "\n", &json])
}

pub fn handoff_body(body: &str) -> Option<HandoffBody<'_>> {
    serde_json::from_str(body).ok()
}

pub fn no_handoff(node: &str, id: &str) -> Vec<u8> {
    encode(b'N', node, &[id])
}

pub fn probe(node: &str) -> Vec<u8> {
    encode(b'P', node, &[])
}

/// What an `A` message carries: one room command. `meta` travels as the
/// text of its JSON object (a string: serde cannot borrow raw JSON inside a
/// tagged enum); `frame` is an encoded server message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command<'a> {
    Kick {
        #[serde(borrow)]
        peer: Cow<'a, str>,
        #[serde(borrow)]
        reason: Cow<'a, str>,
    },
    Close,
    Update {
        #[serde(borrow)]
        peer: Cow<'a, str>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        name: Option<Cow<'a, str>>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        meta: Option<Cow<'a, str>>,
    },
    Meta {
        #[serde(borrow)]
        meta: Cow<'a, str>,
    },
    Message {
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        to: Option<Cow<'a, str>>,
        #[serde(borrow)]
        frame: Cow<'a, str>,
    },
}

/// A room command of `node`'s.
pub fn act(node: &str, cmd: &Command<'_>) -> Vec<u8> {
    // Strings only: serializing cannot fail.
    let json = serde_json::to_string(cmd).unwrap_or_default();
    encode(b'A', node, &[&json])
}

pub fn command_body(body: &str) -> Option<Command<'_>> {
    serde_json::from_str(body).ok()
}

/// What a direct message's first line says after the kind.
#[derive(Debug, PartialEq, Eq)]
pub struct DirectHead<'a> {
    pub node: &'a str,
    /// The stamp, the sender's peer id and its request's `id`: absent
    /// when an older node sent it.
    pub sender: Option<Sender<'a>>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Sender<'a> {
    pub stamp: &'a str,
    pub peer: &'a str,
    pub reference: Option<&'a str>,
}

pub fn direct_head(head: &str) -> DirectHead<'_> {
    let mut parts = head.splitn(4, ' ');
    let node = parts.next().unwrap_or_default();
    let sender = match (parts.next(), parts.next()) {
        (Some(stamp), Some(peer)) => Some(Sender {
            stamp,
            peer,
            reference: parts.next(),
        }),
        _ => None,
    };
    DirectHead { node, sender }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(payload: &[u8]) -> Msg<'_> {
        decode(payload).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(payload)))
    }

    #[test]
    fn every_kind_round_trips() {
        let obj = r#"{"peer_id":"p1","name":"A","meta":{},"joined_at":1}"#;
        assert_eq!(
            round_trip(&peer(true, "n1", obj)),
            Msg::Joined {
                node: "n1",
                peer: obj
            }
        );
        assert_eq!(
            round_trip(&peer(false, "n1", obj)),
            Msg::Updated {
                node: "n1",
                peer: obj
            }
        );
        assert_eq!(
            round_trip(&left("n1", "p1", LeaveReason::NodeLost)),
            Msg::Left {
                node: "n1",
                peer: "p1",
                reason: LeaveReason::NodeLost
            }
        );
        let frame = "{\"type\":\"message\",\"from\":\"p1\",\"data\":\"a\\nb c\"}";
        assert_eq!(
            round_trip(&broadcast("n1", frame)),
            Msg::Broadcast { node: "n1", frame }
        );
        let (d, _) = direct("n1", "p1", Some("\"o 7\""), "r", "p2", frame);
        let Msg::Direct {
            head,
            room,
            to,
            frame: f,
        } = round_trip(&d)
        else {
            panic!("not direct");
        };
        assert_eq!((room, to, f), ("r", "p2", frame));
        let head = direct_head(head);
        assert_eq!(head.node, "n1");
        let sender = head.sender.expect("a sender");
        assert_eq!(
            (sender.stamp, sender.peer, sender.reference),
            ("0".repeat(STAMP_LEN).as_str(), "p1", Some("\"o 7\""))
        );
        for reference in [None, Some("42"), Some("\"a b\"")] {
            assert_eq!(
                round_trip(&refused("n2", "r", "p1", reference)),
                Msg::Refused {
                    room: "r",
                    sender: "p1",
                    reference
                }
            );
        }
        assert_eq!(
            round_trip(&gap("n2", 7, &(3..9))),
            Msg::Gap {
                node: "n2",
                epoch: 7,
                lost: 3..9
            }
        );
        assert_eq!(
            round_trip(&claim("n2", 12, "r", "p1", "s3cr3t")),
            Msg::Claim {
                node: "n2",
                id: "12",
                room: "r",
                peer: "p1",
                secret: "s3cr3t"
            }
        );
        let h = handoff("n1", "12", obj, ["f1", "f\"2\n"].into_iter());
        let Msg::Handoff { node, id, body } = round_trip(&h) else {
            panic!("not a hand-over");
        };
        assert_eq!((node, id), ("n1", 12));
        let body = handoff_body(body).expect("a hand-over body");
        assert_eq!(body.peer.get(), obj);
        assert_eq!(body.queued, ["f1", "f\"2\n"]);
        assert_eq!(
            round_trip(&no_handoff("n1", "12")),
            Msg::NoHandoff { node: "n1", id: 12 }
        );
        assert_eq!(round_trip(&probe("n1")), Msg::Probe { node: "n1" });
        let meta = r#"{"topic":"x"}"#;
        for cmd in [
            Command::Kick {
                peer: "p1".into(),
                reason: "kicked".into(),
            },
            Command::Close,
            Command::Update {
                peer: "p1".into(),
                name: Some("Ada\nL".into()),
                meta: Some(meta.into()),
            },
            Command::Meta { meta: meta.into() },
            Command::Message {
                to: None,
                frame: r#"{"type":"message","from":"server","data":1}"#.into(),
            },
        ] {
            let payload = act("n1", &cmd);
            let Msg::Act { node, body } = round_trip(&payload) else {
                panic!("not an act")
            };
            assert_eq!(node, "n1");
            let back = command_body(body).map(|c| serde_json::to_string(&c).unwrap());
            assert_eq!(back, serde_json::to_string(&cmd).ok());
        }
        assert!(is_probe(&probe("n1")));
        assert!(!is_probe(&broadcast("n1", "{}")));
    }

    #[test]
    fn an_older_nodes_direct_message_has_no_sender() {
        let p = encode(b'D', "n1", &["r p2\n{}"]);
        let Msg::Direct { head, .. } = round_trip(&p) else {
            panic!("not direct");
        };
        assert_eq!(direct_head(head).sender, None);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let cases: [(&[u8], WireError); 12] = [
            (b"\xff\xfe", WireError::NotUtf8),
            (b"", WireError::NoHead),
            (b"garbage", WireError::NoHead),
            (b"J\n{}", WireError::NoHead),
            (b"JX n1\n{}", WireError::UnknownKind("JX".into())),
            (b"Z n1\n", WireError::UnknownKind("Z".into())),
            (b"L n1\np1", WireError::Malformed('L')),
            (b"L n1\np1 vanished", WireError::Malformed('L')),
            (b"D n1\nno-route", WireError::Malformed('D')),
            (b"G n1\n1 2", WireError::Malformed('G')),
            (b"G n1\n99999999999 1 2", WireError::Malformed('G')),
            (b"H n1\nx\n{}", WireError::Malformed('H')),
        ];
        for (payload, want) in cases {
            assert_eq!(
                decode(payload),
                Err(want),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        assert_eq!(decode(b"C n1\n1 r p"), Err(WireError::Malformed('C')));
        assert_eq!(decode(b"N n1\n"), Err(WireError::Malformed('N')));
        assert_eq!(decode(b"R n1\nroom-only"), Err(WireError::Malformed('R')));
        assert!(handoff_body("{\"peer\":").is_none());
    }

    #[test]
    fn the_stream_version_is_in_every_entry_the_scripts_write() {
        let field = format!("'v', '{STREAM_VERSION}'");
        for script in [
            super::super::scripts::UPSERT,
            super::super::scripts::REMOVE,
            super::super::scripts::UNRESERVE,
        ] {
            let xadds = script.matches("'XADD'").count();
            assert!(xadds > 0);
            assert_eq!(script.matches(&field).count(), xadds, "{script}");
        }
    }
}
