//! The sharding planner: which tests of a nextest archive each of N machines runs, so
//! that the slowest machine finishes as early as the measured durations allow. A pure
//! function of the archive's inventory, the per-test durations the history kept, and N;
//! reading the inventory ([`Inventory::from_nextest_list_json`]) is separate from it.
//!
//! Every test of the inventory is in exactly one shard, whether the history knows it or
//! not: weights come from the history, membership only from the inventory.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change of [`ShardPlan`]'s JSON form.
pub const SHARD_PLAN_SCHEMA_VERSION: u32 = 1;

/// The longest filterset argument a plan passes: the kernel refuses a single argument
/// over 128 KiB (`MAX_ARG_STRLEN`), and the rest of the command line needs room too.
pub const MAX_ARG_BYTES: usize = 96 * 1024;

/// The most filterset bytes one shard's command may carry in all its `-E` arguments
/// together: the whole argv and environment share `ARG_MAX` (2 MiB on Linux by default).
pub const MAX_SHARD_BYTES: usize = 1024 * 1024;

/// A binary whose predicted time is at most this fraction of one shard's share stays
/// whole (one `binary_id(=…)` and one listing of it per run); a larger one is split
/// into its tests. With every item at most a tenth of the share, the longest-first
/// assignment ends no shard more than 10 % above the mean.
const WHOLE_BINARY_FRACTION: f64 = 0.1;

/// How many of a test's most recent successful durations its weight is the median of.
pub const SAMPLES_KEPT: usize = 5;

/// The tests of an archive as nextest lists them: binary ids and test names, both
/// sorted, only the tests a plain `cargo nextest run` would run (not ignored ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub binaries: Vec<InventoryBinary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryBinary {
    /// nextest's binary id: `pkg` (its lib), `pkg::test-target`, `pkg::bin/name`.
    pub binary_id: String,
    pub tests: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "the test list is not the JSON of `cargo nextest list --message-format json` ({0}): list the archive with that command"
    )]
    Json(#[from] serde_json::Error),
}

/// The part of nextest's `TestListSummary` that says which tests exist.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ListSummary {
    rust_suites: BTreeMap<String, ListSuite>,
}

#[derive(Deserialize)]
struct ListSuite {
    #[serde(default)]
    testcases: BTreeMap<String, ListCase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ListCase {
    filter_match: FilterMatch,
}

#[derive(Deserialize)]
struct FilterMatch {
    status: String,
}

impl Inventory {
    /// Reads what `cargo nextest list --archive-file A --message-format json` prints.
    /// Tests nextest would not run by default (ignored, filtered out) are left out.
    pub fn from_nextest_list_json(text: &str) -> Result<Inventory, InventoryError> {
        let summary: ListSummary = serde_json::from_str(text)?;
        let binaries = summary
            .rust_suites
            .into_iter()
            .map(|(binary_id, suite)| InventoryBinary {
                binary_id,
                tests: suite
                    .testcases
                    .into_iter()
                    .filter(|(_, c)| c.filter_match.status == "matches")
                    .map(|(name, _)| name)
                    .collect(),
            })
            .filter(|b| !b.tests.is_empty())
            .collect();
        Ok(Inventory { binaries })
    }

    pub fn test_count(&self) -> usize {
        self.binaries.iter().map(|b| b.tests.len()).sum()
    }

    /// Every test as `binary_id test_name`, the key the run record and history use.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.binaries.iter().flat_map(|b| b.tests.iter().map(move |t| test_key(&b.binary_id, t)))
    }
}

/// `binary_id test_name`: how nextest names a test in its status lines, and the key of
/// a test in the run record and the history. A binary id has no space, so the first
/// space splits it.
pub fn test_key(binary_id: &str, test: &str) -> String {
    format!("{binary_id} {test}")
}

/// Past successful durations per test key (`binary_id test_name`), oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durations {
    pub samples: BTreeMap<String, Vec<Duration>>,
}

impl Durations {
    pub fn add(&mut self, key: impl Into<String>, d: Duration) {
        self.samples.entry(key.into()).or_default().push(d);
    }

