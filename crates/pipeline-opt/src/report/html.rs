//! `report.html`: one self-contained page (inline SVG and CSS, nothing fetched) with a
//! Gantt chart of stages and compile units, the critical path highlighted, CPU
//! utilisation over time (the run's stages as an area, the machine's sampled use as a
//! line), target lines, hover details in `<title>` elements, and tables of test counts
//! and the slowest tests.

use std::fmt::Write as _;

use crate::record::{CrateTiming, RunRecord, ShardResult, StageMetrics, StageStatus};
use crate::report::text::{on_critical_path, outcome_text, status_text};
use crate::report::{limit, percent, secs};

const WIDTH: f64 = 1200.0;
const LABEL: f64 = 200.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 22.0;
const BAR: f64 = 16.0;
const CPU_HEIGHT: f64 = 100.0;

fn stage_on_critical_path(record: &RunRecord, s: &StageMetrics) -> bool {
    record.critical_path.iter().any(|c| c.kind == "stage" && c.name == s.id)
}

pub fn render(record: &RunRecord) -> String {
    let end = record
        .stages
        .iter()
        .map(|s| s.start + s.wall)
        .chain(record.crates.iter().map(|c| c.end))
        .chain([record.total, record.targets.required])
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        .max(1.0);
    // Headroom, so the label of a target line at the very end stays on the page.
    let scale = Scale { end: end * 1.08 };

    let lanes = unit_lanes(record);
    let unit_rows: usize = lanes.iter().map(|(_, l)| l.len()).sum();
    let stages_top = 40.0;
    let units_top = stages_top + ROW * record.stages.len() as f64 + 40.0;
    let cpu_top = units_top + ROW * unit_rows as f64 + lanes.len() as f64 * 6.0 + 40.0;
    let height = cpu_top + CPU_HEIGHT + 40.0;

    let mut svg = String::new();
    let s = &mut svg;
    writeln!(
        s,
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}">"#
    )
    .unwrap();
    axis(s, &scale, height);

    section(s, "Stages", stages_top - 12.0);
    for (i, st) in record.stages.iter().enumerate() {
        let y = stages_top + ROW * i as f64;
        stage_bar(s, record, st, y, &scale);
    }

    section(s, "Compile units", units_top - 12.0);
    let mut y = units_top;
    for (stage, stage_lanes) in &lanes {
        writeln!(s, r#"<text class="label" x="4" y="{:.1}">{}</text>"#, y + 12.0, esc(stage))
            .unwrap();
        for lane in stage_lanes {
            for c in lane {
                unit_bar(s, record, c, y, &scale);
            }
            y += ROW;
        }
        y += 6.0;
    }
    if lanes.is_empty() {
        writeln!(
            s,
            r#"<text class="note" x="{LABEL}" y="{:.1}">no compile units recorded</text>"#,
            units_top + 12.0
        )
        .unwrap();
    }

    section(s, "CPU utilisation", cpu_top - 12.0);
    cpu_chart(s, record, cpu_top, &scale);
    target_lines(s, record, &scale, height);
    s.push_str("</svg>\n");

    let v = &record.verdict;
    let title = format!("pipeline-opt run {}", record.run_id);
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #222; }}
svg text.section {{ font-weight: bold; font-size: 12px; }}
svg text.note {{ fill: #777; }}
.grid {{ stroke: #eee; }}
.bar {{ stroke: #fff; stroke-width: 0.5; }}
.bar:hover {{ opacity: 0.75; }}
.succeeded {{ fill: #4c9a2a; }} .failed {{ fill: #c0392b; }} .timed-out {{ fill: #e67e22; }}
.cancelled {{ fill: #999; }} .skipped {{ fill: #ddd; }} .cached {{ fill: #8ab4f8; }}
.unit {{ fill: #6c8ebf; }} .unit.test {{ fill: #9673a6; }} .unit.build-script {{ fill: #b5a642; }}
.bar.critical {{ stroke: #111; stroke-width: 2.5; }}
.target {{ stroke: #d62728; stroke-dasharray: 6 3; }} .target.stretch {{ stroke: #ff7f0e; }}
.stage-target {{ stroke: #000; stroke-width: 2; }}
.cpu {{ fill: #6c8ebf; fill-opacity: 0.4; stroke: #6c8ebf; }}
.cpu-sampled {{ fill: none; stroke: #e0119d; stroke-width: 2; }}
.warning {{ color: #8a4b00; background: #fff4e0; border-left: 4px solid #e67e22; padding: 4px 8px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 8px; text-align: left; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{command} in <code>{root}</code>, started {started}: <strong>{outcome}</strong> in {total}.
Required target {required}: {required_verdict}; stretch target {stretch}: {stretch_verdict}.
{naive}{bound}Critical path outlined in black; hover a bar for details.</p>
{svg}{shards}{compile_cache}{tests}</body>
</html>
"#,
        tests = tests_html(record),
        shards = shards_html(record),
        compile_cache = compile_cache_html(record),
        command = esc(&record.command),
        root = esc(record.workspace_root.as_str()),
        started = esc(&record.started_at),
        outcome = outcome_text(record.outcome),
        total = secs(record.total),
        required = secs(v.required),
        required_verdict = if v.required_met { "met" } else { "missed" },
        stretch = secs(v.stretch),
        stretch_verdict = if v.stretch_met { "met" } else { "missed" },
        bound = record
            .lower_bound
            .as_ref()
            .filter(|b| !b.bound().is_zero())
            .map(|b| format!(
                "Lower bound {} (chain of stages {}, CPU work over {} cores {}): the run took {:.2}× it. ",
                secs(b.bound()),
                secs(b.chain),
                record.cores,
                secs(b.cpu),
                record.total.as_secs_f64() / b.bound().as_secs_f64()
            ))
            .unwrap_or_default(),
        naive = record
            .naive
            .as_ref()
            .map(|n| format!(
                "The naive sequence took {}; ours/naive = {:.2}. ",
                secs(n.naive_total),
                n.ratio
            ))
            .unwrap_or_default(),
    )
}

/// The shard a merged run's stage `shard-K` ran, if the record is of a merged run.
fn shard_of<'a>(record: &'a RunRecord, st: &StageMetrics) -> Option<&'a ShardResult> {
    let index: usize = st.id.strip_prefix("shard-")?.parse().ok()?;
    record.shards.as_ref()?.shards.iter().find(|s| s.index == index)
}

/// A merged scale-out run's shards, as the markdown report has them: predicted against
/// measured, the balance and the prediction error. Their stages are on the timeline.
fn shards_html(record: &RunRecord) -> String {
    let Some(sh) = &record.shards else { return String::new() };
    let mut s = format!(
        "<h2>Shards</h2>\n<p>Split by {}; each shard's stage is on the timeline, after the build.</p>\n\
         <table id=\"shards\">\n<tr><th>shard</th><th>run</th><th>tests</th><th>predicted</th>\
         <th>test time</th><th>wall</th></tr>\n",
        esc(&sh.strategy)
    );
    for r in &sh.shards {
        writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.index,
            esc(&r.run_id),
            r.tests,
            r.predicted.map(secs).unwrap_or_else(|| "-".into()),
            secs(r.test_time),
            secs(r.wall)
        )
        .unwrap();
    }
    writeln!(s, "</table>\n<p>{}</p>", crate::report::shards_balance_sentence(sh)).unwrap();
    s
}

/// `--compile-cache`: what sccache did, why requests were not cached, and the
/// warnings, as the markdown report (and so the step summary) has them.
fn compile_cache_html(record: &RunRecord) -> String {
    let Some(c) = &record.compile_cache else { return String::new() };
    let mut s = format!(
        "<h2>Compile cache</h2>\n<p id=\"compile-cache\">{}</p>\n",
        esc(&crate::report::text::compile_cache_sentence(c))
    );
    if !c.not_cached.is_empty() {
        s.push_str(
            "<table id=\"not-cached\">\n<tr><th>not cached because</th><th>requests</th></tr>\n",
        );
        for (why, n) in &c.not_cached {
            writeln!(s, "<tr><td>{}</td><td>{n}</td></tr>", esc(why)).unwrap();
        }
        s.push_str("</table>\n");
    }
    for w in crate::report::text::compile_cache_warnings(c) {
        writeln!(s, "<p class=\"warning\"><strong>Warning:</strong> {}.</p>", esc(&w)).unwrap();
    }
    s
}

/// Test counts per stage and the slowest tests, as the markdown report has them.
fn tests_html(record: &RunRecord) -> String {
    let mut s = String::new();
    if record.test_counts.is_empty() && record.tests.is_empty() {
        return s;
    }
    s.push_str("<h2>Tests</h2>\n");
    if !record.test_counts.is_empty() {
        s.push_str(
            "<table id=\"test-counts\">\n<tr><th>stage</th><th>passed</th><th>failed</th>\
             <th>skipped</th></tr>\n",
        );
        for c in &record.test_counts {
            writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.stage),
                c.passed,
                c.failed,
                c.skipped
            )
            .unwrap();
        }
        s.push_str("</table>\n");
    }
    let slowest = crate::report::slowest_tests(record, crate::report::SLOWEST_TESTS);
    // A test with a flame graph links it (`flamegraph` drew it into the reports' dir).
    let flame = |binary: &str, test: &str| {
        let named = if binary.is_empty() { test.to_string() } else { format!("{binary} {test}") };
        match record.flamegraphs.iter().find(|f| f.test == named || f.test == test) {
            Some(f) => format!("{} <a href=\"{}\">flame graph</a>", esc(test), esc(&f.svg)),
            None => esc(test).to_string(),
        }
    };
    if !slowest.is_empty() {
        s.push_str(
            "<h3>Slowest tests</h3>\n<table id=\"slowest-tests\">\n<tr><th>binary</th>\
             <th>test</th><th>stage</th><th>time</th><th>share of stage</th></tr>\n",
        );
        for t in &slowest {
            writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(t.binary),
                flame(t.binary, t.test),
                esc(t.stage),
                secs(t.duration),
                percent(t.share(), 1.0)
            )
            .unwrap();
        }
        s.push_str("</table>\n");
    }
    if !record.flamegraphs.is_empty() {
        s.push_str("<h3>Flame graphs</h3>\n<ul id=\"flamegraphs\">\n");
        for f in &record.flamegraphs {
            writeln!(
                s,
                "<li><a href=\"{}\">{}</a> ({} of CPU)</li>",
                esc(&f.svg),
                esc(&f.test),
                secs(f.cpu)
            )
            .unwrap();
        }
        s.push_str("</ul>\n");
    }
    s
}

struct Scale {
    end: f64,
}

impl Scale {
    fn x(&self, t: f64) -> f64 {
        LABEL + (WIDTH - LABEL - RIGHT) * t / self.end
    }
    fn w(&self, d: f64) -> f64 {
        ((WIDTH - LABEL - RIGHT) * d / self.end).max(2.0)
    }
}

fn section(s: &mut String, name: &str, y: f64) {
    writeln!(s, r#"<text class="section" x="4" y="{y:.1}">{name}</text>"#).unwrap();
}

/// Vertical grid lines with second labels at a step that gives about ten of them.
fn axis(s: &mut String, scale: &Scale, height: f64) {
    let step = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|step| scale.end / step <= 12.0)
        .unwrap_or(1200.0);
    let mut t = 0.0;
    while t <= scale.end {
        let x = scale.x(t);
        writeln!(s, r#"<line class="grid" x1="{x:.1}" y1="14" x2="{x:.1}" y2="{height:.0}"/>"#)
            .unwrap();
        writeln!(s, r#"<text x="{x:.1}" y="12" text-anchor="middle">{t:.0} s</text>"#).unwrap();
        t += step;
    }
}

fn status_class(status: &StageStatus) -> &'static str {
    status.name()
}

fn stage_bar(s: &mut String, record: &RunRecord, st: &StageMetrics, y: f64, scale: &Scale) {
    let critical = if stage_on_critical_path(record, st) { " critical" } else { "" };
    let start = st.start.as_secs_f64();
    let wall = st.wall.as_secs_f64();
    let cpu = (st.cpu_user + st.cpu_system).as_secs_f64();
    let mut tip = format!(
        "{}: {}\n{}\nstart {}, wall {}, CPU {} ({} of {} cores)",
        st.id,
        status_text(&st.status),
        st.command,
        secs(st.start),
        secs(st.wall),
        secs(st.cpu_user + st.cpu_system),
        percent(cpu, wall * record.cores.max(1) as f64),
        record.cores
    );
    if let Some(target) = record.targets.stages.get(&st.id) {
        write!(tip, "\ntarget {}", limit(*target)).unwrap();
    }
    if let Some(shard) = shard_of(record, st) {
        let predicted = shard.predicted.map(secs).unwrap_or_else(|| "-".into());
        write!(
            tip,
            "\nshard {}: {} tests, predicted {predicted}, test time {}",
            shard.index,
            shard.tests,
            secs(shard.test_time)
        )
        .unwrap();
    }
    if !critical.is_empty() {
        tip.push_str("\non the critical path");
    }
    writeln!(s, r#"<text class="label" x="4" y="{:.1}">{}</text>"#, y + 12.0, esc(&st.id)).unwrap();
    writeln!(
        s,
        r#"<rect class="bar stage {}{critical}" data-stage="{}" x="{:.1}" y="{y:.1}" width="{:.1}" height="{BAR}"><title>{}</title></rect>"#,
        status_class(&st.status),
        esc(&st.id),
        scale.x(start),
        scale.w(wall),
        esc(&tip)
    )
    .unwrap();
    if let Some(target) = record.targets.stages.get(&st.id) {
        let x = scale.x(start + target.as_secs_f64());
        writeln!(
            s,
            r#"<line class="stage-target" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}"><title>target of {}: {}</title></line>"#,
            y - 2.0,
            y + BAR + 2.0,
            esc(&st.id),
            limit(*target)
        )
        .unwrap();
    }
}

fn unit_bar(s: &mut String, record: &RunRecord, c: &CrateTiming, y: f64, scale: &Scale) {
    let critical = if on_critical_path(record, c) { " critical" } else { "" };
    let d = c.end.saturating_sub(c.start);
    let tip = format!(
        "{} ({} `{}`) in stage {}\n{} → {} ({}){}",
        c.package,
        c.kind,
        c.target,
        c.stage,
        secs(c.start),
        secs(c.end),
        secs(d),
        if critical.is_empty() { "" } else { "\non the critical path" }
    );
    let x = scale.x(c.start.as_secs_f64());
    let w = scale.w(d.as_secs_f64());
    writeln!(
        s,
        r#"<rect class="bar unit {}{critical}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{BAR}"><title>{}</title></rect>"#,
        esc(&c.kind),
        esc(&tip)
    )
    .unwrap();
    // A name only where it fits; the title has it anyway.
    if w > 7.0 * c.package.len() as f64 {
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" pointer-events="none" style="fill:#fff">{}</text>"#,
            x + 3.0,
            y + 12.0,
            esc(&c.package)
        )
        .unwrap();
    }
}

type Lanes<'a> = Vec<(String, Vec<Vec<&'a CrateTiming>>)>;

/// Compile units per stage, packed into as few rows as overlap allows (first fit by
/// start time), in the order the stages ran.
fn unit_lanes(record: &RunRecord) -> Lanes<'_> {
    let mut order: Vec<String> = record.stages.iter().map(|s| s.id.clone()).collect();
    for c in &record.crates {
        if !order.contains(&c.stage) {
            order.push(c.stage.clone());
        }
    }
    let mut out = Vec::new();
    for stage in order {
        let mut units: Vec<_> = record.crates.iter().filter(|c| c.stage == stage).collect();
        if units.is_empty() {
            continue;
        }
        units.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.package.cmp(&b.package)));
        let mut lanes: Vec<Vec<&CrateTiming>> = Vec::new();
        for u in units {
            match lanes.iter_mut().find(|l| l.last().is_some_and(|last| last.end <= u.start)) {
                Some(lane) => lane.push(u),
                None => lanes.push(vec![u]),
            }
        }
        out.push((stage, lanes));
    }
    out
}

/// Share of all cores busy over time, from each stage's CPU time spread evenly over its
/// wall time (the run record has no finer samples), summed over overlapping stages.
pub fn cpu_utilisation(record: &RunRecord) -> Vec<(f64, f64)> {
    let cores = record.cores.max(1) as f64;
    let running: Vec<(f64, f64, f64)> = record
        .stages
        .iter()
        .filter(|s| !s.wall.is_zero())
        .map(|s| {
            let start = s.start.as_secs_f64();
            let wall = s.wall.as_secs_f64();
            (start, start + wall, (s.cpu_user + s.cpu_system).as_secs_f64() / wall / cores)
        })
        .collect();
    let mut times: Vec<f64> = running.iter().flat_map(|r| [r.0, r.1]).chain([0.0]).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    times
        .iter()
        .map(|&t| {
            let load: f64 = running.iter().filter(|r| r.0 <= t && t < r.1).map(|r| r.2).sum();
            (t, load.min(1.0))
        })
        .collect()
}

fn cpu_chart(s: &mut String, record: &RunRecord, top: f64, scale: &Scale) {
    let bottom = top + CPU_HEIGHT;
    let points = cpu_utilisation(record);
    let mut d = format!("M{:.1},{bottom:.1}", scale.x(0.0));
    let mut last = 0.0;
    for (t, u) in &points {
        let x = scale.x(*t);
        write!(
            d,
            " L{x:.1},{:.1} L{x:.1},{:.1}",
            bottom - last * CPU_HEIGHT,
            bottom - u * CPU_HEIGHT
        )
        .unwrap();
        last = *u;
    }
    let end_x = scale.x(points.last().map_or(0.0, |p| p.0));
    write!(d, " L{end_x:.1},{bottom:.1} Z").unwrap();
    writeln!(
        s,
        r#"<rect x="{LABEL}" y="{top:.1}" width="{:.1}" height="{CPU_HEIGHT}" fill="none" stroke="rgb(204,204,204)"/>"#,
        WIDTH - LABEL - RIGHT
    )
    .unwrap();
    writeln!(s, r#"<path class="cpu" d="{d}"><title>share of {} cores busy, from each stage's CPU time over its wall time</title></path>"#, record.cores).unwrap();
    // The measured line over the estimate: where it runs above the area, something
    // besides the run's stages kept the machine busy.
    if let Some(first) = record.cpu_samples.first() {
        let mut points = format!(
            "{:.1},{:.1}",
            scale.x(first.at.saturating_sub(crate::cpu_sampler::CPU_SAMPLE_INTERVAL).as_secs_f64()),
            bottom - first.busy * CPU_HEIGHT
        );
        for c in &record.cpu_samples {
            write!(
                points,
                " {:.1},{:.1}",
                scale.x(c.at.as_secs_f64()),
                bottom - c.busy * CPU_HEIGHT
            )
            .unwrap();
        }
        let mean = record.cpu_samples.iter().map(|c| c.busy).sum::<f64>()
            / record.cpu_samples.len() as f64;
        writeln!(
            s,
            r#"<polyline class="cpu-sampled" data-samples="{}" points="{points}"><title>the machine's CPU use, sampled every {} ms from /proc/stat (all processes): mean {}</title></polyline>"#,
            record.cpu_samples.len(),
            crate::cpu_sampler::CPU_SAMPLE_INTERVAL.as_millis(),
            percent(mean, 1.0)
        )
        .unwrap();
    } else {
        writeln!(
            s,
            r#"<text class="note" x="{:.1}" y="{:.1}">no CPU samples in this record (only the estimate from stage CPU times)</text>"#,
            LABEL + 4.0,
            top + 12.0
        )
        .unwrap();
    }
    writeln!(
        s,
        r#"<text class="note" x="{LABEL}" y="{:.1}">area: the run's stages (CPU time over wall time); line: the whole machine, sampled</text>"#,
        bottom + 14.0
    )
    .unwrap();
    writeln!(s, r#"<text x="4" y="{:.1}">100% of {} cores</text>"#, top + 10.0, record.cores)
        .unwrap();
    writeln!(s, r#"<text x="4" y="{bottom:.1}">0%</text>"#).unwrap();
}

fn target_lines(s: &mut String, record: &RunRecord, scale: &Scale, height: f64) {
    let v = &record.verdict;
    for (class, name, limit) in
        [("required", "required", v.required), ("stretch", "stretch", v.stretch)]
    {
        let x = scale.x(limit.as_secs_f64());
        writeln!(
            s,
            r#"<line class="target {class}" x1="{x:.1}" y1="20" x2="{x:.1}" y2="{height:.0}"><title>{name} target: {}</title></line>"#,
            secs(limit)
        )
        .unwrap();
        writeln!(s, r#"<text x="{:.1}" y="28">{name} {}</text>"#, x + 3.0, secs(limit)).unwrap();
    }
}

/// Escapes text for XML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // XML 1.0 has no escape for most control characters (ANSI colour codes in
            // test output): drop them.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}
