//! `crpo-host report`: one self-contained HTML file of a run (or several, overlaid): a curve
//! per objective and the weighted total, the training signals, how objectives trade off, the
//! sampled completions (filterable, sortable), and the config. No network: styles, script and
//! charts (SVG) are inline. It reads metrics.jsonl and samples.jsonl as they stand, so it works
//! on a run that is still going.

mod runs;
pub mod svg;
pub mod tradeoffs;

pub use runs::{load_run, load_runs, RunData};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use svg::{chart, escape, Series};
use tradeoffs::{conflicts, pearson_by_step, within_group, GroupedScores};

/// A JSON pointer to `segments`, each escaped per RFC 6901 (`~` as `~0`, `/` as `~1`):
/// objective names are the config's strings, and `acc/y` must reach the key `acc/y`, not
/// the key `y` inside `acc`.
fn json_pointer(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
        .collect()
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
    let left_out: Vec<&String> = runs.iter().flat_map(|run| &run.left_out).collect();
    if !left_out.is_empty() {
        html.push_str("<div class=\"note\"><b>Left out of this report:</b><ul>");
        for line in left_out {
            let _ = write!(html, "<li>{}</li>", escape(line));
        }
        html.push_str("</ul></div>");
    }
    html.push_str("<h2>Objectives (mean ± std over each step's completions)</h2><div class=\"grid\">");
    html.push_str(&chart(
        "reward (the weighted total)",
        "reward",
        &series(runs, "/reward/mean", Some("/reward/std")),
        runs.len() > 1,
    ));
    for name in &names {
        html.push_str(&chart(
            &format!("{name} obj (mean ± std)"),
            &objective_series_id(name),
            &series(
                runs,
                &json_pointer(&["objectives", name, "mean"]),
                Some(&json_pointer(&["objectives", name, "std"])),
            ),
            runs.len() > 1,
        ));
    }
    html.push_str("</div>");
    for decoding in ["greedy", "sampled"] {
        html.push_str(&held_out_section(runs, &names, decoding));
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
            html.push_str(&chart(title, &pointer[1..], &drawn, runs.len() > 1));
        }
    }
    html.push_str("</div>");
    html.push_str(&tradeoff_section(runs, &names));
    html.push_str(&samples_section(runs, &names));
    html.push_str(&config_section(runs));
    let _ = write!(html, "<script>{SCRIPT}</script></body></html>");
    html
}

/// The `data-series` of an objective's training curve. The ids of a page never meet: only
/// these start `objective/`, and held-out objectives sit under `eval/DECODING/objectives/`,
/// apart from the held-out `accuracy` (share right) and `reward` beside them.
fn objective_series_id(name: &str) -> String {
    format!("objective/{name}")
}

/// The `data-series` of an objective's held-out mean under `decoding`.
fn held_out_objective_series_id(decoding: &str, name: &str) -> String {
    format!("eval/{decoding}/objectives/{name}")
}

