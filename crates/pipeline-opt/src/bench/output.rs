//! Rendering a finished [`Comparison`]: a terminal table, markdown for PR comments and
//! the GitHub step summary, and versioned JSON.

use std::fmt::Write as _;

use super::{BenchmarkResult, Comparison, Verdict};

/// `1.23 µs` style, three significant digits.
pub fn format_nanos(ns: f64) -> String {
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {unit}")
}

fn pct(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

struct Row {
    cells: [String; 7],
}

fn row(b: &BenchmarkResult) -> Row {
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_else(|| "—".into());
    let ci = match (b.ci_low, b.ci_high) {
        (Some(lo), Some(hi)) => format!("[{}, {}]", pct(lo), pct(hi)),
        _ => "—".into(),
    };
    Row {
        cells: [
            b.id.clone(),
            opt(b.base_nanos, format_nanos),
            opt(b.head_nanos, format_nanos),
            opt(b.ratio, pct),
            ci,
            opt(b.noise_floor, |n| format!("±{:.1}%", n * 100.0)),
            b.verdict.as_str().to_string(),
        ],
    }
}

const HEADER: [&str; 7] =
    ["benchmark", "base", "head", "change", "interval", "noise floor", "verdict"];

fn summary_line(c: &Comparison) -> String {
    let n = |v| c.count(v);
    format!(
        "{} regressed, {} improved, {} unchanged, {} inconclusive, {} added, {} removed (threshold {:.1}%, {} rounds, family-wise α = {})",
        n(Verdict::Regressed),
        n(Verdict::Improved),
        n(Verdict::Unchanged),
        n(Verdict::Inconclusive),
        n(Verdict::Added),
        n(Verdict::Removed),
        c.threshold * 100.0,
        c.rounds,
        c.alpha
    )
}

fn side_label(s: &super::SideInfo) -> String {
    match &s.commit {
        Some(c) => format!("{} ({})", s.label, &c[..c.len().min(10)]),
        None => s.label.clone(),
    }
}

/// The table printed at the end of a run.
pub fn render_terminal(c: &Comparison) -> String {
    let rows: Vec<Row> = c.benchmarks.iter().map(row).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(&r.cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    writeln!(out, "bench-compare: head = {}, base = {}", side_label(&c.head), side_label(&c.base))
        .unwrap();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if i == 0 {
                write!(s, "{cell}{}", " ".repeat(pad)).unwrap();
            } else {
                write!(s, "  {}{cell}", " ".repeat(pad)).unwrap();
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(&HEADER.map(String::from))).unwrap();
    for r in &rows {
        writeln!(out, "{}", line(&r.cells)).unwrap();
    }
    for p in &c.problems {
        let severity = if p.is_error() { "error" } else { "note" };
        writeln!(out, "{severity}: {}: {}", location(p), first_lines(&p.message, 6)).unwrap();
    }
    for n in &c.notes {
        writeln!(out, "note: {n}").unwrap();
    }
    writeln!(out, "{}", summary_line(c)).unwrap();
    writeln!(out, "took {:.1}s ({:.1}s building)", c.elapsed_secs, c.build_secs).unwrap();
    out
}

/// `head side, fx bench `speed`` or, for a stored baseline, just the side.
fn location(p: &super::Problem) -> String {
    if p.target.is_empty() {
        format!("{} side", p.side)
    } else {
        format!("{} side, {} bench `{}`", p.side, p.package, p.target)
    }
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join("\n  ")
}

/// Markdown for PR comments and `$GITHUB_STEP_SUMMARY`.
pub fn render_markdown(c: &Comparison) -> String {
    let mut out = String::new();
    writeln!(out, "### bench-compare: working tree vs {}\n", side_label(&c.base)).unwrap();
    writeln!(out, "{}\n", summary_line(c)).unwrap();
    writeln!(out, "| {} |", HEADER.join(" | ")).unwrap();
    writeln!(out, "|{}", "---|".repeat(HEADER.len())).unwrap();
    for b in &c.benchmarks {
        let r = row(b);
        let mut cells = r.cells.map(|s| s.replace('|', "\\|"));
        cells[0] = format!("`{}`", cells[0]);
        if b.verdict == Verdict::Regressed {
            cells[6] = format!("**{}**", cells[6]);
        }
        writeln!(out, "| {} |", cells.join(" | ")).unwrap();
    }
    if !c.problems.is_empty() || !c.notes.is_empty() {
        out.push('\n');
    }
    for p in &c.problems {
        let severity = if p.is_error() { "**error**" } else { "note" };
        let msg = p.message.lines().next().unwrap_or("").replace('|', "\\|");
        writeln!(out, "- {severity}: {}: {msg}", location(p)).unwrap();
    }
    for n in &c.notes {
        writeln!(out, "- note: {n}").unwrap();
    }
    writeln!(
        out,
        "\nMethod: {}. Interval: simultaneous {:.0}% (Bonferroni).",
        c.method,
        (1.0 - c.alpha) * 100.0
    )
    .unwrap();
    out
}

pub fn render_json(c: &Comparison) -> String {
    serde_json::to_string_pretty(c).expect("a comparison always serializes")
}
