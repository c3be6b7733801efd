//! The protocol conformance suite's ground: the same test body run on one
//! instance and on two instances of one cluster, so every rule of
//! docs/protocol.md that a client sees is checked both where its sender and
//! receiver share an instance and where they do not.
//!
//! A [`Deployment`] numbers its instances; `client(i, ..)` connects to
//! instance `i % n`, so a test written for two places (`0` and `1`) puts both
//! members on the one instance of a single-node deployment and on different
//! instances of a clustered one. [`both!`](crate::both) turns one `async fn
//! (Deployment)` into the two tests.

use std::time::{Duration, Instant};

use crate::client::Client;
use crate::redis::Redis;
use crate::server::TestServer;

/// One instance, or two instances joined through a real redis-server.
pub struct Deployment {
    pub servers: Vec<TestServer>,
    /// The cluster's Redis (stopped when the deployment is dropped).
    pub redis: Option<Redis>,
}

impl Deployment {
    /// One instance with the defaults and `tweak` applied.
    pub async fn one(tweak: impl Fn(&mut signaling::Config)) -> Deployment {
        Deployment {
            servers: vec![TestServer::start(&tweak).await],
            redis: None,
        }
    }

    /// Two instances on a fresh redis-server of their own, each with `tweak`
    /// applied, once both are ready (connected to Redis).
    pub async fn two(tweak: impl Fn(&mut signaling::Config)) -> Deployment {
        let redis = Redis::start();
        let mut servers = Vec::new();
        for id in ["conf-a", "conf-b"] {
            servers.push(TestServer::node(&redis.url(), id, &tweak).await);
        }
        Deployment {
            servers,
            redis: Some(redis),
        }
    }

    /// Whether the instances share a room through Redis.
    pub fn clustered(&self) -> bool {
        self.servers.len() > 1
    }

    /// The instance that place `i` is on.
    pub fn server(&self, i: usize) -> &TestServer {
        &self.servers[i % self.servers.len()]
    }

    /// A connection to the instance of place `i`.
    pub async fn client(&self, i: usize, label: &str) -> Client {
        self.server(i).client(label).await
    }

    /// A connection to place `i` that has joined `room`, once every instance
    /// lists it (in a cluster a join reaches the others just after its
    /// reply), so a later joiner anywhere finds it in `joined.peers`.
    pub async fn member(&self, i: usize, room: &str, label: &str) -> Client {
        let mut c = self.client(i, label).await;
        c.join(room).await;
        self.settle(room, &c.peer_id).await;
        c
    }

    /// Waits until every instance's `/api/rooms/{room}` lists `peer_id`.
    pub async fn settle(&self, room: &str, peer_id: &str) {
        for s in &self.servers {
            crate::server::wait_listed(s.addr, room, peer_id).await;
        }
    }

    /// Waits until no instance lists `peer_id` in `room` any more.
    pub async fn settle_gone(&self, room: &str, peer_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for s in &self.servers {
            while crate::server::api_room(s.addr, room)
                .await
                .iter()
                .any(|p| p == peer_id)
            {
                assert!(
                    Instant::now() < deadline,
                    "{peer_id} still listed on {}",
                    s.addr
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Two members of a fresh room tagged `tag`, on places 0 and 1, each
    /// having heard of the other (`a` through `peer-joined`, `b` in its
    /// `joined.peers`).
    pub async fn pair(&self, tag: &str) -> (String, Client, Client) {
        let room = crate::room(tag);
        let a = self.member(0, &room, "a").await;
        let mut b = self.client(1, "b").await;
        let joined = b.join(&room).await;
        assert_eq!(
            crate::client::peer_ids(&joined["peers"]),
            vec![a.peer_id.clone()],
            "b's joined.peers: {joined}"
        );
        let mut a = a;
        let pj = a.expect("peer-joined").await;
        assert_eq!(pj["peer"]["peer_id"], b.peer_id.as_str(), "{pj}");
        (room, a, b)
    }

    /// Stops every instance through its drain (seconds, with clients still
    /// open), then Redis. A test needs it only to see the drain: dropping a
    /// deployment at the test's end is enough otherwise (the in-process
    /// instances end with the test's runtime, Redis is killed).
    pub async fn stop(self) {
        for s in self.servers {
            s.stop().await;
        }
    }
}

/// Runs one `async fn(Deployment)` twice, as two tests in a module of the
/// same name: `one_instance` and `two_instances` (clustered through Redis).
/// An optional second argument tweaks the config of every instance.
///
/// ```text
/// async fn relays_an_offer(d: Deployment) { ... }
/// both!(relays_an_offer);
/// both!(caps_a_room, |c| c.limits.max_room_peers = 2);
/// ```
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        $crate::both!($name, |_: &mut ::signaling::Config| {});
    };
    ($name:ident, $tweak:expr) => {
        mod $name {
            #[tokio::test]
            async fn one_instance() {
                let d = $crate::deployment::Deployment::one($tweak).await;
                super::$name(d).await;
            }

            #[tokio::test]
            async fn two_instances() {
                let d = $crate::deployment::Deployment::two($tweak).await;
                super::$name(d).await;
            }
        }
    };
}
