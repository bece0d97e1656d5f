//! What the dispatcher counts, exposed as OpenMetrics text (what Prometheus scrapes) at
//! `/metrics`.
//!
//! Counters and histograms are updated on the invoke path (a few atomic operations each;
//! the two every call updates in per-thread shards, added up when scraped); gauges of
//! what exists now (concurrent executions, environments by state) are read from
//! the pools when scraped, so they cannot drift from the truth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ember_policy::Throttle;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::shard::{Padded, SHARDS};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

/// How an invocation failed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ErrorKind {
    /// The handler raised or returned an error.
    handled,
    /// The runtime exited during the invocation.
    crashed,
    out_of_memory,
    timeout,
    response_too_large,
    /// The environment failed to initialize.
    init,
}

impl ErrorKind {
    const ALL: [ErrorKind; 6] = [
        ErrorKind::handled,
        ErrorKind::crashed,
        ErrorKind::out_of_memory,
        ErrorKind::timeout,
        ErrorKind::response_too_large,
        ErrorKind::init,
    ];
}

/// Every throttle `Reason`.
const THROTTLE_REASONS: [Throttle; 3] = [
    Throttle::AccountConcurrency { limit: 0 },
    Throttle::ReservedConcurrency { limit: 0 },
    Throttle::ScaleUpRate {
        retry_after: Duration::ZERO,
    },
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    function: String,
    kind: ErrorKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    function: String,
    reason: String,
}

/// An environment's state, for the environments gauge.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum EnvState {
    initializing,
    idle,
    busy,
    provisioned,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabels {
    function: String,
    state: EnvState,
}

type Histograms = Family<FunctionLabel, ShardedHistogram, fn() -> ShardedHistogram>;

/// A counter that every call adds to: each thread counts in its own shard
/// ([`crate::shard`]), and a scrape adds them up.
#[derive(Clone, Default, Debug)]
pub(crate) struct ShardedCounter(Arc<[Padded<AtomicU64>; SHARDS]>);

