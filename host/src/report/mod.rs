//! `crpo-host report`: one self-contained HTML file of a run (or several, overlaid): a curve
//! per objective and the weighted total, the training signals, how objectives trade off, the
//! sampled completions (filterable, sortable), and the config. No network: styles, script and
//! charts (SVG) are inline. It reads metrics.jsonl and samples.jsonl as they stand, so it works
//! on a run that is still going.

pub mod svg;
pub mod tradeoffs;

use crate::train::checkpoint;
use crate::train::metrics::{METRICS_FILE, SAMPLES_FILE};
use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use svg::{chart, escape, Series};
use tradeoffs::{conflicts, pearson, within_group, GroupedScores};

/// One run as the report sees it.
pub struct RunData {
    pub label: String,
    pub dir: PathBuf,
    pub metrics: Vec<Value>,
    pub samples: Vec<Value>,
    /// The run's config (from its latest checkpoint), if it has written one.
    pub config: Option<String>,
    /// What it ran on (`run_info.json`), if it says.
    pub environment: Option<Value>,
}

/// Reads a run directory; a half-written last line (a run still going) is left out.
pub fn load_run(dir: &Path) -> anyhow::Result<RunData> {
    let metrics_path = dir.join(METRICS_FILE);
    if !metrics_path.exists() {
        bail!(
            "{} has no {METRICS_FILE}: not a run directory (train or sft writes one)",
            dir.display()
        );
    }
    let read = |path: &Path| -> anyhow::Result<Vec<Value>> {
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(run_records(path, &text))
    };
    let config = checkpoint::latest(dir)?
        .and_then(|(_, checkpoint)| std::fs::read_to_string(checkpoint.join(checkpoint::CONFIG_FILE)).ok());
    let label = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().to_string());
    Ok(RunData {
        label,
        dir: dir.to_path_buf(),
        metrics: read(&metrics_path)?,
        samples: read(&dir.join(SAMPLES_FILE))?,
        config,
        environment: std::fs::read_to_string(dir.join(crate::train::run_info::RUN_INFO_FILE))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok()),
    })
}

/// The records of a run's JSONL file: JSON objects with a whole `step` ≥ 0. A half-written
/// last line (a run still writing, or killed mid-line) is left out quietly; other lines that
/// are not such records (edited, corrupted) are left out with a warning naming the first.
fn run_records(path: &Path, text: &str) -> Vec<Value> {
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    let mut foreign = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(record) if record.get("step").is_some_and(Value::is_u64) => records.push(record),
            Err(_) if index + 1 == lines.len() && !text.ends_with('\n') => {}
            _ => foreign.push(index + 1),
        }
    }
    if let Some(first) = foreign.first() {
        tracing::warn!(
            "{}: {} line(s) are not records a run writes (a JSON object with a whole `step` ≥ 0), first line {first}; left out of the report",
            path.display(),
            foreign.len()
        );
    }
    records
}

const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/// `(step, mean, std)` of each record that has `/mean_pointer` (and `/std_pointer`).
fn points(run: &RunData, mean_pointer: &str, std_pointer: Option<&str>) -> Vec<(f64, f64, Option<f64>)> {
    run.metrics
        .iter()
        .filter_map(|record| {
            let step = record.get("step")?.as_f64()?;
            let mean = record.pointer(mean_pointer)?.as_f64()?;
            let std = std_pointer
                .and_then(|p| record.pointer(p))
                .and_then(Value::as_f64);
            Some((step, mean, std))
        })
        .collect()
}