/// The charts of the held-out evaluations under `decoding` (none if the runs have none),
/// titled as the terminal's tables head their columns: `acc (share right)` is the share of
/// questions answered right, `NAME obj (mean)` an objective's mean over completions.
fn held_out_section(runs: &[RunData], names: &[String], decoding: &str) -> String {
    let held_out = series(runs, &json_pointer(&["eval", decoding, "accuracy"]), None);
    if held_out.is_empty() {
        return String::new();
    }
    let mut html = format!("<h2>Held-out evaluation, {decoding} (run.eval_steps)</h2><div class=\"grid\">");
    html.push_str(&chart(
        &format!("held-out acc (share right), {decoding}"),
        &format!("eval/{decoding}/accuracy"),
        &held_out,
        runs.len() > 1,
    ));
    html.push_str(&chart(
        &format!("held-out reward (mean), {decoding}"),
        &format!("eval/{decoding}/reward"),
        &series(runs, &json_pointer(&["eval", decoding, "reward"]), None),
        runs.len() > 1,
    ));
    for name in names {
        let drawn = series(runs, &json_pointer(&["eval", decoding, "objectives", name]), None);
        if !drawn.is_empty() {
            html.push_str(&chart(
                &format!("held-out {name} obj (mean), {decoding}"),
                &held_out_objective_series_id(decoding, name),
                &drawn,
                runs.len() > 1,
            ));
        }
    }
    html.push_str("</div>");
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
        let step_means: BTreeMap<&String, BTreeMap<u64, f64>> = names
            .iter()
            .map(|name| (name, objective_step_means(run, name)))
            .collect();
        let trends: BTreeMap<String, Vec<f64>> = step_means
            .iter()
            .map(|(name, means)| (name.to_string(), means.values().copied().collect()))
            .collect();
        let grouped = grouped_scores(run);
        let _ = write!(html, "<h3>{}</h3>", escape(&run.label));
        // A pair whose rising objective the reward does not weigh is no reward won at the
        // other's expense (in GRPO both may drift beside accuracy).
        let found: Vec<_> = conflicts(&trends, 0.05)
            .into_iter()
            .filter(|conflict| objective_weight(run, &conflict.rising) != Some(0.0))
            .collect();
        let steps = trends.values().map(Vec::len).max().unwrap_or(0);
        if steps < 2 {
            // One step has no trend: "none fell" would claim what cannot be seen yet.
            let _ = write!(html, "<p>Not enough steps to compare yet ({steps} recorded).</p>");
        } else if found.is_empty() {
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
        // Only this run's objectives: runs overlaid with --compare may have others.
        let own: Vec<&String> = names.iter().filter(|name| !step_means[name].is_empty()).collect();
        for (i, a) in own.iter().enumerate() {
            for b in &own[i + 1..] {
                let steps = pearson_by_step(&step_means[*a], &step_means[*b]);
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

/// The weight the run's reward gives objective `name`, where its metrics say.
fn objective_weight(run: &RunData, name: &str) -> Option<f64> {
    let pointer = json_pointer(&["objectives", name, "weight"]);
    run.metrics
        .iter()
        .find_map(|record| record.pointer(&pointer)?.as_f64())
}

/// An objective's mean at each step of `run` that logged it (the latest record of a step).
fn objective_step_means(run: &RunData, name: &str) -> BTreeMap<u64, f64> {
    let pointer = json_pointer(&["objectives", name, "mean"]);
    run.metrics
        .iter()
        .filter_map(|record| {
            let step = record.get("step")?.as_u64()?;
            Some((step, record.pointer(&pointer)?.as_f64()?))
        })
        .collect()
}

/// The sampled completions' scores, each with the group (step, example) it was sampled in.
fn grouped_scores(run: &RunData) -> Vec<GroupedScores> {
    run.samples
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
        .collect()
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
    let mut not_shown = Vec::new();
    for run in runs {
        let hidden = run
            .samples
            .iter()
            .filter(|sample| sample.get(runs::NOT_SHOWN).is_some())
            .count();
        if hidden > 0 {
            not_shown.push(format!(
                "{}: the last {} of {} samples",
                escape(&run.label),
                run.samples.len() - hidden,
                run.samples.len()
            ));
        }
        for sample in run.samples.iter().filter(|s| s.get(runs::NOT_SHOWN).is_none()) {
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
                    number(sample.pointer(&json_pointer(&["scores", name])))
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
    if runs.iter().all(|run| run.samples.is_empty()) {
        html.push_str("<p class=\"note\">No completions were sampled: a run writes them every <code>run.sample_steps</code> steps while <code>run.log_completions</code> is true.</p>");
    }
    if !not_shown.is_empty() {
        let _ = write!(
            html,
            "<p class=\"note\">Listed: {} (all are in each run's samples.jsonl; the trade-offs use them all).</p>",
            not_shown.join("; ")
        );
    }
    html
}

/// A sample's example id (samples.jsonl holds the whole example; earlier runs only its id).
pub(crate) fn example_id(sample: &Value) -> String {
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

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:15px}.grid{display:flex;flex-wrap:wrap;gap:12px}.chart{margin:0;border:1px solid #eee;padding:6px}.chart figcaption{font-weight:600;font-size:13px;max-width:460px;overflow-wrap:anywhere}.chart svg{display:block}.axes line{stroke:#999}.axes text{font-size:10px;fill:#555}.line{fill:none;stroke-width:1.6}.band{opacity:.15}.point{fill-opacity:0}.point:hover{fill-opacity:1}.legend span{margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;font-size:12px;text-align:left;vertical-align:top}th{background:#f6f6f6;cursor:pointer}.neg{color:#b00;font-weight:600}.na{color:#aaa}.flag{background:#fff3cd;padding:6px}.ok{color:#276}.meta{color:#777;font-size:12px}pre{white-space:pre-wrap;max-width:720px;margin:4px 0}";

/// Counts script errors on the page (`data-errors` on <html>), so a headless browser can
/// check that the report's script ran clean.
const ERRORS: &str = "window.addEventListener('error',function(){var h=document.documentElement;h.setAttribute('data-errors',String((+h.getAttribute('data-errors')||0)+1));});";

const SCRIPT: &str = "(function(){var t=document.getElementById('samples');if(!t)return;var b=t.tBodies[0];var f=document.getElementById('step-filter');f.addEventListener('input',function(){var v=f.value.trim();for(var i=0;i<b.rows.length;i++){var r=b.rows[i];r.style.display=(!v||r.getAttribute('data-step')===v)?'':'none';}});var h=t.tHead.rows[0].cells;for(var c=0;c<h.length;c++){(function(c){var asc=true;h[c].addEventListener('click',function(){var rows=Array.prototype.slice.call(b.rows);rows.sort(function(x,y){var p=x.cells[c].textContent,q=y.cells[c].textContent;var a=parseFloat(p),d=parseFloat(q);var r=(!isNaN(a)&&!isNaN(d))?a-d:p.localeCompare(q);return asc?r:-r;});asc=!asc;rows.forEach(function(r){b.appendChild(r);});});})(c);}document.body.setAttribute('data-ready','1');})();";

/// Writes the report of `runs` to `out` (atomically) and returns it.
pub fn write_report(runs: &[PathBuf], out: &Path) -> anyhow::Result<String> {
    let html = render(&load_runs(runs)?);
    crate::atomic_file::write(out, &html)?;
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::{METRICS_FILE, SAMPLES_FILE};

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
        assert!(
            !html.contains("Left out of this report"),
            "a cut last line is not yet written"
        );
        assert!(html.contains("Not enough steps") || html.contains("No objective fell"));
        // A damaged line in the middle is named on the page, not only in the log.
        let damaged = format!("{}not json\n{}", record(1), record(2));
        std::fs::write(dir.path().join(METRICS_FILE), damaged).unwrap();
        let html = render(&[load_run(dir.path()).unwrap()]);
        assert!(
            html.contains("Left out of this report") && html.contains("line 2"),
            "{html}"
        );
        let err = load_run(&dir.path().join("nothing")).err().unwrap().to_string();
        assert!(err.contains("not a run directory"), "{err}");
        // Started (run_info.json written) but no step logged yet: a run with no data.
        let starting = dir.path().join("starting");
        std::fs::create_dir(&starting).unwrap();
        std::fs::write(starting.join(crate::train::run_info::RUN_INFO_FILE), "{}").unwrap();
        let run = load_run(&starting).unwrap();
        assert!(run.metrics.is_empty());
        assert!(render(&[run]).contains("no data yet"));
    }

    /// A metrics.jsonl line at `step` with each objective's mean (std 0.1) and, where
    /// `held_out` is given, a greedy evaluation with that share right and objective means.
    fn metrics_line(step: u64, objectives: &[(&str, f64)], held_out: Option<f64>) -> String {
        let mut record = serde_json::json!({"step": step, "reward": {"mean": 0.5, "std": 0.1}});
        for (name, mean) in objectives {
            record["objectives"][*name] = serde_json::json!({"mean": mean, "std": 0.1, "weight": 1.0});
        }
        if let Some(accuracy) = held_out {
            record["eval"]["greedy"] =
                serde_json::json!({"questions": 4, "accuracy": accuracy, "reward": 0.3});
            for (name, mean) in objectives {
                record["eval"]["greedy"]["objectives"][*name] = serde_json::json!(mean);
            }
        }
        format!("{record}\n")
    }

    #[test]
    fn each_runs_trade_off_table_pairs_only_its_own_objectives() {
        let run = |label: &str, objectives: &[(&str, f64)]| RunData {
            label: label.into(),
            dir: PathBuf::from(label),
            metrics: (1..=3)
                .map(|step| serde_json::from_str(&metrics_line(step, objectives, None)).unwrap())
                .collect(),
            samples: Vec::new(),
            config: None,
            environment: None,
            left_out: Vec::new(),
        };
        let html = render(&[
            run("grpo", &[("accuracy", 0.5), ("format", 0.2)]),
            run("crpo", &[("accuracy", 0.5), ("faithfulness", 0.3)]),
        ]);
        let grpo = html
            .split("<h3>grpo</h3>")
            .nth(1)
            .unwrap()
            .split("<h3>")
            .next()
            .unwrap();
        assert!(grpo.contains("<td>accuracy</td><td>format</td>"), "{grpo}");
        assert!(!grpo.contains("faithfulness"), "{grpo}");
    }

    /// A rising objective at weight 0 (GRPO's faithfulness) wins no reward: its pair is not
    /// flagged; a weighted one's is.
    #[test]
    fn only_a_weighted_objective_rising_is_flagged_as_winning_the_reward() {
        let line = |step: u64, rising: f64, falling: f64, weight: f64| {
            let mut record: Value = serde_json::from_str(&metrics_line(
                step,
                &[("accuracy", rising), ("reasoning", falling)],
                None,
            ))
            .unwrap();
            record["objectives"]["accuracy"]["weight"] = weight.into();
            record
        };
        for (weight, flagged) in [(0.0, false), (10.0, true)] {
            let run = RunData {
                label: "arm".into(),
                dir: PathBuf::from("arm"),
                metrics: (0..20)
                    .map(|step| line(step, 0.2 + 0.03 * step as f64, 0.9 - 0.03 * step as f64, weight))
                    .collect(),
                samples: Vec::new(),
                config: None,
                environment: None,
                left_out: Vec::new(),
            };
            let html = render(&[run]);
            assert_eq!(
                html.contains("<b>reasoning</b> fell"),
                flagged,
                "weight {weight}: {html}"
            );
        }
    }

    /// Every `data-series` id on the page of one run, in order.
    fn series_ids(html: &str) -> Vec<&str> {
        html.split("data-series=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect()
    }

    #[test]
    fn json_pointers_escape_names_with_slashes_and_tildes() {
        assert_eq!(
            json_pointer(&["objectives", "acc/y~1", "mean"]),
            "/objectives/acc~1y~01/mean"
        );
        let record = serde_json::json!({"objectives": {"acc/y~1": {"mean": 0.25}}});
        assert_eq!(
            record.pointer(&json_pointer(&["objectives", "acc/y~1", "mean"])),
            Some(&serde_json::json!(0.25))
        );
    }

    #[test]
    fn an_objective_named_with_a_slash_or_tilde_is_drawn_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let name = "acc/y~1";
        let metrics: String = (1..=4)
            .map(|step| {
                let x = step as f64;
                metrics_line(step, &[(name, x / 4.0), ("other", 1.0 - x / 4.0)], Some(0.5))
            })
            .collect();
        std::fs::write(dir.path().join(METRICS_FILE), metrics).unwrap();
        let sample =
            serde_json::json!({"step": 2, "example": {"id": "q1"}, "scores": {name: 0.75, "other": 0.0}});
        std::fs::write(dir.path().join(SAMPLES_FILE), format!("{sample}\n")).unwrap();
        let html = render(&[load_run(dir.path()).unwrap()]);
        assert!(
            html.contains("data-series=\"objective/acc/y~1\" data-run"),
            "the training curve"
        );
        assert!(
            html.contains("data-series=\"eval/greedy/objectives/acc/y~1\""),
            "the held-out curve"
        );
        let drawn_points = |id: &str| {
            html.split(&format!("data-series=\"{id}\""))
                .nth(1)
                .and_then(|rest| rest.split("data-points=\"").nth(1))
                .and_then(|rest| rest.split('"').next())
                .map(str::to_string)
        };
        assert_eq!(drawn_points("objective/acc/y~1").as_deref(), Some("4"));
        assert_eq!(
            drawn_points("eval/greedy/objectives/acc/y~1").as_deref(),
            Some("4")
        );
        assert!(html.contains("<td>0.750</td>"), "the sample's score");
        assert!(
            html.contains("<td>acc/y~1</td><td>other</td><td class=\"neg\">-1.00</td>"),
            "the step correlation"
        );
    }

    #[test]
    fn held_out_share_right_and_objective_means_have_their_own_series_and_titles() {
        let dir = tempfile::tempdir().unwrap();
        let metrics: String = (1..=2)
            .map(|step| metrics_line(step, &[("accuracy", 0.5), ("reward", 0.2)], Some(0.75)))
            .collect();
        std::fs::write(dir.path().join(METRICS_FILE), metrics).unwrap();
        let html = render(&[load_run(dir.path()).unwrap()]);
        let ids = series_ids(&html);
        let distinct: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "a series id drawn twice: {ids:?}");
        for id in [
            "eval/greedy/accuracy",
            "eval/greedy/objectives/accuracy",
            "eval/greedy/reward",
            "eval/greedy/objectives/reward",
            "objective/reward",
            "reward",
        ] {
            assert!(distinct.contains(id), "{id} missing: {ids:?}");
        }
        for title in [
            "held-out acc (share right), greedy",
            "held-out accuracy obj (mean), greedy",
            "held-out reward obj (mean), greedy",
            "accuracy obj (mean ± std)",
        ] {
            assert!(
                html.contains(&format!("<figcaption>{title}</figcaption>")),
                "{title}"
            );
        }
    }

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