    /// The median of the last [`SAMPLES_KEPT`] samples of `key`.
    fn weight(&self, key: &str) -> Option<u64> {
        let s = self.samples.get(key)?;
        let recent = &s[s.len().saturating_sub(SAMPLES_KEPT)..];
        median(recent.iter().map(|d| d.as_nanos().min(u64::MAX as u128) as u64).collect())
    }
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { v[mid - 1] / 2 + v[mid] / 2 })
}

#[derive(Debug, Clone)]
pub struct ShardOptions {
    pub shards: NonZeroUsize,
    /// What each test costs beyond the duration nextest reports for it (process
    /// start-up, listing), added to every weight.
    pub per_test_overhead: Duration,
    /// See [`MAX_ARG_BYTES`]; lowered only by tests.
    pub max_arg_bytes: usize,
    /// See [`MAX_SHARD_BYTES`]; lowered only by tests.
    pub max_shard_bytes: usize,
}

impl ShardOptions {
    pub fn new(shards: NonZeroUsize) -> ShardOptions {
        ShardOptions {
            shards,
            per_test_overhead: Duration::ZERO,
            max_arg_bytes: MAX_ARG_BYTES,
            max_shard_bytes: MAX_SHARD_BYTES,
        }
    }
}

/// Which tests a shard runs, as the arguments nextest takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Selection {
    /// One or more `-E` filtersets, whose union is the shard; each within
    /// [`MAX_ARG_BYTES`].
    Filtersets { filtersets: Vec<String> },
    /// `--partition slice:K/N`: nextest's own round-robin over the listed tests.
    Partition { partition: String },
}

impl Selection {
    /// The arguments of `cargo nextest run` that select the shard's tests.
    pub fn args(&self) -> Vec<String> {
        match self {
            Selection::Filtersets { filtersets } => {
                filtersets.iter().flat_map(|f| ["-E".to_string(), f.clone()]).collect()
            }
            Selection::Partition { partition } => vec!["--partition".into(), partition.clone()],
        }
    }
}

/// Why a plan is nextest's `slice` partition rather than one by durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// The history knows the duration of none of the inventory's tests.
    NoHistory,
    /// A shard's filtersets would not fit on a command line ([`MAX_SHARD_BYTES`]).
    TooLong,
}

impl Fallback {
    pub fn reason(self) -> &'static str {
        match self {
            Fallback::NoHistory => "the history has no duration for any test of the archive",
            Fallback::TooLong => "the shards' filtersets would not fit on a command line",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub schema_version: u32,
    /// `None`: split by measured durations; otherwise nextest's `slice`, and why.
    pub fallback: Option<Fallback>,
    /// Tests in the inventory.
    pub tests: usize,
    /// Tests whose weight came from their own history rather than a median.
    pub tests_with_history: usize,
    pub shards: Vec<Shard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based, as nextest's partitions count.
    pub index: usize,
    /// The sum of the weights of its tests; `None` when nothing was known to weigh.
    #[serde(with = "crate::record::opt_secs")]
    pub predicted: Option<Duration>,
    pub selection: Selection,
    /// The tests this shard runs, by binary id: for a slice, the ones nextest's
    /// round-robin over the sorted list gives it.
    pub tests: BTreeMap<String, Vec<String>>,
}

impl ShardPlan {
    /// Slowest predicted shard over the mean; `None` without predictions.
    pub fn predicted_balance(&self) -> Option<f64> {
        let p: Vec<f64> = self
            .shards
            .iter()
            .map(|s| s.predicted.map(|d| d.as_secs_f64()))
            .collect::<Option<_>>()?;
        balance(&p)
    }