fn series<'a>(runs: &'a [RunData], mean: &str, std: Option<&str>) -> Vec<Series<'a>> {
    runs.iter()
        .enumerate()
        .map(|(i, run)| Series {
            label: &run.label,
            color: COLORS[i % COLORS.len()],
            points: points(run, mean, std),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Objective names across the runs, in first-seen order.
fn objective_names(runs: &[RunData]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for run in runs {
        for record in &run.metrics {
            if let Some(Value::Object(objectives)) = record.get("objectives") {
                for name in objectives.keys() {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
        }
    }
    names
}

/// What every report's head holds: how an earlier report is told from other files.
const REPORT_MARK: &str = "<title>crpo report";

/// Whether `head` (a file's first bytes) is the start of a report this module wrote.
pub fn is_report(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).contains(REPORT_MARK)
}

/// The whole report as one HTML document.
pub fn render(runs: &[RunData]) -> String {
    let names = objective_names(runs);
    let title = runs
        .iter()
        .map(|r| r.label.as_str())
        .collect::<Vec<_>>()
        .join(" vs ");
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>crpo report: {}</title><style>{STYLE}</style><script>{ERRORS}</script></head><body><h1>crpo report: {}</h1>"#,
        escape(&title),
        escape(&title)
    );
    html.push_str(&summary(runs));
    html.push_str("<h2>Objectives (mean ± std over each step's completions)</h2><div class=\"grid\">");
    html.push_str(&chart(
        "reward (the weighted total)",
        "reward",
        &series(runs, "/reward/mean", Some("/reward/std")),
    ));
    for name in &names {
        html.push_str(&chart(
            name,
            &format!("objective/{name}"),
            &series(
                runs,
                &format!("/objectives/{name}/mean"),
                Some(&format!("/objectives/{name}/std")),
            ),
        ));
    }
    html.push_str("</div>");
    for decoding in ["greedy", "sampled"] {
        let held_out = series(runs, &format!("/eval/{decoding}/accuracy"), None);
        if held_out.is_empty() {
            continue;
        }
        let _ = write!(
            html,
            "<h2>Held-out evaluation, {decoding} (run.eval_steps)</h2><div class=\"grid\">"
        );
        html.push_str(&chart(
            &format!("held-out accuracy, {decoding} (share right)"),
            &format!("eval/{decoding}/accuracy"),
            &held_out,
        ));
        html.push_str(&chart(
            &format!("held-out reward, {decoding}"),
            &format!("eval/{decoding}/reward"),
            &series(runs, &format!("/eval/{decoding}/reward"), None),
        ));
        for name in &names {
            let drawn = series(runs, &format!("/eval/{decoding}/objectives/{name}"), None);
            if !drawn.is_empty() {
                html.push_str(&chart(
                    &format!("held-out {name}, {decoding}"),
                    &format!("eval/{decoding}/{name}"),
                    &drawn,
                ));
            }
        }
        html.push_str("</div>");
    }
    html.push_str("<h2>Training signals</h2><div class=\"grid\">");
    for (title, pointer) in [
        ("KL to the reference (per token)", "/kl"),
        ("entropy (per token)", "/entropy"),
        ("clip fraction, low", "/clip_ratio/low"),
        ("clip fraction, high", "/clip_ratio/high"),
        ("completion length (mean tokens)", "/completion_length/mean"),
        (
            "share of completions cut at the budget",
            "/completion_length/truncated_fraction",
        ),
        (
            "groups whose rewards all tie (frac_reward_zero_std)",
            "/frac_reward_zero_std",
        ),
        ("learning rate", "/learning_rate"),
        ("gradient norm (before clipping)", "/grad_norm"),
        ("loss", "/loss"),
    ] {
        let drawn = series(runs, pointer, None);
        if !drawn.is_empty() {
            html.push_str(&chart(title, &pointer[1..], &drawn));
        }
    }
    html.push_str("</div>");
    html.push_str(&tradeoff_section(runs, &names));
    html.push_str(&samples_section(runs, &names));
    html.push_str(&config_section(runs));
    let _ = write!(html, "<script>{SCRIPT}</script></body></html>");
    html
}

fn summary(runs: &[RunData]) -> String {
    let mut html = String::from("<table class=\"summary\"><tr><th>run</th><th>directory</th><th>steps</th><th>last step's reward</th></tr>");
    for run in runs {
        let last = run.metrics.last();
        let _ = write!(
            html,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(&run.label),
            escape(&run.dir.display().to_string()),
            last.and_then(|r| r.get("step"))
                .map_or("0".into(), Value::to_string),
            last.and_then(|r| r.pointer("/reward/mean"))
                .and_then(Value::as_f64)
                .map_or("-".into(), |v| format!("{v:.3}")),
        );
    }
    let _ = write!(
        html,
        "</table><p class=\"meta\">crpo-host {} · written {} (a run still going shows its steps so far; write the report again for more)</p>",
        env!("CARGO_PKG_VERSION"),
        chrono_now()
    );
    html
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs % 86_400 / 3600,
        secs % 3600 / 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn tradeoff_section(runs: &[RunData], names: &[String]) -> String {
    let mut html = String::from("<h2>Trade-offs</h2><p>Does one objective rise at another's expense? <b>Steps</b>: correlation of the objectives' per-step means over the run. <b>Within groups</b>: correlation of the per-completion scores in the sampled completions, each minus its group's mean (what the advantages compare). A pair flagged below rose and fell by more than 0.05 between the first and the last tenth of the run.</p>");
    for run in runs {
        let step_series: BTreeMap<String, Vec<f64>> = names
            .iter()
            .map(|name| {
                let values = points(run, &format!("/objectives/{name}/mean"), None)
                    .into_iter()
                    .map(|p| p.1)
                    .collect();
                (name.clone(), values)
            })
            .collect();
        let grouped: Vec<GroupedScores> = run
            .samples
            .iter()
            .filter_map(|sample| {
                let scores = sample.get("scores")?.as_object()?;
                Some(GroupedScores {
                    group: (sample.get("step")?.as_u64()?, example_id(sample)),
                    scores: scores
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                        .collect(),
                })
            })
            .collect();
        let _ = write!(html, "<h3>{}</h3>", escape(&run.label));
        let found = conflicts(&step_series, 0.05);
        if found.is_empty() {
            html.push_str("<p class=\"ok\">No objective fell while another rose.</p>");
        }
        for conflict in &found {
            let _ = write!(
                html,
                "<p class=\"flag\">⚠ <b>{}</b> fell {:.2} → {:.2} while <b>{}</b> rose {:.2} → {:.2}: the reward may be won at {}'s expense.</p>",
                escape(&conflict.falling),
                conflict.fell.0,
                conflict.fell.1,
                escape(&conflict.rising),
                conflict.rose.0,
                conflict.rose.1,
                escape(&conflict.falling)
            );
        }
        html.push_str("<table class=\"corr\"><tr><th>objective</th><th>objective</th><th>steps</th><th>within groups</th></tr>");
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                let steps = pearson(&step_series[a], &step_series[b]);
                let within = within_group(&grouped, a, b);
                let cell = |v: Option<f64>| {
                    v.map_or("<td class=\"na\">–</td>".to_string(), |v| {
                        format!("<td class=\"{}\">{v:+.2}</td>", if v < -0.3 { "neg" } else { "" })
                    })
                };
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td>{}{}</tr>",
                    escape(a),
                    escape(b),
                    cell(steps),
                    cell(within)
                );
            }
        }
        html.push_str("</table>");
    }
    html
}

