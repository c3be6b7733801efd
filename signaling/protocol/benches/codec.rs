//! The message decoder and encoder on what a call sends most: SDP offers
//! and ICE candidates in, the relayed copies and `joined` out.
//! `cargo bench -p signaling-protocol`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signaling_protocol::reply;
use signaling_protocol::{RelayKind, Request, decode};
use std::hint::black_box;

/// A 2 KB offer shaped like a browser's: a `\r\n` escape every line, and
/// escapes are what decoding a string costs.
fn offer() -> String {
    let lines = [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS stream",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Hq4d",
        "a=ice-pwd:0nE1oRyqL8gBvxXyKsJ3Uq6m",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 7B:8C:1F:2A:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C",
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
    ];
    let mut sdp = String::new();
    for line in lines.iter().cycle() {
        if sdp.len() + line.len() > 2000 {
            break;
        }
        sdp.push_str(line);
        sdp.push_str("\\r\\n");
    }
    format!(r#"{{"type":"offer","to":"4f2a9c1e0b7d","sdp":"{sdp}"}}"#)
}

const CANDIDATE: &str = r#"{"type":"candidate","to":"4f2a9c1e0b7d","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.168.1.20 54321 typ host generation 0","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#;

fn decoding(c: &mut Criterion) {
    let offer = offer();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(offer.len() as u64));
    g.bench_function("offer_2k", |b| {
        b.iter(|| match decode(black_box(&offer)) {
            Ok(env) => matches!(env.request, Request::Relay { .. }),
            Err(_) => false,
        })
    });
    g.throughput(Throughput::Bytes(CANDIDATE.len() as u64));
    g.bench_function("candidate", |b| {
        b.iter(|| decode(black_box(CANDIDATE)).is_ok())
    });
    let join = r#"{"type":"join","room":"standup","name":"Ada","meta":{"muted":false,"camera":true},"id":7}"#;
    g.throughput(Throughput::Bytes(join.len() as u64));
    g.bench_function("join", |b| b.iter(|| decode(black_box(join)).is_ok()));
    g.finish();
}

fn encoding(c: &mut Criterion) {
    let offer = offer();
    let Ok(env) = decode(&offer) else {
        panic!("the bench's offer decodes")
    };
    let Request::Relay { payload, .. } = env.request else {
        panic!("an offer is a relay")
    };
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(offer.len() as u64));
    g.bench_function("relayed_offer_2k", |b| {
        b.iter(|| reply::relayed(RelayKind::Offer, black_box("9b1c77e0a2f4"), payload.get()))
    });
    let peers: Vec<String> = (0..9)
        .map(|i| {
            reply::peer_object(
                &format!("peer{i:08}"),
                "Someone",
                r#"{"muted":false}"#,
                1_700_000_000_000,
            )
        })
        .collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function("joined_room_of_10", |b| {
        b.iter(|| {
            reply::joined(
                None,
                "standup",
                "9b1c77e0a2f4",
                peers.iter().map(String::as_str),
                "[]",
                "token",
            )
        })
    });
    g.finish();
}

criterion_group!(benches, decoding, encoding);
criterion_main!(benches);