    /// A few lines for people: strategy, and each shard's tests and predicted time.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        match self.fallback {
            None => writeln!(
                o,
                "{} tests on {} shards by measured durations ({} with their own history)",
                self.tests,
                self.shards.len(),
                self.tests_with_history
            ),
            Some(f) => writeln!(
                o,
                "{} tests on {} shards by nextest's --partition slice: {}",
                self.tests,
                self.shards.len(),
                f.reason()
            ),
        }
        .unwrap();
        for s in &self.shards {
            let n: usize = s.tests.values().map(Vec::len).sum();
            let predicted = s
                .predicted
                .map(|d| format!("{:.2} s", d.as_secs_f64()))
                .unwrap_or_else(|| "unknown".into());
            writeln!(o, "shard {}: {n} tests, predicted {predicted}", s.index).unwrap();
        }
        if let Some(b) = self.predicted_balance() {
            writeln!(o, "predicted balance (slowest / mean): {b:.3}").unwrap();
        }
        o
    }
}

/// Slowest over mean of `times`; `None` when empty or all zero.
pub fn balance(times: &[f64]) -> Option<f64> {
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let max = times.iter().copied().fold(0.0, f64::max);
    (mean > 0.0).then(|| max / mean)
}

/// An item of the assignment: a whole binary, or one test of a split binary.
struct Item<'a> {
    weight: u64,
    binary: usize,
    /// `None`: the whole binary.
    test: Option<&'a str>,
}

/// Splits `inventory` into `opts.shards` shards by the durations the history kept:
/// longest-processing-time first onto the least-loaded shard, ties by name, so the
/// same inputs give the same plan. Falls back to nextest's `slice` partition when the
/// history knows none of the tests or the filtersets would be too long.
pub fn plan_shards(inventory: &Inventory, durations: &Durations, opts: &ShardOptions) -> ShardPlan {
    let n = opts.shards.get();
    let overhead = opts.per_test_overhead.as_nanos().min(u64::MAX as u128) as u64;

    // Own weights first; the unknown get their binary's median, else the global one.
    let own: Vec<Vec<Option<u64>>> = inventory
        .binaries
        .iter()
        .map(|b| b.tests.iter().map(|t| durations.weight(&test_key(&b.binary_id, t))).collect())
        .collect();
    let known: Vec<u64> = own.iter().flatten().flatten().copied().collect();
    let tests_with_history = known.len();
    let Some(global) = median(known) else {
        return slice_plan(inventory, None, n, Fallback::NoHistory, 0);
    };
    let weights: Vec<Vec<u64>> = own
        .iter()
        .map(|ws| {
            let binary = median(ws.iter().flatten().copied().collect()).unwrap_or(global);
            ws.iter().map(|w| w.unwrap_or(binary).saturating_add(overhead)).collect()
        })
        .collect();

    let total: u64 = weights.iter().flatten().fold(0u64, |a, w| a.saturating_add(*w));
    let share = total as f64 / n as f64;
    let mut items = Vec::new();
    for (bi, b) in inventory.binaries.iter().enumerate() {
        let bw = weights[bi].iter().fold(0u64, |a, w| a.saturating_add(*w));
        if bw as f64 <= share * WHOLE_BINARY_FRACTION {
            items.push(Item { weight: bw, binary: bi, test: None });
        } else {
            for (t, w) in b.tests.iter().zip(&weights[bi]) {
                items.push(Item { weight: *w, binary: bi, test: Some(t) });
            }
        }
    }
    // Heaviest first; among equals, by binary id then test name (the inventory's order).
    items.sort_by(|a, b| {
        b.weight.cmp(&a.weight).then(a.binary.cmp(&b.binary)).then(a.test.cmp(&b.test))
    });

    let mut loads: BinaryHeap<Reverse<(u64, usize)>> = (0..n).map(|i| Reverse((0, i))).collect();
    let mut assigned: Vec<Vec<&Item>> = vec![Vec::new(); n];
    let mut predicted = vec![0u64; n];
    for item in &items {
        let Reverse((load, i)) = loads.pop().expect("n >= 1 shards");
        let load = load.saturating_add(item.weight);
        predicted[i] = load;
        assigned[i].push(item);
        loads.push(Reverse((load, i)));
    }

    let mut shards = Vec::with_capacity(n);
    for (i, items) in assigned.iter().enumerate() {
        // binary -> None (whole) or the tests, sorted, for a stable filterset.
        let mut by_binary: BTreeMap<usize, Option<Vec<&str>>> = BTreeMap::new();
        for item in items {
            match item.test {
                None => {
                    by_binary.insert(item.binary, None);
                }
                Some(t) => {
                    if let Some(v) =
                        by_binary.entry(item.binary).or_insert_with(|| Some(Vec::new()))
                    {
                        v.push(t);
                    }
                }
            }
        }
        let mut terms = Vec::new();
        let mut tests = BTreeMap::new();
        for (bi, subset) in by_binary {
            let b = &inventory.binaries[bi];
            let id = format!("binary_id(={})", escape(&b.binary_id));
            match subset {
                None => {
                    terms.push(id);
                    tests.insert(b.binary_id.clone(), b.tests.clone());
                }
                Some(mut ts) => {
                    ts.sort_unstable();
                    let alternatives: Vec<String> =
                        ts.iter().map(|t| format!("test(={})", escape(t))).collect();
                    // A binary with many tests in this shard takes several terms, each
                    // short enough for one argument.
                    let (open, close) = (format!("({id} & ("), "))");
                    let room = opts.max_arg_bytes.saturating_sub(open.len() + close.len());
                    let Some(groups) = pack(&alternatives, room) else {
                        return slice_plan(
                            inventory,
                            Some(&weights),
                            n,
                            Fallback::TooLong,
                            tests_with_history,
                        );
                    };
                    terms.extend(groups.into_iter().map(|g| format!("{open}{g}{close}")));
                    tests.insert(b.binary_id.clone(), ts.iter().map(|t| t.to_string()).collect());
                }
            }
        }
        let Some(filtersets) = pack(&terms, opts.max_arg_bytes) else {
            return slice_plan(inventory, Some(&weights), n, Fallback::TooLong, tests_with_history);
        };
        if filtersets.iter().map(String::len).sum::<usize>() > opts.max_shard_bytes {
            return slice_plan(inventory, Some(&weights), n, Fallback::TooLong, tests_with_history);
        }
        shards.push(Shard {
            index: i + 1,
            predicted: Some(Duration::from_nanos(predicted[i])),
            selection: Selection::Filtersets { filtersets },
            tests,
        });
    }
    ShardPlan {
        schema_version: SHARD_PLAN_SCHEMA_VERSION,
        fallback: None,
        tests: inventory.test_count(),
        tests_with_history,
        shards,
    }
}

