//! The statistics of `bench-compare`, pure functions on plain numbers: a paired t-test on
//! the log of head/base per round, Holm's correction across the suite, Bonferroni
//! simultaneous confidence intervals, and the verdict that combines them.

use serde::{Deserialize, Serialize};

/// What a comparison of one benchmark concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Significantly slower, and a slowdown of the threshold's size is plausible.
    Regressed,
    /// Significantly faster by a plausible threshold-sized amount.
    Improved,
    /// The whole confidence interval lies inside ±threshold.
    Unchanged,
    /// The noise is too large to rule a threshold-sized change in or out.
    Inconclusive,
    /// Only the head side has this benchmark.
    Added,
    /// Only the base side has this benchmark.
    Removed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regressed => "regressed",
            Verdict::Improved => "improved",
            Verdict::Unchanged => "unchanged",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Added => "added",
            Verdict::Removed => "removed",
        }
    }
}

/// The outcome of the paired test for one benchmark, before the suite-wide correction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedTest {
    pub rounds: usize,
    /// Mean of ln(head/base) over the rounds.
    pub mean_log: f64,
    /// Standard error of that mean.
    pub std_err: f64,
    /// Two-sided p-value of "no change".
    pub p_value: f64,
}

/// One benchmark's comparison after the suite-wide correction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// exp(mean ln(head/base)): the geometric mean of the per-round ratios.
    pub ratio: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
    /// Holm-adjusted p-value.
    pub p_adjusted: f64,
    /// The smallest relative change this run could have told apart from noise: the
    /// half-width of the simultaneous interval, as a fraction (0.02 = 2%).
    pub noise_floor: f64,
    pub verdict: Verdict,
}

/// Paired t-test of ln(head/base) over rounds. Needs at least two rounds.
pub fn paired_test(base: &[f64], head: &[f64]) -> Option<PairedTest> {
    let logs: Vec<f64> = base
        .iter()
        .zip(head)
        .filter(|(b, h)| **b > 0.0 && **h > 0.0 && b.is_finite() && h.is_finite())
        .map(|(b, h)| (h / b).ln())
        .collect();
    one_sample_test(&logs)
}

/// t-test of "the mean of `logs` is zero".
pub fn one_sample_test(logs: &[f64]) -> Option<PairedTest> {
    let n = logs.len();
    if n < 2 {
        return None;
    }
    let mean = logs.iter().sum::<f64>() / n as f64;
    let var = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std_err = (var / n as f64).sqrt();
    let p_value = if std_err == 0.0 {
        if mean == 0.0 { 1.0 } else { 0.0 }
    } else {
        let t = (mean / std_err).abs();
        (2.0 * (1.0 - student_t_cdf(t, (n - 1) as f64))).clamp(0.0, 1.0)
    };
    Some(PairedTest { rounds: n, mean_log: mean, std_err, p_value })
}

/// Holm's step-down adjustment: controls the family-wise error rate across the suite
/// without assuming the benchmarks are independent.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![1.0; m];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        let p = ((m - rank) as f64 * p_values[i]).min(1.0);
        running = running.max(p);
        adjusted[i] = running;
    }
    adjusted
}

/// Assesses every tested benchmark of a suite together: Holm-adjusted significance at
/// `alpha`, simultaneous (Bonferroni) intervals at `1 - alpha`, then the verdict against
/// `threshold` (0.05 = 5%), symmetric on the log scale.
pub fn assess_suite(tests: &[PairedTest], threshold: f64, alpha: f64) -> Vec<Assessment> {
    let m = tests.len().max(1);
    let adjusted = holm(&tests.iter().map(|t| t.p_value).collect::<Vec<_>>());
    let limit = (1.0 + threshold).ln();
    tests
        .iter()
        .zip(adjusted)
        .map(|(t, p_adjusted)| {
            let df = (t.rounds - 1) as f64;
            let q = student_t_quantile(1.0 - alpha / (2.0 * m as f64), df);
            let half = q * t.std_err;
            let (lo, hi) = (t.mean_log - half, t.mean_log + half);
            let significant = p_adjusted < alpha;
            let verdict = if significant && t.mean_log > 0.0 && hi >= limit {
                Verdict::Regressed
            } else if significant && t.mean_log < 0.0 && lo <= -limit {
                Verdict::Improved
            } else if lo > -limit && hi < limit {
                Verdict::Unchanged
            } else {
                Verdict::Inconclusive
            };
            Assessment {
                ratio: t.mean_log.exp(),
                ci_low: lo.exp(),
                ci_high: hi.exp(),
                p_value: t.p_value,
                p_adjusted,
                noise_floor: half.exp() - 1.0,
                verdict,
            }
        })
        .collect()
}

/// Median of a non-empty slice (NaN-free input).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] })
}

/// The 10th percentile: on a shared machine, other processes only ever add time to a
/// sample (preemption, cache pollution), so a low quantile of criterion's samples tracks
/// the code's own speed far more tightly than the median, while staying clear of the
/// single luckiest sample.
pub fn low_quantile(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 10])
}

/// CDF of Student's t distribution with `df` degrees of freedom.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let x = df / (df + t * t);
    let tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, x);
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// Inverse of [`student_t_cdf`] by bisection: exact enough (1e-10) and free of tables.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    let (mut lo, mut hi) = (-1e4, 1e4);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-10 {
            break;
        }
    }
    (lo + hi) / 2.0
}

/// I_x(a, b) by the continued fraction of Numerical Recipes (Lentz's method).
fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The continued fraction converges fast only on this side of the mean.
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-14 {
            break;
        }
    }
    h
}

/// Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for positive arguments.
fn ln_gamma(x: f64) -> f64 {
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_tables() {
        // Values from any t table.
        for (p, df, want) in [(0.975, 9.0, 2.262), (0.975, 1.0, 12.706), (0.995, 4.0, 4.604)] {
            let got = student_t_quantile(p, df);
            assert!((got - want).abs() < 1e-3, "t({p}, {df}) = {got}, want {want}");
        }
    }

    #[test]
    fn holm_is_monotone_and_capped() {
        assert_eq!(holm(&[0.01, 0.04, 0.03]), vec![0.03, 0.06, 0.06]);
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
    }

    #[test]
    fn verdicts() {
        let base = [100.0; 8];
        let slow: Vec<f64> = (0..8).map(|i| 110.0 + (i % 2) as f64).collect();
        let same: Vec<f64> = (0..8).map(|i| 100.0 + (i % 2) as f64 * 0.5).collect();
        let noisy: Vec<f64> = (0..8).map(|i| if i % 2 == 0 { 80.0 } else { 125.0 }).collect();
        let fast: Vec<f64> = (0..8).map(|i| 80.0 + (i % 2) as f64).collect();
        let tests: Vec<PairedTest> =
            [&slow, &same, &noisy, &fast].iter().map(|h| paired_test(&base, h).unwrap()).collect();
        let verdicts: Vec<Verdict> =
            assess_suite(&tests, 0.05, 0.05).iter().map(|a| a.verdict).collect();
        assert_eq!(
            verdicts,
            [Verdict::Regressed, Verdict::Unchanged, Verdict::Inconclusive, Verdict::Improved]
        );
    }
}
