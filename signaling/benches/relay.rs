//! The relay path inside one instance, without sockets: a decoded `offer`
//! goes through the hub to the receiver's outbox, and the writer's side
//! takes it off again. `cargo bench -p signaling`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signaling::bus::memory::MemoryBus;
use signaling::connections::Connections;
use signaling::hub::{Hub, HubLimits, JoinRequest, Membership};
use signaling::ice::IceConfig;
use signaling::ids::{NodeId, RoomId};
use signaling::metrics::Metrics;
use signaling::outbox::Outbox;
use signaling_protocol::{Request, decode};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Room {
    hub: Arc<Hub>,
    members: Vec<(Membership, Outbox)>,
}

/// A hub on the in-memory bus with `n` members in one room.
fn room(n: usize) -> Room {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let conns = Arc::new(Connections::new());
    let hub = Arc::new(Hub::new(
        NodeId::new("bench"),
        HubLimits {
            max_room_peers: n,
            resume_queue: 256,
            grace: Duration::from_secs(10),
        },
        Arc::new(MemoryBus::new()),
        Arc::new(Metrics::default()),
        conns.clone(),
    ));
    hub.attach_to_bus();
    let ice = IceConfig::from_config(&signaling::Config::default());
    let members = (0..n)
        .map(|i| {
            let outbox = Outbox::new(1 << 20, 1 << 30);
            let conn = conns.register(outbox.clone());
            let joined = rt.block_on(hub.join(JoinRequest {
                room: RoomId::new("bench"),
                name: format!("peer {i}"),
                meta: "{}".into(),
                resume: None,
                reference: None,
                conn,
                outbox: outbox.clone(),
                ice: &ice,
                identity: None,
                replace_same_identity: false,
            }));
            let Ok(m) = joined else {
                panic!("member {i} joins")
            };
            (m, outbox)
        })
        .collect();
    let room = Room { hub, members };
    for (_, o) in &room.members {
        drain(o);
    }
    room
}

fn drain(o: &Outbox) -> usize {
    let mut n = 0;
    while o.ctl().pop().is_some() {
        n += 1;
    }
    n
}

fn offer(to: &str) -> String {
    format!(
        r#"{{"type":"offer","to":"{to}","sdp":"{}"}}"#,
        "x".repeat(2048)
    )
}

fn relaying(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));

    let pair = room(2);
    let (from, _) = &pair.members[0];
    let (to, inbox) = &pair.members[1];
    let frame = offer(to.peer.as_str());
    g.bench_function("offer_2k_decode_route_queue", |b| {
        b.iter(|| {
            let Ok(env) = decode(black_box(&frame)) else {
                return;
            };
            if let Request::Relay { kind, to, payload } = env.request {
                let _ = pair.hub.relay(
                    from,
                    kind,
                    to.as_deref(),
                    payload.get(),
                    Instant::now(),
                    env.id,
                );
            }
            black_box(inbox.ctl().pop());
        })
    });

    let big = room(50);
    let (from, _) = &big.members[0];
    let broadcast = r#"{"type":"message","data":{"chat":"hello, everyone"}}"#;
    g.bench_function("message_broadcast_room_of_50", |b| {
        b.iter(|| {
            let Ok(env) = decode(black_box(broadcast)) else {
                return;
            };
            if let Request::Relay { kind, to, payload } = env.request {
                let _ = big.hub.relay(
                    from,
                    kind,
                    to.as_deref(),
                    payload.get(),
                    Instant::now(),
                    env.id,
                );
            }
            for (_, o) in &big.members[1..] {
                black_box(o.ctl().pop());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, relaying);
criterion_main!(benches);
