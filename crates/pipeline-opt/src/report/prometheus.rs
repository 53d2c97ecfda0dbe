//! Prometheus metrics of a run for the node-exporter textfile collector, encoded by the
//! `prometheus-client` crate. The collector parses the classic text format, so the
//! OpenMetrics `# EOF` marker is left out, only counter, gauge and histogram are used,
//! and counters are named the classic way (see [`ClassicCounter`]).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::record::{RunRecord, StageStatus};
use crate::report::history::HistoryEntry;

/// Upper bounds of `pipeline_duration_seconds`, around the 45 s and 60 s targets.
pub const DURATION_BUCKETS: [f64; 10] =
    [10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0];

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The metrics of `record` (the last run) and of `history` (every recorded run, the
/// last one included): one histogram observation and one cache count per run.
pub fn render(record: &RunRecord, history: &[HistoryEntry]) -> Result<String, std::fmt::Error> {
    // Every metric says which command's runs it counts (`check` keeps its own history).
    let command = ("command".into(), record.kind.name().into());
    let mut registry = Registry::with_prefix_and_labels("pipeline", [command].into_iter());

    let duration = Family::<DurationHistogram>::default();
    let runs = Family::<ClassicCounter>::default();
    let cache_hits = Family::<ClassicCounter>::default();
    let stage_runs = Family::<ClassicCounter>::default();
    for e in history {
        // A run served from the cache takes a fraction of a second: labelled apart, it
        // cannot hide slow pipelines from a quantile over the runs that did work.
        duration
            .get_or_create(vec![("cached".into(), cached_label(e).into())])
            .0
            .observe(e.total.as_secs_f64());
        runs.get_or_create(vec![("outcome".into(), outcome_label(e))]).inc();
        for (id, s) in &e.stages {
            let labels = vec![("stage".to_string(), id.clone())];
            // Both families get every stage, so a hit ratio is defined (0) for all.
            let hits = cache_hits.get_or_create(labels.clone());
            let executed = stage_runs.get_or_create(labels.clone());
            if s.status == "cached" {
                hits.inc();
            } else if s.ran() {
                executed.inc();
            }
        }
    }
    registry.register_with_unit(
        "duration",
        "Total wall time of each recorded pipeline run, by how much of it the stage cache served",
        Unit::Seconds,
        duration,
    );
    registry.register("runs_total", "Recorded pipeline runs by outcome", runs);
    registry.register(
        "stage_cache_hits_total",
        "Recorded runs in which the stage was served from the stage cache",
        cache_hits,
    );
    registry.register("stage_executions_total", "Recorded runs in which the stage ran", stage_runs);

    let last_total = FloatGauge::default();
    last_total.set(record.total.as_secs_f64());
    registry.register_with_unit(
        "last_run_duration",
        "Total wall time of the last pipeline run",
        Unit::Seconds,
        last_total,
    );

    let idle = FloatGauge::default();
    idle.set(record.idle_cpu.as_secs_f64());
    registry.register_with_unit(
        "last_run_idle_cpu",
        "CPU time the last run left idle: cores times total minus the stages' CPU time",
        Unit::Seconds,
        idle,
    );

    let stage_duration = Family::<FloatGauge>::default();
    let stage_cached = Family::<Gauge>::default();
    let stage_failed = Family::<Gauge>::default();
    for s in &record.stages {
        let labels = vec![("stage".to_string(), s.id.clone())];
        stage_duration.get_or_create(labels.clone()).set(s.wall.as_secs_f64());
        stage_cached
            .get_or_create(labels.clone())
            .set(i64::from(matches!(s.status, StageStatus::Cached { .. })));
        stage_failed
            .get_or_create(labels.clone())
            .set(i64::from(matches!(s.status, StageStatus::Failed | StageStatus::TimedOut)));
    }
    registry.register_with_unit(
        "last_run_stage_duration",
        "Wall time of each stage in the last run (0 when cached or skipped)",
        Unit::Seconds,
        stage_duration,
    );
    registry.register(
        "last_run_stage_cached",
        "1 when the stage was served from the cache in the last run",
        stage_cached,
    );
    registry.register(
        "last_run_stage_failed",
        "1 when the stage failed or timed out in the last run",
        stage_failed,
    );

    let missed = Family::<Gauge>::default();
    let v = &record.verdict;
    missed
        .get_or_create(vec![("target".into(), "required".into())])
        .set(i64::from(!v.required_met));
    missed.get_or_create(vec![("target".into(), "stretch".into())]).set(i64::from(!v.stretch_met));
    for c in &v.stages {
        missed
            .get_or_create(vec![("target".into(), format!("stage:{}", c.id))])
            .set(i64::from(!c.met));
    }
    registry.register("last_run_target_missed", "1 when the last run missed the target", missed);

    let success = Gauge::<i64>::default();
    success.set(i64::from(record.outcome == crate::record::RunOutcome::Succeeded));
    registry.register("last_run_success", "1 when every stage of the last run succeeded", success);

    let mut out = String::new();
    // `encode_registry`, not `encode`: the textfile collector rejects the `# EOF` line.
    encode_registry(&mut out, &registry)?;
    Ok(out)
}

/// `all` when every stage that did not skip came from the cache (nothing ran), `none`
/// when none did, `some` otherwise.
fn cached_label(e: &HistoryEntry) -> &'static str {
    let cached = e.stages.values().filter(|s| s.status == "cached").count();
    let ran = e.stages.values().filter(|s| s.ran()).count();
    match (cached, ran) {
        (0, _) => "none",
        (_, 0) => "all",
        _ => "some",
    }
}