fn samples_section(runs: &[RunData], names: &[String]) -> String {
    let mut html = String::from("<h2>Sampled completions</h2><p>Filter by step: <input id=\"step-filter\" placeholder=\"e.g. 40\" size=\"8\"> · click a column to sort.</p><table id=\"samples\" class=\"samples\"><thead><tr>");
    let mut columns = vec!["run", "step", "example", "gold", "answer", "reward", "advantage"];
    columns.extend(names.iter().map(String::as_str));
    columns.push("completion");
    for (i, column) in columns.iter().enumerate() {
        let _ = write!(html, "<th data-column=\"{i}\">{}</th>", escape(column));
    }
    html.push_str("</tr></thead><tbody>");
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    };
    let number = |v: Option<&Value>| {
        v.and_then(Value::as_f64)
            .map_or("-".into(), |v| format!("{v:.3}"))
    };
    for run in runs {
        for sample in &run.samples {
            let _ = write!(
                html,
                "<tr data-step=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                text(sample.get("step")),
                escape(&run.label),
                text(sample.get("step")),
                escape(&example_id(sample)),
                escape(&text(sample.get("gold"))),
                escape(&text(sample.get("answer"))),
                number(sample.get("reward")),
                number(sample.get("advantage")),
            );
            for name in names {
                let _ = write!(
                    html,
                    "<td>{}</td>",
                    number(sample.pointer(&format!("/scores/{name}")))
                );
            }
            let completion = text(sample.get("completion"));
            let preview: String = completion.chars().take(80).collect();
            let _ = write!(
                html,
                "<td><details><summary>{}</summary><pre>{}</pre></details></td></tr>",
                escape(&preview),
                escape(&completion)
            );
        }
    }
    html.push_str("</tbody></table>");
    html
}

/// A sample's example id (samples.jsonl holds the whole example; earlier runs only its id).
fn example_id(sample: &Value) -> String {
    match sample.get("example") {
        Some(Value::Object(example)) => example
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string(),
        Some(Value::String(id)) => id.clone(),
        _ => "-".to_string(),
    }
}