impl ShardedCounter {
    pub fn inc(&self) {
        self.0[crate::shard::index()]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram that every call observes into: each thread in its own shard
/// ([`crate::shard`]), added up when scraped. Buckets as `prometheus_client`'s: each
/// counts the observations up to its bound and above the one before, the last is `+Inf`.
#[derive(Clone, Debug)]
pub(crate) struct ShardedHistogram(Arc<HistogramShards>);

#[derive(Debug)]
struct HistogramShards {
    bounds: Box<[f64]>,
    shards: [Padded<Mutex<Observed>>; SHARDS],
}

#[derive(Debug, Default)]
struct Observed {
    sum: f64,
    count: u64,
    buckets: Box<[u64]>,
}

impl ShardedHistogram {
    fn new(bounds: impl IntoIterator<Item = f64>) -> ShardedHistogram {
        let bounds: Box<[f64]> = bounds.into_iter().chain([f64::MAX]).collect();
        let shards = std::array::from_fn(|_| {
            Padded(Mutex::new(Observed {
                buckets: vec![0; bounds.len()].into(),
                ..Observed::default()
            }))
        });
        ShardedHistogram(Arc::new(HistogramShards { bounds, shards }))
    }

    pub fn observe(&self, v: f64) {
        let histogram = &*self.0;
        let bucket = histogram.bounds.iter().position(|bound| *bound >= v);
        let mut observed = histogram.shards[crate::shard::index()]
            .0
            .lock()
            .expect("histogram shard");
        observed.sum += v;
        observed.count += 1;
        if let Some(i) = bucket {
            observed.buckets[i] += 1;
        }
    }

    /// The sum, the count and each bucket's count, over all shards.
    fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let histogram = &*self.0;
        let mut buckets: Vec<(f64, u64)> = histogram.bounds.iter().map(|b| (*b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0);
        for shard in &histogram.shards {
            let observed = shard.0.lock().expect("histogram shard");
            sum += observed.sum;
            count += observed.count;
            for (total, n) in buckets.iter_mut().zip(&observed.buckets) {
                total.1 += n;
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Every metric the dispatcher keeps.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    invocations: Family<FunctionLabel, ShardedCounter>,
    errors: Family<ErrorLabels, Counter>,
    throttles: Family<ThrottleLabels, Counter>,
    duration: Histograms,
    init_duration: Histograms,
    cold_starts: Family<FunctionLabel, Counter>,
    prewarms: Family<FunctionLabel, Counter>,
    scale_up_waits: Family<FunctionLabel, Counter>,
    provisioned_invocations: Family<FunctionLabel, Counter>,
    spillovers: Family<FunctionLabel, Counter>,
    concurrent: Family<FunctionLabel, Gauge>,
    environments: Family<EnvLabels, Gauge>,
    destroying: Gauge,
    provisioned: Family<FunctionLabel, Gauge>,
    utilization: Family<FunctionLabel, Gauge<f64, AtomicU64>>,
}

/// Invocation durations: 0.5 ms to about 4 minutes, doubling.
fn duration_histogram() -> ShardedHistogram {
    ShardedHistogram::new(exponential_buckets(0.0005, 2.0, 20))
}

/// Init durations: 1 ms to about 16 s, doubling.
fn init_histogram() -> ShardedHistogram {
    ShardedHistogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            invocations: Family::default(),
            errors: Family::default(),
            throttles: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            init_duration: Family::new_with_constructor(init_histogram),
            cold_starts: Family::default(),
            prewarms: Family::default(),
            scale_up_waits: Family::default(),
            provisioned_invocations: Family::default(),
            spillovers: Family::default(),
            concurrent: Family::default(),
            environments: Family::default(),
            destroying: Gauge::default(),
            provisioned: Family::default(),
            utilization: Family::default(),
        };
        {
            let mut r = metrics.registry.lock().expect("metrics lock");
            r.register(
                "ember_invocations",
                "Invocations that ran (throttled calls are not counted)",
                metrics.invocations.clone(),
            );
            r.register(
                "ember_errors",
                "Invocations that ended in an error, by kind",
                metrics.errors.clone(),
            );
            r.register(
                "ember_throttles",
                "Calls refused with 429, by Lambda's Reason",
                metrics.throttles.clone(),
            );
            r.register(
                "ember_duration_seconds",
                "Invocation duration, as in the REPORT line",
                metrics.duration.clone(),
            );
            r.register(
                "ember_init_duration_seconds",
                "Environment init duration (cold starts and pre-warms)",
                metrics.init_duration.clone(),
            );
            r.register(
                "ember_cold_starts",
                "Invocations that started a new environment",
                metrics.cold_starts.clone(),
            );
            r.register(
                "ember_prewarms",
                "Environments started ahead of an expected call by the adaptive keep-alive",
                metrics.prewarms.clone(),
            );
            r.register(
                "ember_scale_up_waits",
                "Calls that waited on the scale-up pace for an environment",
                metrics.scale_up_waits.clone(),
            );
            r.register(
                "ember_provisioned_invocations",
                "Invocations that ran on a provisioned environment",
                metrics.provisioned_invocations.clone(),
            );
            r.register(
                "ember_provisioned_spillover_invocations",
                "Invocations of a version with provisioned concurrency that ran on an on-demand environment",
                metrics.spillovers.clone(),
            );
            r.register(
                "ember_provisioned_concurrency",
                "Provisioned environments initialized now (idle or busy)",
                metrics.provisioned.clone(),
            );
            r.register(
                "ember_provisioned_utilization",
                "Share of the provisioned environments that are busy now (0-1)",
                metrics.utilization.clone(),
            );
            r.register(
                "ember_concurrent_executions",
                "Invocations running now",
                metrics.concurrent.clone(),
            );
            r.register(
                "ember_environments",
                "Execution environments now, by state",
                metrics.environments.clone(),
            );
            r.register(
                "ember_environments_destroying",
                "Retired execution environments still being torn down, all functions",
                metrics.destroying.clone(),
            );
        }
        metrics
    }
}

fn label(function: &str) -> FunctionLabel {
    FunctionLabel {
        function: function.to_owned(),
    }
}

/// A function's invocation counter and duration histogram, which every call updates: looked
/// up once, when the function is deployed, rather than by its label on each call. They share
/// their counts with the metrics' families, which never drop a function's entries.
pub(crate) struct Counted {
    /// For the metrics a call updates only sometimes (init duration, errors).
    label: FunctionLabel,
    invocations: ShardedCounter,
    duration: ShardedHistogram,
}

impl Metrics {
    /// `function`'s per-call metrics.
    pub fn counted(&self, function: &str) -> Counted {
        let label = label(function);
        Counted {
            invocations: self.invocations.get_or_create(&label).clone(),
            duration: self.duration.get_or_create(&label).clone(),
            label,
        }
    }

    /// One invocation ran to its end (`init` on a cold start).
    pub fn invoked(
        &self,
        counted: &Counted,
        duration: Duration,
        init: Option<Duration>,
        error: Option<ErrorKind>,
    ) {
        counted.invocations.inc();
        counted.duration.observe(duration.as_secs_f64());
        if let Some(init) = init {
            self.init_duration
                .get_or_create(&counted.label)
                .observe(init.as_secs_f64());
        }
        if let Some(kind) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    function: counted.label.function.clone(),
                    kind,
                })
                .inc();
        }
    }

    pub fn cold_start(&self, function: &str) {
        self.cold_starts.get_or_create(&label(function)).inc();
    }

    pub fn prewarmed(&self, function: &str, init: Duration) {
        let l = label(function);
        self.prewarms.get_or_create(&l).inc();
        self.init_duration
            .get_or_create(&l)
            .observe(init.as_secs_f64());
    }

    /// A provisioned environment finished its init.
    pub fn provisioned(&self, function: &str, init: Duration) {
        self.init_duration
            .get_or_create(&label(function))
            .observe(init.as_secs_f64());
    }