/// `pipeline_duration_seconds` with its buckets, so that a [`Family`] can create one per
/// label set.
#[derive(Debug, Clone)]
struct DurationHistogram(Histogram);

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram(Histogram::new(DURATION_BUCKETS))
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

fn outcome_label(e: &HistoryEntry) -> String {
    serde_json::to_value(e.outcome)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

/// `value` escaped as the text format requires inside a label's quotes: backslash,
/// double quote and line feed.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A labelled family encoded in label order. `prometheus_client`'s own `Family` keeps a
/// hash map, whose order changes between runs; a textfile should not change when its
/// values do not.
#[derive(Debug)]
struct Family<M> {
    members: std::sync::Mutex<BTreeMap<Labels, M>>,
}

impl<M> Default for Family<M> {
    fn default() -> Self {
        Family { members: Default::default() }
    }
}

impl<M: Default + Clone> Family<M> {
    /// The member for `labels`; metrics share their value between clones.
    fn get_or_create(&self, labels: Labels) -> M {
        self.members.lock().unwrap().entry(labels).or_default().clone()
    }
}

impl<M: EncodeMetric + TypedMetric + std::fmt::Debug + Send + Sync> EncodeMetric for Family<M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, m) in self.members.lock().unwrap().iter() {
            // prometheus-client writes label values as they are; a `"` or a newline in
            // a stage id (from a record or history line on disk) would end the value
            // and start a metric line of its own.
            let escaped: Labels =
                labels.iter().map(|(k, v)| (k.clone(), escape_label_value(v))).collect();
            m.encode(encoder.encode_family(&escaped)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.members.lock().unwrap().is_empty()
    }
}

/// A counter in the classic text format: `# TYPE x_total counter` and samples named
/// `x_total`. prometheus-client writes OpenMetrics counters, `# TYPE x counter` with
/// samples `x_total`, which the classic parser (node-exporter's textfile collector,
/// `promtool check metrics`) reads as an untyped `x_total` beside an empty `x`. So the
/// family is registered with its full name and its value written without a suffix.
#[derive(Debug, Clone, Default)]
struct ClassicCounter(Counter);

impl ClassicCounter {
    fn inc(&self) {
        self.0.inc();
    }
}

impl TypedMetric for ClassicCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ClassicCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}
