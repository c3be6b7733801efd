//! Process-wide metrics, exposed at `/metrics` through `prometheus-client`:
//! OpenMetrics text to a scraper that asks for it (Prometheus does), the
//! Prometheus text format (0.0.4) to anyone else.
//!
//! The hot path stays one relaxed atomic add per update: every labelled
//! series is created once, here, and its handle kept in an array indexed by
//! the label's enum, so nothing looks up a label set per message. The relay
//! latency histogram is our own [`FixedHistogram`], since the crate's
//! `Histogram` takes a mutex on every observation.
//!
//! What is only known at scrape time (rooms, the bus's state, the process's
//! CPU and memory) is read then, into a registry of constant values encoded
//! after the live one.
//!
//! Family names never clash under OpenMetrics: a counter `x` is exposed as
//! `x_total` and a histogram `x` as `x_bucket`, `x_sum` and `x_count`, so no
//! other family may be named so (the gauge of open connections is
//! `signaling_connections_open`, beside the counter `signaling_connections`).

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use signaling_protocol::{ErrorCode, RelayKind, reply::LeaveReason};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::bus::BusStats;
use crate::outbox::CloseCause;

/// Upper bounds of the relay latency histogram, in microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

const REASONS: [LeaveReason; 6] = LeaveReason::ALL;

/// One label, as the families below key their series.
type Label = [(&'static str, &'static str); 1];

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, ending in `# EOF`.
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, else the Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

pub struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections: Counter,
    peers: Gauge,
    held: Gauge,
    joins: Counter,
    resumes: Counter,
    relayed: [Counter; RelayKind::ALL.len()],
    errors: [Counter; ErrorCode::ALL.len()],
    leaves: [Counter; REASONS.len()],
    forced_closes: [Counter; CloseCause::ALL.len()],
    latency: Arc<FixedHistogram<{ LATENCY_BUCKETS_US.len() }>>,
    webhooks: WebhookFamilies,
}

/// The webhook families, labelled by endpoint (its id, never its URL,
/// which may hold a credential).
struct WebhookFamilies {
    delivered: Family<EndpointLabel, Counter>,
    retried: Family<EndpointLabel, Counter>,
    dead_lettered: Family<EndpointLabel, Counter>,
    gaps: Family<EndpointLabel, Counter>,
    backlog: Family<EndpointLabel, Gauge>,
    dead_letters: Family<EndpointLabel, Gauge>,
    latency: Family<EndpointLabel, Histogram, fn() -> Histogram>,
}