    /// A call to a version with provisioned concurrency ran, on a provisioned environment
    /// or spilled over to an on-demand one.
    pub fn provisioned_call(&self, function: &str, on_provisioned: bool) {
        let family = if on_provisioned {
            &self.provisioned_invocations
        } else {
            &self.spillovers
        };
        family.get_or_create(&label(function)).inc();
    }

    pub fn scale_up_wait(&self, function: &str) {
        self.scale_up_waits.get_or_create(&label(function)).inc();
    }

    pub fn throttled(&self, function: &str, throttle: &Throttle) {
        self.throttles
            .get_or_create(&ThrottleLabels {
                function: function.to_owned(),
                reason: throttle.reason().to_owned(),
            })
            .inc();
    }

    /// A function's counters since the server started, into `stats`.
    pub fn totals(&self, stats: &mut crate::stats::FunctionStats) {
        let l = label(&stats.function);
        let count = |family: &Family<FunctionLabel, Counter>| family.get(&l).map_or(0, |c| c.get());
        stats.invocations = self.invocations.get(&l).map_or(0, |c| c.get());
        stats.cold_starts = count(&self.cold_starts);
        stats.prewarms = count(&self.prewarms);
        stats.errors = ErrorKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let labels = ErrorLabels {
                    function: stats.function.clone(),
                    kind,
                };
                self.errors.get(&labels).map(|c| c.get())
            })
            .sum();
        stats.throttles = THROTTLE_REASONS
            .iter()
            .filter_map(|t| {
                let labels = ThrottleLabels {
                    function: stats.function.clone(),
                    reason: t.reason().to_owned(),
                };
                self.throttles.get(&labels).map(|c| c.get())
            })
            .sum();
    }

    /// Encodes everything, with the gauges set from `now` and `destroying`: what exists at
    /// this moment.
    pub fn encode(&self, now: &[FunctionNow], destroying: usize) -> String {
        self.destroying
            .set(i64::try_from(destroying).unwrap_or(i64::MAX));
        self.concurrent.clear();
        self.environments.clear();
        self.provisioned.clear();
        self.utilization.clear();
        for f in now {
            if f.provisioned_allocated > 0 {
                let l = label(&f.function);
                self.provisioned
                    .get_or_create(&l)
                    .set(i64::from(f.provisioned_allocated));
                let busy = f.provisioned_allocated.saturating_sub(f.provisioned);
                self.utilization
                    .get_or_create(&l)
                    .set(f64::from(busy) / f64::from(f.provisioned_allocated));
            }
            self.concurrent
                .get_or_create(&label(&f.function))
                .set(i64::from(f.concurrent));
            let states = [
                (EnvState::initializing, f.initializing),
                (EnvState::idle, f.idle),
                (EnvState::busy, f.busy),
                (EnvState::provisioned, f.provisioned),
            ];
            for (state, n) in states {
                self.environments
                    .get_or_create(&EnvLabels {
                        function: f.function.clone(),
                        state,
                    })
                    .set(i64::from(n));
            }
        }
        let mut text = String::new();
        let registry = self.registry.lock().expect("metrics lock");
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// One function's gauges at a moment: running invocations and environments by state.
#[derive(Default)]
pub(crate) struct FunctionNow {
    pub function: String,
    pub concurrent: u32,
    pub initializing: u32,
    /// Idle on-demand environments.
    pub idle: u32,
    pub busy: u32,
    /// Idle provisioned environments.
    pub provisioned: u32,
    /// Initialized provisioned environments, idle or busy.
    pub provisioned_allocated: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_counted_on_many_threads_are_scraped_as_one_total() {
        let metrics = Metrics::default();
        let counted = metrics.counted("f");
        let threads = crate::shard::SHARDS + 3;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for ms in [0.2, 3.0, 3.0] {
                        metrics.invoked(&counted, Duration::from_secs_f64(ms / 1000.0), None, None);
                    }
                });
            }
        });
        let text = metrics.encode(&[], 0);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let calls = (3 * threads).to_string();
        assert_eq!(line("ember_invocations_total{function=\"f\"}"), calls);
        let seconds = "ember_duration_seconds";
        assert_eq!(line(&format!("{seconds}_count{{function=\"f\"}}")), calls);
        // Buckets are cumulative: 0.5 ms holds the fast third, 4 ms and +Inf all of them.
        let bucket = |le: &str| line(&format!("{seconds}_bucket{{le=\"{le}\",function=\"f\"}}"));
        assert_eq!(bucket("0.0005"), threads.to_string());
        assert_eq!(bucket("0.002"), threads.to_string());
        assert_eq!(bucket("0.004"), calls);
        assert_eq!(bucket("+Inf"), calls);
        let sum: f64 = line(&format!("{seconds}_sum{{function=\"f\"}}"))
            .parse()
            .unwrap();
        assert!((sum - 0.0062 * threads as f64).abs() < 1e-9, "{sum}");
    }
}