/// Joins `terms` with ` | ` into as few filtersets as fit in `max` bytes each; `None`
/// when a single term does not fit. A shard with no term gets `none()`.
fn pack(terms: &[String], max: usize) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for t in terms {
        if t.len() > max {
            return None;
        }
        if !cur.is_empty() && cur.len() + 3 + t.len() > max {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push_str(" | ");
        }
        cur.push_str(t);
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(if cur.is_empty() { "none()".into() } else { cur });
    }
    Some(out)
}

/// nextest's `slice:K/N`: the listed tests, binaries and names sorted, dealt round-robin.
fn slice_plan(
    inventory: &Inventory,
    weights: Option<&[Vec<u64>]>,
    n: usize,
    fallback: Fallback,
    tests_with_history: usize,
) -> ShardPlan {
    let mut tests: Vec<BTreeMap<String, Vec<String>>> = vec![BTreeMap::new(); n];
    let mut predicted = vec![0u64; n];
    let mut k = 0usize;
    for (bi, b) in inventory.binaries.iter().enumerate() {
        for (ti, t) in b.tests.iter().enumerate() {
            let shard = k % n;
            tests[shard].entry(b.binary_id.clone()).or_default().push(t.clone());
            if let Some(w) = weights {
                predicted[shard] = predicted[shard].saturating_add(w[bi][ti]);
            }
            k += 1;
        }
    }
    ShardPlan {
        schema_version: SHARD_PLAN_SCHEMA_VERSION,
        fallback: Some(fallback),
        tests: inventory.test_count(),
        tests_with_history,
        shards: tests
            .into_iter()
            .enumerate()
            .map(|(i, tests)| Shard {
                index: i + 1,
                predicted: weights.map(|_| Duration::from_nanos(predicted[i])),
                selection: Selection::Partition { partition: format!("slice:{}/{n}", i + 1) },
                tests,
            })
            .collect(),
    }
}