type EndpointLabel = [(&'static str, String); 1];

/// One endpoint's series, updated by its deliverer.
#[derive(Clone)]
pub struct WebhookMetrics {
    pub delivered: Counter,
    /// Tries that failed and will be tried again.
    pub retried: Counter,
    pub dead_lettered: Counter,
    /// Events whose room `seq` did not follow the one before (lost upstream).
    pub gaps: Counter,
    pub backlog: Gauge,
    pub dead_letters: Gauge,
    /// From the change being recorded to the receiver's 2xx.
    pub latency: Histogram,
}

fn delivery_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers a new metric and returns the handle the hot path updates
/// (a clone shares the same atomic).
fn kept<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Default + Clone,
{
    let m = M::default();
    registry.register(name, help, m.clone());
    m
}

/// Registers a family labelled `label` and returns one series per value,
/// in the order of `values` (the order of the enum's `index`).
fn series<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<Label, Counter>::default();
    registry.register(name, help, family.clone());
    values.map(|v| family.get_or_create(&[(label, v)]).clone())
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let connections_open: Gauge = kept(
            &mut r,
            "signaling_connections_open",
            "Open WebSocket connections",
        );
        let connections: Counter = kept(
            &mut r,
            "signaling_connections",
            "WebSocket connections accepted",
        );
        let peers: Gauge = kept(
            &mut r,
            "signaling_peers",
            "Peers joined on this instance, held ones included",
        );
        let held: Gauge = kept(
            &mut r,
            "signaling_peers_held",
            "Dropped peers held for resume",
        );
        let joins: Counter = kept(
            &mut r,
            "signaling_joins",
            "Successful joins (resumes excluded)",
        );
        let resumes: Counter = kept(&mut r, "signaling_resumes", "Successful resumes");
        let relayed = series(
            &mut r,
            "signaling_messages_relayed",
            "Relayed messages by type, counted per recipient",
            "type",
            RelayKind::ALL.map(RelayKind::type_name),
        );
        let errors = series(
            &mut r,
            "signaling_errors",
            "Error replies by code",
            "code",
            ErrorCode::ALL.map(ErrorCode::as_str),
        );
        let leaves = series(
            &mut r,
            "signaling_peers_left",
            "Peers that left, by reason",
            "reason",
            REASONS.map(LeaveReason::as_str),
        );
        let forced_closes = series(
            &mut r,
            "signaling_forced_closes",
            "Connections closed by the server, by cause",
            "cause",
            CloseCause::ALL.map(CloseCause::label),
        );
        let latency = Arc::new(FixedHistogram::new(LATENCY_BUCKETS_US, 1e6));
        r.register(
            "signaling_relay_latency_seconds",
            "Time from reading a relayed frame to writing it to the recipient",
            Shared(latency.clone()),
        );
        let webhooks = WebhookFamilies {
            delivered: kept(
                &mut r,
                "signaling_webhook_delivered",
                "Events a webhook endpoint accepted (2xx)",
            ),
            retried: kept(
                &mut r,
                "signaling_webhook_retries",
                "Webhook tries that failed and were tried again",
            ),
            dead_lettered: kept(
                &mut r,
                "signaling_webhook_dead_lettered",
                "Events given up on after every try, moved to the dead letters",
            ),
            gaps: kept(
                &mut r,
                "signaling_webhook_sequence_gaps",
                "Events whose room seq did not follow the previous one delivered",
            ),
            backlog: kept(
                &mut r,
                "signaling_webhook_backlog",
                "Events not yet delivered to the endpoint, across the cluster",
            ),
            dead_letters: kept(
                &mut r,
                "signaling_webhook_dead_letters",
                "Dead letters held for the endpoint",
            ),
            latency: Family::new_with_constructor(delivery_histogram),
        };
        r.register(
            "signaling_webhook_delivery_seconds",
            "Time from the change being recorded to the endpoint accepting its event",
            webhooks.latency.clone(),
        );
        r.register(
            "signaling_build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry: r,
            connections_open,
            connections,
            peers,
            held,
            joins,
            resumes,
            relayed,
            errors,
            leaves,
            forced_closes,
            latency,
            webhooks,
        }
    }

    /// The series of webhook endpoint `endpoint`.
    pub fn webhook(&self, endpoint: &str) -> WebhookMetrics {
        let w = &self.webhooks;
        let l = [("endpoint", endpoint.to_owned())];
        WebhookMetrics {
            delivered: w.delivered.get_or_create(&l).clone(),
            retried: w.retried.get_or_create(&l).clone(),
            dead_lettered: w.dead_lettered.get_or_create(&l).clone(),
            gaps: w.gaps.get_or_create(&l).clone(),
            backlog: w.backlog.get_or_create(&l).clone(),
            dead_letters: w.dead_letters.get_or_create(&l).clone(),
            latency: w.latency.get_or_create(&l).clone(),
        }
    }

    pub fn connection_opened(&self) {
        self.connections_open.inc();
        self.connections.inc();
    }
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }
    pub fn peer_joined(&self) {
        self.peers.inc();
        self.joins.inc();
    }
    pub fn peer_left(&self, reason: LeaveReason) {
        self.peers.dec();
        self.leaves[reason_index(reason)].inc();
    }
    /// A peer resumed here from another node.
    pub fn peer_arrived(&self) {
        self.peers.inc();
    }
    /// A peer was handed over to another node.
    pub fn peer_departed(&self) {
        self.peers.dec();
    }
    pub fn held_changed(&self, delta: i64) {
        self.held.inc_by(delta);
    }
    pub fn resumed(&self) {
        self.resumes.inc();
    }
    pub fn relayed(&self, kind: RelayKind, recipients: u64) {
        self.relayed[kind.index()].inc_by(recipients);
    }
    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].inc();
    }
    pub fn forced_close(&self, why: CloseCause) {
        if let Some(i) = CloseCause::ALL.iter().position(|w| *w == why) {
            self.forced_closes[i].inc();
        }
    }
    /// Time from reading a relayed frame to writing it to the recipient's socket.
    pub fn relay_latency(&self, d: Duration) {
        self.latency
            .observe(d.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn connections(&self) -> i64 {
        self.connections_open.get()
    }

    /// The exposition in `format`; `rooms` is the number of rooms with local
    /// members, `bus` what the presence bus reports of itself.
    pub fn render(&self, rooms: usize, bus: &BusStats, format: Format) -> String {
        let now = scrape_registry(rooms, bus);
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail; a metric that could not encode
        // would only cut the scrape short, which the scraper reports.
        let _ = match format {
            Format::OpenMetrics => {
                use prometheus_client::encoding::text;
                text::encode_registry(&mut out, &self.registry)
                    .and_then(|()| text::encode_registry(&mut out, &now))
                    .and_then(|()| text::encode_eof(&mut out))
            }
            Format::Prometheus => {
                use prometheus_client::encoding::prometheus_text::encode;
                encode(&mut out, &self.registry).and_then(|()| encode(&mut out, &now))
            }
        };
        out
    }
}

/// The values read at scrape time.
fn scrape_registry(rooms: usize, bus: &BusStats) -> Registry {
    let mut r = Registry::default();
    r.register(
        "signaling_rooms",
        "Rooms with members on this instance",
        ConstGauge::new(rooms as i64),
    );
    if let Some(connected) = bus.connected {
        r.register(
            "signaling_bus_redis_connected",
            "1 while this instance is connected to Redis",
            ConstGauge::new(i64::from(connected)),
        );
        r.register(
            "signaling_bus_queue_bytes",
            "Bytes waiting to be written to Redis (relays, presence changes, hand-overs)",
            ConstGauge::new(bus.queued_bytes as i64),
        );
        r.register(
            "signaling_bus_reconnects",
            "Times this instance connected to Redis again after losing it",
            ConstCounter::new(bus.reconnects),
        );
        r.register(
            "signaling_bus_undecodable",
            "Messages from other instances this one could not read (a newer format, or a broken payload)",
            ConstCounter::new(bus.undecodable),
        );
        r.register(
            "signaling_bus_nodes",
            "Instances heartbeating in the cluster, this one included, at the last heartbeat",
            ConstGauge::new(bus.nodes as i64),
        );
        r.register(
            "signaling_bus_publish_batch_size",
            "Operations per pipelined write to Redis",
            bus.batch_sizes.clone(),
        );
    }
    process::register(&mut r);
    r
}

fn reason_index(r: LeaveReason) -> usize {
    REASONS.iter().position(|x| *x == r).unwrap_or(0)
}

/// A histogram over fixed integer bounds, lock-free: an observation is a
/// search of `N` bounds and three relaxed adds. Values are integers (say
/// microseconds, or a count) and exposed divided by `per_unit` (say 1e6 for
/// seconds: a division, so 25 µs is exposed as 2.5e-5, not 2.4999e-5).
#[derive(Debug)]
pub struct FixedHistogram<const N: usize> {
    bounds: [u64; N],
    per_unit: f64,
    buckets: [AtomicU64; N],
    sum: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> FixedHistogram<N> {
    pub fn new(bounds: [u64; N], per_unit: f64) -> Self {
        FixedHistogram {
            bounds,
            per_unit,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: u64) {
        // Past the last bound a value is in +Inf only: the count.
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(v, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// The values now, for exposing (concurrent observations may land
    /// between the reads: a scrape is off by those few at most).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let count = self.count.load(Relaxed);
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| (*b as f64 / self.per_unit, n.load(Relaxed)))
            .collect();
        let finite: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::INFINITY, count.saturating_sub(finite)));
        HistogramSnapshot {
            buckets,
            sum: self.sum.load(Relaxed) as f64 / self.per_unit,
            count,
        }
    }
}

/// A histogram's values at one moment: per bucket (not cumulative, `+Inf`
/// last), sum and count. Empty (no buckets) encodes as nothing observed.
#[derive(Debug, Clone, Default)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inf = [(f64::INFINITY, self.count)];
        let buckets = if self.buckets.is_empty() {
            &inf[..]
        } else {
            &self.buckets
        };
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A [`FixedHistogram`] the registry encodes while the hot path holds it too.
#[derive(Debug)]
struct Shared<const N: usize>(Arc<FixedHistogram<N>>);

impl<const N: usize> EncodeMetric for Shared<N> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.snapshot().encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

pub mod process {
    //! The standard `process_*` metrics, read from `/proc/self` at scrape
    //! time (Linux; elsewhere they are left out).

    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Registry;

    /// `/proc` counts CPU time in USER_HZ ticks, which the kernel fixes at
    /// 100 per second for user space on every architecture Linux supports.
    const TICKS_PER_SECOND: f64 = 100.0;

    /// What `/proc/self` tells of this process; `None` where unreadable.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub struct Process {
        pub cpu_seconds: Option<f64>,
        pub start_time_seconds: Option<f64>,
        pub resident_bytes: Option<u64>,
        pub virtual_bytes: Option<u64>,
        pub open_fds: Option<u64>,
        pub max_fds: Option<u64>,
    }

    pub fn read() -> Process {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        // Fields after the command name, which is in parentheses and may
        // hold spaces: field 3 (state) is the first after the last `)`.
        let fields: Vec<&str> = stat
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let cpu_seconds = field(14)
            .zip(field(15))
            .map(|(u, s)| (u + s) as f64 / TICKS_PER_SECOND);
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        let start_time_seconds = boot
            .zip(field(22))
            .map(|(b, t)| b as f64 + t as f64 / TICKS_PER_SECOND);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Max open files"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            });
        Process {
            cpu_seconds,
            start_time_seconds,
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            open_fds,
            max_fds,
        }
    }

    pub fn register(r: &mut Registry) {
        let p = read();
        if let Some(v) = p.cpu_seconds {
            r.register(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                ConstCounter::new(v),
            );
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds,
            ),
        ];
        for (name, help, v) in gauges {
            if let Some(v) = v {
                r.register(name, help, ConstGauge::new(v as i64));
            }
        }
        if let Some(v) = p.start_time_seconds {
            r.register(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                ConstGauge::new(v),
            );
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn this_process_is_read() {
            let p = super::read();
            assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
            assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
            assert!(
                p.max_fds.is_some_and(|n| n >= p.open_fds.unwrap_or(0)),
                "{p:?}"
            );
            assert!(p.cpu_seconds.is_some(), "{p:?}");
            let now = crate::auth::now_unix() as f64;
            assert!(
                p.start_time_seconds
                    .is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0 * 365.0),
                "{p:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_series_follow_the_enums_index() {
        for (i, k) in RelayKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let m = Metrics::new();
        m.relayed(RelayKind::Answer, 3);
        m.error(ErrorCode::ALL[2]);
        let text = m.render(0, &BusStats::default(), Format::Prometheus);
        assert!(
            text.contains("signaling_messages_relayed_total{type=\"answer\"} 3\n"),
            "{text}"
        );
        let code = ErrorCode::ALL[2].as_str();
        assert!(
            text.contains(&format!("signaling_errors_total{{code=\"{code}\"}} 1\n")),
            "{text}"
        );
    }

    #[test]
    fn the_latency_histogram_is_cumulative_in_seconds() {
        let m = Metrics::new();
        m.relay_latency(Duration::from_micros(20));
        m.relay_latency(Duration::from_micros(300));
        m.relay_latency(Duration::from_secs(5));
        let text = m.render(0, &BusStats::default(), Format::OpenMetrics);
        for line in [
            "signaling_relay_latency_seconds_bucket{le=\"0.000025\"} 1\n",
            "signaling_relay_latency_seconds_bucket{le=\"0.0005\"} 2\n",
            "signaling_relay_latency_seconds_bucket{le=\"1.0\"} 2\n",
            "signaling_relay_latency_seconds_bucket{le=\"+Inf\"} 3\n",
            "signaling_relay_latency_seconds_count 3\n",
        ] {
            assert!(text.contains(line), "no {line:?} in {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn bus_series_only_with_a_bus_to_connect_to() {
        let m = Metrics::new();
        let alone = m.render(1, &BusStats::default(), Format::Prometheus);
        assert!(!alone.contains("signaling_bus_"), "{alone}");
        assert!(alone.contains("signaling_rooms 1\n"), "{alone}");
        let bus = BusStats {
            connected: Some(true),
            queued_bytes: 7,
            reconnects: 2,
            nodes: 3,
            batch_sizes: HistogramSnapshot::default(),
            undecodable: 4,
        };
        let clustered = m.render(1, &bus, Format::Prometheus);
        for line in [
            "signaling_bus_redis_connected 1\n",
            "signaling_bus_queue_bytes 7\n",
            "signaling_bus_reconnects_total 2\n",
            "signaling_bus_nodes 3\n",
            "signaling_bus_undecodable_total 4\n",
            "signaling_bus_publish_batch_size_count 0\n",
        ] {
            assert!(clustered.contains(line), "no {line:?} in {clustered}");
        }
    }
}
