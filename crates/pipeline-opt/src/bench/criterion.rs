//! Reading what criterion left behind: `<criterion home>/**/<baseline>/{benchmark,
//! estimates,sample}.json` (both the current lower-case and the old capitalised key
//! spellings), and the `name  time: [lo mid hi]` lines of harnesses that only print.

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Deserialize;

use super::stats::low_quantile;

/// One benchmark's measurement in one run, in nanoseconds per iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub id: String,
    /// The value a round contributes: the 10th percentile of the per-iteration sample
    /// times (see [`low_quantile`]).
    pub nanos: f64,
    /// The directory criterion wrote it to (for `--save-baseline`), if any.
    pub dir: Option<Utf8PathBuf>,
}

/// A result file that exists but cannot be read as criterion wrote it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("criterion result {path} is corrupted ({message}); delete it and run the benchmark again")]
pub struct CorruptResult {
    pub path: Utf8PathBuf,
    pub message: String,
}

#[derive(Deserialize)]
struct BenchmarkJson {
    #[serde(alias = "FullId", alias = "fullId")]
    full_id: String,
}

#[derive(Deserialize)]
struct SampleJson {
    #[serde(alias = "Iters")]
    iters: Vec<f64>,
    #[serde(alias = "Times")]
    times: Vec<f64>,
}

#[derive(Deserialize)]
struct EstimatesJson {
    #[serde(alias = "Median")]
    median: EstimateJson,
}

#[derive(Deserialize)]
struct EstimateJson {
    #[serde(alias = "PointEstimate", alias = "pointEstimate")]
    point_estimate: f64,
}

/// Every benchmark under `home` whose results are in a `<baseline>` directory (`new` for
/// a fresh run). Corrupted files are returned separately so that one bad file does not
/// hide the other benchmarks.
pub fn read_results(home: &Utf8Path, baseline: &str) -> (Vec<Measurement>, Vec<CorruptResult>) {
    let mut found = Vec::new();
    let mut corrupt = Vec::new();
    let mut dirs = Vec::new();
    collect_dirs(home, baseline, &mut dirs);
    dirs.sort();
    for dir in dirs {
        match read_one(&dir) {
            Ok(Some(m)) => found.push(m),
            Ok(None) => {}
            Err(e) => corrupt.push(e),
        }
    }
    (found, corrupt)
}

fn collect_dirs(dir: &Utf8Path, baseline: &str, out: &mut Vec<Utf8PathBuf>) {
    let Ok(entries) = dir.read_dir_utf8() else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if entry.file_name() == baseline && path.join("benchmark.json").is_file() {
            out.push(path.to_owned());
        } else if entry.file_name() != "report" {
            collect_dirs(path, baseline, out);
        }
    }
}

fn read_one(dir: &Utf8Path) -> Result<Option<Measurement>, CorruptResult> {
    fn load<T: for<'de> Deserialize<'de>>(path: &Utf8Path) -> Result<Option<T>, CorruptResult> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CorruptResult { path: path.to_owned(), message: e.to_string() }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CorruptResult { path: path.to_owned(), message: e.to_string() })
    }
    let Some(bench) = load::<BenchmarkJson>(&dir.join("benchmark.json"))? else {
        return Ok(None);
    };
    let from_sample = load::<SampleJson>(&dir.join("sample.json"))?.and_then(|s| {
        let per_iter: Vec<f64> =
            s.iters.iter().zip(&s.times).filter(|(i, _)| **i > 0.0).map(|(i, t)| t / i).collect();
        low_quantile(&per_iter)
    });
    let nanos = match from_sample {
        Some(n) => n,
        None => match load::<EstimatesJson>(&dir.join("estimates.json"))? {
            Some(e) => e.median.point_estimate,
            None => {
                return Err(CorruptResult {
                    path: dir.to_owned(),
                    message: "neither sample.json nor estimates.json is present".into(),
                });
            }
        },
    };
    Ok(Some(Measurement { id: bench.full_id, nanos, dir: Some(dir.to_owned()) }))
}

/// Criterion-style lines from a harness that only prints:
/// `id    time:   [1.01 µs 1.02 µs 1.04 µs]`, the id possibly alone on the line before.
/// The middle value (criterion's point estimate) is the measurement.
pub fn parse_text_output(stdout: &str) -> Vec<Measurement> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_id: Option<String> = None;
    for line in stdout.lines() {
        let Some(pos) = line.find("time:") else {
            let trimmed = line.trim();
            if !trimmed.is_empty() && !line.starts_with(char::is_whitespace) {
                last_id = Some(trimmed.to_string());
            }
            continue;
        };
        let before = line[..pos].trim();
        let id = if before.is_empty() { last_id.take() } else { Some(before.to_string()) };
        let rest = &line[pos + "time:".len()..];
        let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else { continue };
        let words: Vec<&str> = rest[open + 1..close].split_whitespace().collect();
        if let (Some(id), [_, _, v, u, _, _]) = (id, words.as_slice())
            && let (Ok(value), Some(scale)) = (v.parse::<f64>(), unit_nanos(u))
        {
            out.insert(id, value * scale);
        }
    }
    out.into_iter().map(|(id, nanos)| Measurement { id, nanos, dir: None }).collect()
}

fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ps" => 1e-3,
        "ns" => 1.0,
        "µs" | "us" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_both_layouts() {
        let out = "short   time:   [1.0 ns 2.5 ns 3.0 ns]\n\
                   a/very/long/benchmark/name/that/wraps\n                        time:   [1.0 µs 1.5 µs 2.0 µs]\n\
                   Found 3 outliers\n";
        let got: Vec<(String, f64)> =
            parse_text_output(out).into_iter().map(|m| (m.id, m.nanos)).collect();
        assert_eq!(
            got,
            [("a/very/long/benchmark/name/that/wraps".to_string(), 1500.0), ("short".into(), 2.5)]
        );
    }

    #[test]
    fn capitalised_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = Utf8Path::from_path(dir.path()).unwrap().join("g/f/new");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("benchmark.json"), r#"{"FullId":"g/f"}"#).unwrap();
        std::fs::write(d.join("estimates.json"), r#"{"Median":{"PointEstimate":42.0}}"#).unwrap();
        let (found, corrupt) = read_results(d.parent().unwrap().parent().unwrap(), "new");
        assert!(corrupt.is_empty());
        assert_eq!(found[0].id, "g/f");
        assert_eq!(found[0].nanos, 42.0);
    }
}
