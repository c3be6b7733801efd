//! The message decoder and encoder on what a call sends most: SDP offers
//! and ICE candidates in, the relayed copies and `joined` out.
//! `cargo bench -p signaling-protocol`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signaling_protocol::reply;
use signaling_protocol::{RelayKind, Request, decode};
use std::hint::black_box;

mod frames;
use frames::{CANDIDATE, offer};

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
    g.throughput(Throughput::Bytes(frames::JOIN.len() as u64));
    g.bench_function("join", |b| {
        b.iter(|| decode(black_box(frames::JOIN)).is_ok())
    });
    let join = frames::join_meta_1k();
    g.throughput(Throughput::Bytes(join.len() as u64));
    g.bench_function("join_meta_1k", |b| {
        b.iter(|| decode(black_box(&join)).is_ok())
    });
    let update = frames::update_meta_1k();
    g.throughput(Throughput::Bytes(update.len() as u64));
    g.bench_function("update_meta_1k", |b| {
        b.iter(|| decode(black_box(&update)).is_ok())
    });
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
                None,
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
                "{}",
            )
        })
    });
    g.finish();
}

criterion_group!(benches, decoding, encoding);
criterion_main!(benches);