/// A name as the text of an exact (`=`) matcher: the characters nextest's filterset
/// grammar would read as syntax (`\`, `)`, `,`, `/`) escaped with a backslash, and
/// whitespace and control characters, which it could trim or reject, as `\u{…}`.
pub fn escape(name: &str) -> String {
    let mut o = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\\' | ')' | ',' | '/' => {
                o.push('\\');
                o.push(c);
            }
            c if c.is_whitespace() || c.is_control() => write!(o, "\\u{{{:x}}}", c as u32).unwrap(),
            c => o.push(c),
        }
    }
    o
}

/// `ci-workflow --shards auto`: how many shard jobs, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardCountChoice {
    pub count: usize,
    /// Per candidate N, the predicted test phase: the tests in the one job for N = 1;
    /// the slowest shard plus two jobs' overhead (a shard job and the merge job, which
    /// an unsharded pipeline does not have) for N > 1.
    pub predicted: Vec<(usize, Duration)>,
    pub reason: String,
}

/// Picks N for `ci-workflow --shards auto` from the tests the history knows (planned as
/// [`plan_shards`] would plan them) and the per-job overhead: the N with the shortest
/// predicted test phase, or the smallest N within 5 % of it (fewer machines for almost
/// the same time); 1 when no N > 1 beats running the tests in the one job.
pub fn choose_shard_count(
    durations: &Durations,
    job_overhead: Duration,
    max: NonZeroUsize,
) -> ShardCountChoice {
    let mut by_binary: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in durations.samples.keys() {
        let (binary, test) = key.split_once(' ').unwrap_or((key.as_str(), ""));
        by_binary.entry(binary.to_string()).or_default().push(test.to_string());
    }
    let inventory = Inventory {
        binaries: by_binary
            .into_iter()
            .map(|(binary_id, tests)| InventoryBinary { binary_id, tests })
            .collect(),
    };
    if inventory.test_count() == 0 {
        return ShardCountChoice {
            count: 1,
            predicted: Vec::new(),
            reason: "the history holds no test durations, so sharding cannot be planned: 1 job (run `optimize` first)".into(),
        };
    }
    let mut predicted = Vec::new();
    for n in 1..=max.get() {
        let options = ShardOptions::new(NonZeroUsize::new(n).expect("n >= 1"));
        let plan = plan_shards(&inventory, durations, &options);
        let slowest = plan.shards.iter().filter_map(|s| s.predicted).max().unwrap_or_default();
        let phase = if n == 1 { slowest } else { slowest.saturating_add(job_overhead * 2) };
        predicted.push((n, phase));
    }
    let best = predicted.iter().map(|(_, p)| *p).min().unwrap_or_default();
    let count = predicted
        .iter()
        .find(|(_, p)| p.as_secs_f64() <= best.as_secs_f64() * 1.05)
        .map_or(1, |(n, _)| *n);
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let one = predicted[0].1;
    let chosen = predicted[count - 1].1;
    let reason = if count == 1 {
        format!(
            "1 job: the tests take {} in one job, and no split beats that once each shard adds two jobs' overhead of {} (a shard job and the merge job)",
            secs(one),
            secs(job_overhead)
        )
    } else {
        format!(
            "{count} shards: the tests take {} in one job; split {count} ways the slowest shard is predicted at {} plus two jobs' overhead of {} each, {} in all{}",
            secs(one),
            secs(chosen.saturating_sub(job_overhead * 2)),
            secs(job_overhead),
            secs(chosen),
            if count < max.get() {
                format!(
                    "; more shards save less than 5 % (the fastest, {} shards, {})",
                    predicted.iter().find(|(_, p)| *p == best).map_or(count, |(n, _)| *n),
                    secs(best)
                )
            } else {
                String::new()
            }
        )
    };
    ShardCountChoice { count, predicted, reason }
}
