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

use signaling::bus::linked::LinkedCluster;

use crate::client::Client;
use crate::redis::Redis;
use crate::server::{Engine, TestServer, clustered};

/// One instance, or several instances of one cluster: joined through a
/// real redis-server, or linked in this process ([`LinkedCluster`]). The
/// instances of a cluster run on runtimes of their own, so that
/// [`kill`](Deployment::kill) ends one as a killed process ends.
pub struct Deployment {
    pub servers: Vec<TestServer>,
    /// The cluster's Redis (stopped when the deployment is dropped).
    pub redis: Option<Redis>,
    /// The cluster held in this process, for a linked deployment.
    pub linked: Option<LinkedCluster>,
    /// Node ids of the cluster's instances, by place.
    ids: Vec<String>,
    tweak: std::sync::Arc<dyn Fn(&mut signaling::Config) + Send + Sync>,
}

impl Deployment {
    /// One instance with the defaults and `tweak` applied.
    pub async fn one(tweak: impl Fn(&mut signaling::Config) + Send + Sync + 'static) -> Deployment {
        Deployment {
            servers: vec![TestServer::start(&tweak).await],
            redis: None,
            linked: None,
            ids: Vec::new(),
            tweak: std::sync::Arc::new(tweak),
        }
    }

    /// Two instances on a fresh redis-server of their own, each with `tweak`
    /// applied, once both are ready (connected to Redis).
    pub async fn two(tweak: impl Fn(&mut signaling::Config) + Send + Sync + 'static) -> Deployment {
        Deployment::redis(2, tweak).await
    }

    /// `n` instances on a fresh redis-server of their own, once all are
    /// ready.
    pub async fn redis(
        n: usize,
        tweak: impl Fn(&mut signaling::Config) + Send + Sync + 'static,
    ) -> Deployment {
        let mut d = Deployment {
            servers: Vec::new(),
            redis: Some(Redis::start()),
            linked: None,
            ids: Vec::new(),
            tweak: std::sync::Arc::new(tweak),
        };
        for _ in 0..n {
            d.add_node().await;
        }
        d
    }

    /// `n` instances of one cluster linked in this process, no Redis.
    pub async fn linked(
        n: usize,
        tweak: impl Fn(&mut signaling::Config) + Send + Sync + 'static,
    ) -> Deployment {
        let mut d = Deployment {
            servers: Vec::new(),
            redis: None,
            linked: Some(LinkedCluster::new()),
            ids: Vec::new(),
            tweak: std::sync::Arc::new(tweak),
        };
        for _ in 0..n {
            d.add_node().await;
        }
        d
    }

    /// Adds an instance to the cluster, as the next place, once it is ready.
    pub async fn add_node(&mut self) -> usize {
        let id = format!("node-{}", self.ids.len());
        self.start_node(id).await
    }

    /// Starts a new instance under the id of place `i` (killed before,
    /// say): a restart. It takes the next place.
    pub async fn restart_node(&mut self, i: usize) -> usize {
        let id = self.ids[i].clone();
        self.start_node(id).await
    }

    async fn start_node(&mut self, id: String) -> usize {
        let server = self.start_instance(id.clone()).await;
        server.wait_ready_within(Duration::from_secs(10)).await;
        self.servers.push(server);
        self.ids.push(id);
        self.servers.len() - 1
    }

    /// Starts an instance under the id of place `i` while that one runs,
    /// without waiting for it to be ready (it must never be), and without
    /// giving it a place.
    pub async fn start_duplicate(&self, i: usize) -> TestServer {
        self.start_instance(self.ids[i].clone()).await
    }

    async fn start_instance(&self, id: String) -> TestServer {
        let tweak = self.tweak.clone();
        let (engine, url) = match (&self.linked, &self.redis) {
            (Some(cluster), _) => (Engine::Linked(cluster.clone()), None),
            (None, Some(redis)) => (Engine::FromConfig, Some(redis.url())),
            (None, None) => panic!("a single instance does not grow"),
        };
        TestServer::start_alone(
            move |c| {
                if let Some(url) = url {
                    clustered(url, &id)(c);
                } else {
                    c.node_id = Some(id);
                }
                tweak(c);
            },
            engine,
        )
        .await
    }

    /// The node id of place `i`'s instance.
    pub fn node_id(&self, i: usize) -> &str {
        &self.ids[i % self.ids.len()]
    }

    /// The instances not killed.
    pub fn live(&self) -> impl Iterator<Item = &TestServer> {
        self.servers.iter().filter(|s| !s.is_killed())
    }

    /// Kills the instance of place `i` (no drain, no goodbye). Its peers
    /// are announced `node-lost`: at once on a linked cluster, after
    /// `--node-timeout` on Redis.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// The cluster's shared record becomes unreachable for every instance
    /// (Redis killed; the linked cluster cut).
    pub fn outage(&mut self) {
        match (&self.linked, &mut self.redis) {
            (Some(cluster), _) => cluster.cut(),
            (None, Some(redis)) => redis.kill(),
            (None, None) => panic!("a single instance has no cluster to lose"),
        }
    }

    /// Ends an [`outage`](Self::outage). Redis comes back empty (it keeps
    /// nothing on disk); the linked record comes back as it was.
    pub fn restore(&mut self) {
        match (&self.linked, &mut self.redis) {
            (Some(cluster), _) => cluster.restore(),
            (None, Some(redis)) => redis.restart(),
            (None, None) => panic!("a single instance has no cluster to restore"),
        }
    }

    /// Which engine joins the instances: `"one"`, `"redis"` or `"linked"`.
    pub fn engine(&self) -> &'static str {
        match (&self.linked, &self.redis) {
            (Some(_), _) => "linked",
            (None, Some(_)) => "redis",
            (None, None) => "one",
        }
    }

    /// Whether the instances share rooms (through Redis, or linked).
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
        for s in self.live() {
            crate::server::wait_listed(s.addr, room, peer_id).await;
        }
    }

    /// Waits until no instance lists `peer_id` in `room` any more.
    pub async fn settle_gone(&self, room: &str, peer_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for s in self.live() {
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

/// Runs one `async fn(Deployment)` three times, as three tests in a module
/// of the same name: `one_instance`, `two_instances` (clustered through
/// Redis) and `two_linked` (clustered in this process). An optional second
/// argument tweaks the config of every instance.
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

            #[tokio::test]
            async fn two_linked() {
                let d = $crate::deployment::Deployment::linked(2, $tweak).await;
                super::$name(d).await;
            }
        }
    };
}

/// Runs one cluster scenario, `async fn(Deployment)`, on both engines, as
/// two tests in a module of the same name: `redis` (instances joined
/// through a real redis-server) and `linked` (in this process). The
/// deployment starts with two instances (more with
/// [`add_node`](Deployment::add_node)); an optional second argument tweaks
/// the config of every instance.
#[macro_export]
macro_rules! engines {
    ($name:ident) => {
        $crate::engines!($name, |_: &mut ::signaling::Config| {});
    };
    ($name:ident, $tweak:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let d = $crate::deployment::Deployment::redis(2, $tweak).await;
                super::$name(d).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn linked() {
                let d = $crate::deployment::Deployment::linked(2, $tweak).await;
                super::$name(d).await;
            }
        }
    };
}