fn config_section(runs: &[RunData]) -> String {
    let mut html = String::from("<h2>Config and environment</h2>");
    for run in runs {
        let _ = write!(
            html,
            "<details><summary>{} — config</summary><pre>{}</pre></details>",
            escape(&run.label),
            escape(
                run.config
                    .as_deref()
                    .unwrap_or("(no checkpoint yet: the config is written with the first one)")
            )
        );
        if let Some(environment) = &run.environment {
            let _ = write!(
                html,
                "<details><summary>{} — environment</summary><pre>{}</pre></details>",
                escape(&run.label),
                escape(&serde_json::to_string_pretty(environment).unwrap_or_default())
            );
        }
    }
    let objectives: BTreeSet<String> = objective_names(runs).into_iter().collect();
    let _ = write!(
        html,
        "<p class=\"meta\">objectives: {} · {} on {}</p>",
        escape(&objectives.into_iter().collect::<Vec<_>>().join(", ")),
        escape(&format!("crpo-host {}", env!("CARGO_PKG_VERSION"))),
        escape(std::env::consts::OS)
    );
    html
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:15px}.grid{display:flex;flex-wrap:wrap;gap:12px}.chart{margin:0;border:1px solid #eee;padding:6px}.chart figcaption{font-weight:600;font-size:13px}.chart svg{display:block}.axes line{stroke:#999}.axes text{font-size:10px;fill:#555}.line{fill:none;stroke-width:1.6}.band{opacity:.15}.legend span{margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;font-size:12px;text-align:left;vertical-align:top}th{background:#f6f6f6;cursor:pointer}.neg{color:#b00;font-weight:600}.na{color:#aaa}.flag{background:#fff3cd;padding:6px}.ok{color:#276}.meta{color:#777;font-size:12px}pre{white-space:pre-wrap;max-width:720px;margin:4px 0}";

/// Counts script errors on the page (`data-errors` on <html>), so a headless browser can
/// check that the report's script ran clean.
const ERRORS: &str = "window.addEventListener('error',function(){var h=document.documentElement;h.setAttribute('data-errors',String((+h.getAttribute('data-errors')||0)+1));});";

const SCRIPT: &str = "(function(){var t=document.getElementById('samples');if(!t)return;var b=t.tBodies[0];var f=document.getElementById('step-filter');f.addEventListener('input',function(){var v=f.value.trim();for(var i=0;i<b.rows.length;i++){var r=b.rows[i];r.style.display=(!v||r.getAttribute('data-step')===v)?'':'none';}});var h=t.tHead.rows[0].cells;for(var c=0;c<h.length;c++){(function(c){var asc=true;h[c].addEventListener('click',function(){var rows=Array.prototype.slice.call(b.rows);rows.sort(function(x,y){var p=x.cells[c].textContent,q=y.cells[c].textContent;var a=parseFloat(p),d=parseFloat(q);var r=(!isNaN(a)&&!isNaN(d))?a-d:p.localeCompare(q);return asc?r:-r;});asc=!asc;rows.forEach(function(r){b.appendChild(r);});});})(c);}document.body.setAttribute('data-ready','1');})();";

/// Writes the report of `runs` to `out` (atomically) and returns it.
pub fn write_report(runs: &[PathBuf], out: &Path) -> anyhow::Result<String> {
    let data = runs
        .iter()
        .map(|dir| load_run(dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let html = render(&data);
    crate::atomic_file::write(out, &html)?;
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_with_a_whole_step_are_read() {
        let text =
            "{\"step\": 1}\nnot json\n{\"step\": \"x\"}\n{\"step\": -2}\n{\"step\": 2}\n{\"step\": 3, \"ha";
        let steps: Vec<u64> = run_records(Path::new("m.jsonl"), text)
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2]);
    }

    #[test]
    fn a_run_still_going_is_read_up_to_its_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let record = |step: u32| {
            format!("{{\"step\":{step},\"reward\":{{\"mean\":0.5,\"std\":0.1}},\"objectives\":{{\"accuracy\":{{\"mean\":0.5,\"std\":0.1,\"weight\":1.0}}}}}}\n")
        };
        let text = format!("{}{}{{\"step\":3,\"rew", record(1), record(2));
        std::fs::write(dir.path().join(METRICS_FILE), text).unwrap();
        let run = load_run(dir.path()).unwrap();
        assert_eq!(run.metrics.len(), 2);
        assert!(run.samples.is_empty() && run.config.is_none());
        let html = render(&[run]);
        assert!(html.contains("data-series=\"objective/accuracy\""));
        assert!(html.contains("data-points=\"2\""));
        let err = load_run(&dir.path().join("nothing")).err().unwrap().to_string();
        assert!(err.contains("not a run directory"), "{err}");
    }

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
