//! `crpo-host demo`: what CRPO does, shown on the bundled clinical task on a CPU in minutes.
//! One seed sets the task, the initial model and the runs; a small model is fine-tuned on
//! the imperfect teacher's references (the cold start), then trained from that one cold start
//! by matched arms — same prompt, format and settings, only the reward differs — and the
//! cold start and each arm are evaluated on held-out questions, greedy and sampled.

use super::demo_data::{write_task, DemoTaskArgs};
use crate::atomic_file;
use crate::demo_task as demo;
use crate::plugins::PluginRegistry;
use crate::rollout::Policy;
use crate::text_table::text_table;
use crate::train::config::{EvalSection, RunConfig};
use crate::train::data::load_splits;
use crate::train::eval::{decoding, evaluate, EvalReport};
use crate::train::metrics::{METRICS_FILE, SAMPLES_FILE};
use crate::train::resume::StartMode;
use crate::train::resume::RESUMES_FILE;
use crate::train::reward::{preset_objectives, RunReward};
use crate::train::run_info::RUN_INFO_FILE;
use crate::train::run_lock::LOCK_FILE;
use crate::train::{checkpoint, sft, trainer::Trainer};
use anyhow::{bail, Context};
use crpo_sdk::RewardPreset;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod verdict;

/// The run config the demo writes for the cold start and for each arm.
const RUN_TEMPLATE: &str = include_str!("demo/run.toml");

/// The preset whose objectives every model is evaluated on (all the clinical ones) and whose
/// prompt and format every arm shares.
const REPORTED: &str = "crpo-full";

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the task, the models, the runs and the report go.
    #[arg(long, default_value = "runs/demo", value_parser = crate::home_path::path_argument)]
    pub out: PathBuf,
    /// Replace what a previous demo left in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Seeds the task, the initial model and every run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The arms trained from the cold start: reward presets (grpo, crpo, crpo-full, …).
    #[arg(long, value_delimiter = ',', default_value = "grpo,crpo-full")]
    pub arms: Vec<String>,
    /// RL steps per arm.
    #[arg(long, default_value_t = 150)]
    pub steps: usize,
    /// SFT epochs of the cold start.
    #[arg(long, default_value_t = 10)]
    pub sft_epochs: usize,
    /// Samples per held-out question in the sampled evaluation (temperature 1, majority vote).
    #[arg(long, default_value_t = 8)]
    pub eval_samples: usize,
    /// Model preset: tiny or small.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    #[command(flatten)]
    pub task: DemoTaskArgs,
}

/// A model the demo evaluates: the cold start or an arm.
struct Entrant {
    label: String,
    config: RunConfig,
    model: PathBuf,
    /// The arm's run directory (None for the cold start).
    run_dir: Option<PathBuf>,
}

/// What the demo writes to report.json.
#[derive(Serialize)]
struct DemoReport {
    seed: u64,
    steps: usize,
    /// The weighting every evaluation's `reward` uses, whichever reward the model trained
    /// with: one scale for every row.
    evaluation_reward: String,
    evaluations: Vec<EvalReport>,
    training: Vec<TrainingTrend>,
    /// Whether CRPO kept the reasoning GRPO gave up (None for other arms).
    verdict: Option<verdict::Verdict>,
}

/// An arm's training means per objective over its first and last steps.
#[derive(Serialize)]
struct TrainingTrend {
    arm: String,
    window: usize,
    /// name → (mean of the first `window` steps, mean of the last `window` steps).
    means: BTreeMap<String, (f64, f64)>,
    frac_reward_zero_std: (f64, f64),
}

pub fn run(dirs: &[PathBuf], args: &DemoArgs) -> anyhow::Result<()> {
    if !["tiny", "small"].contains(&args.model.as_str()) {
        bail!("--model {}: expected tiny or small", args.model);
    }
    // Checked now, not after every arm has trained.
    for (flag, value) in [
        ("--steps", args.steps),
        ("--sft-epochs", args.sft_epochs),
        ("--eval-samples", args.eval_samples),
    ] {
        if value == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    let task = args.task.task(args.seed)?;
    let out = &args.out;
    let registry = PluginRegistry::load(dirs)?;
    let reported = registry.preset(REPORTED)?;
    let arms = parse_arms(&registry, &args.arms, reported)?;
    prepare_directory(out, args.overwrite)?;
    crate::interrupt::exit_saying(&format!(
        "the demo in {} did not finish; the same command with --overwrite starts it again",
        out.display()
    ))?;
    // Its config first: it marks the directory as a demo's, so that --overwrite replaces
    // whatever an interrupted demo left.
    let cold_config = write_config(
        out,
        "sft",
        "the cold start (supervised fine-tuning)",
        "model",
        reported,
        args,
    )?;
    write_task(&task, &out.join("data"), true)?;
    registry
        .policy("qwen2")?
        .plugin()
        .write_preset(&args.model, &out.join("model"), args.seed)?;
    println!(
        "1/{} cold start: supervised fine-tuning of a {} model on the teacher's reference completions",
        arms.len() + 2,
        args.model
    );
    let sft = sft::run(&registry, &cold_config, StartMode::default(), None)?;
    println!(
        "    {} updates, loss {:.3} → {:.3}",
        sft.steps,
        sft.first_loss.unwrap_or(f64::NAN),
        sft.last_loss.unwrap_or(f64::NAN)
    );
    let mut entrants = vec![Entrant {
        label: "cold start (SFT)".into(),
        config: cold_config,
        model: sft.model_dir.clone(),
        run_dir: None,
    }];
    for (index, arm) in arms.iter().enumerate() {
        let label = arm_label(arm);
        let what = format!("the {label} arm, reward {}", arm.formula());
        let config = write_config(out, arm.name, &what, "sft/model", arm, args)?;
        println!(
            "{}/{} {label}: {} steps from the cold start, reward = {}",
            index + 2,
            arms.len() + 2,
            args.steps,
            arm.formula()
        );
        let summary = Trainer::new(&registry, config.clone(), StartMode::default())?.run()?;
        let checkpoint = summary.last_checkpoint.context("the run wrote no checkpoint")?;
        if let Some(last) = &summary.last_metrics {
            println!("    {}", crate::train::progress::summary_line(last));
        }
        entrants.push(Entrant {
            label,
            model: checkpoint.join(checkpoint::MODEL_DIR),
            run_dir: Some(summary.run_dir),
            config,
        });
    }

    println!(
        "{}/{} evaluation on the held-out questions: greedy, and {} samples at temperature 1 (majority vote)",
        arms.len() + 2,
        arms.len() + 2,
        args.eval_samples
    );
    let evaluations = evaluate_entrants(&registry, reported, &entrants, args.eval_samples)?;
    let training = entrants
        .iter()
        .filter_map(|e| {
            e.run_dir
                .as_ref()
                .map(|dir| trend(reported, &e.label, &dir.join(METRICS_FILE)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    println!();
    println!("{}", results_table(reported, &evaluations));
    println!("acc (share right) = share of held-out questions answered right (greedy, or the vote of the samples);");
    println!("an `obj (mean)` column is that objective's mean over completions (accuracy obj: 1 right, 0 wrong, negative for broken answers).");
    println!();
    let window = training.first().map_or(0, |t| t.window);
    println!(
        "Training: each objective's mean over the first → last {}",
        if window == 1 {
            "step".to_string()
        } else {
            format!("{window} steps")
        }
    );
    for line in training.iter().map(|t| trend_line(reported, t)) {
        println!("  {line}");
    }
    println!();
    println!("{}", breakdown_table(&evaluations));
    let verdict = verdict::verdict(&evaluations);
    if let Some(verdict) = &verdict {
        println!();
        println!("{}", verdict.text);
    }
    let report = DemoReport {
        seed: args.seed,
        steps: args.steps,
        evaluation_reward: format!("{REPORTED}: {}", reported.formula()),
        evaluations,
        training,
        verdict,
    };
    let report_path = out.join("report.json");
    atomic_file::write(&report_path, serde_json::to_string_pretty(&report)?)?;
    let arms: Vec<PathBuf> = entrants.iter().filter_map(|e| e.run_dir.clone()).collect();
    crate::report::write_report(&arms, &out.join("report.html"))?;
    print_outputs(out, &entrants, &report_path, args.eval_samples);
    Ok(())
}

fn parse_arms(
    registry: &PluginRegistry,
    names: &[String],
    reported: &'static RewardPreset,
) -> anyhow::Result<Vec<&'static RewardPreset>> {
    let arms = names
        .iter()
        .map(|name| registry.preset(name.trim()).context("--arms"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if arms.is_empty() {
        bail!("--arms needs at least one reward preset");
    }
    if let Some(arm) = arms.iter().find(|a| a.system_prompt != reported.system_prompt) {
        bail!(
            "--arms: `{}` asks for another format than the cold start learns, so it would not be a matched arm",
            arm.name
        );
    }
    let mut unique: Vec<&str> = arms.iter().map(|a| a.name).collect();
    unique.sort();
    unique.dedup();
    if unique.len() != arms.len() {
        bail!("--arms names a preset twice");
    }
    Ok(arms)
}

/// "GRPO" for `grpo`, "CRPO" for `crpo-full`, the preset's name otherwise.
fn arm_label(arm: &RewardPreset) -> String {
    match arm.name {
        "grpo" => "GRPO".into(),
        "crpo-full" => "CRPO".into(),
        "crpo" => "CRPO (paper)".into(),
        other => other.into(),
    }
}

/// Writes `<out>/<name>.toml` from the template and loads it back, as a user would.
fn write_config(
    out: &Path,
    name: &str,
    what: &str,
    model: &str,
    preset: &RewardPreset,
    args: &DemoArgs,
) -> anyhow::Result<RunConfig> {
    let path = out.join(format!("{name}.toml"));
    let command = if name == "sft" { "sft" } else { "train" };
    let text = RUN_TEMPLATE
        .replace("{what}", what)
        .replace("{command}", command)
        .replace("{file}", &path.display().to_string())
        .replace("{output_dir}", name)
        .replace("{model}", model)
        .replace("{preset}", preset.name)
        .replace("{seed}", &args.seed.to_string())
        .replace("{steps}", &args.steps.to_string())
        .replace("{sft_epochs}", &args.sft_epochs.to_string());
    atomic_file::write(&path, text)?;
    RunConfig::load(&path)
}

/// Refuses to mix with other files unless asked to replace an earlier demo's: then every
/// file there must be one a demo writes (anything else — notes, a rerun the demo suggested —
/// is a user's, and refused by name), and no run in it may be in use by another process.
fn prepare_directory(out: &Path, overwrite: bool) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--out {} is a file: the demo writes a directory", out.display());
    }
    let occupied = out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some();
    if occupied {
        if !overwrite {
            bail!(
                "{} is not empty: pass --overwrite to replace the previous demo, or choose --out",
                out.display()
            );
        }
        if std::fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "--out {} is a link: name the directory it points to",
                out.display()
            );
        }
        let looks_like_demo = out.join("sft.toml").exists() || out.join("report.json").exists();
        if !looks_like_demo {
            bail!(
                "{} holds files that are not a demo's: choose another --out (--overwrite only replaces an earlier demo)",
                out.display()
            );
        }
        let runs = demo_runs(out)?;
        if let Some(foreign) = first_foreign(out, &runs)? {
            bail!(
                "{} holds {}, which no demo writes: move it out first (--overwrite replaces an earlier demo whole, and it would be lost)",
                out.display(),
                foreign.display()
            );
        }
        for run in &runs {
            // Held for the check only: a demo still running in there is not deleted under it.
            crate::train::run_lock::lock(&out.join(run), "--out")?;
        }
        std::fs::remove_dir_all(out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// The runs of an earlier demo: each `NAME.toml` the demo wrote (by its first line) names the
/// run directory `NAME`.
fn demo_runs(out: &Path) -> anyhow::Result<Vec<String>> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))? {
        let path = entry?.path();
        let (Some(name), Some("toml")) = (
            path.file_stem().and_then(|n| n.to_str()),
            path.extension().and_then(|e| e.to_str()),
        ) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.starts_with("# Written by `crpo-host demo`") {
            runs.push(name.to_string());
        }
    }
    Ok(runs)
}

/// The first file under `out` that no demo writes, if any (`runs`: its run directories).
fn first_foreign(out: &Path, runs: &[String]) -> anyhow::Result<Option<PathBuf>> {
    let mut pending = vec![out.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let relative: Vec<String> = path
                .strip_prefix(out)
                .unwrap_or(&path)
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            let is_dir = entry.file_type()?.is_dir();
            if !demo_writes(&relative, is_dir, runs) {
                return Ok(Some(path));
            }
            if is_dir {
                pending.push(path);
            }
        }
    }
    Ok(None)
}

/// The files of a model directory the demo writes (a preset, a checkpoint, an adapter).
const DEMO_MODEL_FILES: [&str; 9] = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "adapter_config.json",
    "adapter_model.safetensors",
];

/// Whether a demo writes the entry at `relative` (its path's components under the demo).
fn demo_writes(relative: &[String], is_dir: bool, runs: &[String]) -> bool {
    let parts: Vec<&str> = relative.iter().map(String::as_str).collect();
    let model_file = |name: &str| !is_dir && DEMO_MODEL_FILES.contains(&name);
    let is_run = |name: &str| runs.iter().any(|run| run == name);
    let is_checkpoint = |name: &str| {
        ["step-", "unusable-step-", ".tmp-step-", ".trash-step-"]
            .iter()
            .any(|p| name.starts_with(p))
    };
    // What a write interrupted by a kill leaves: a temporary file, or a model directory's
    // temporary or set-aside copy (crate::atomic_file).
    let leftover = |name: &str| name.starts_with(".tmp-") || name.starts_with(".old-");
    match parts.as_slice() {
        ["report.json" | "report.html"] => !is_dir,
        [file] if file.ends_with(".toml") => !is_dir && is_run(file.trim_end_matches(".toml")),
        ["data" | "model"] => is_dir,
        ["data", file] => !is_dir && [demo::TRAIN_FILE, demo::EVAL_FILE].contains(file),
        ["model", file] => model_file(file),
        [run] => is_dir && is_run(run),
        [run, rest @ ..] if is_run(run) => match rest {
            ["model"] | ["checkpoints"] => is_dir,
            ["model", file] => model_file(file),
            [copy] if leftover(copy) => true,
            [copy, file] if leftover(copy) => model_file(file),
            [file] => {
                !is_dir
                    && ([METRICS_FILE, SAMPLES_FILE, RUN_INFO_FILE, RESUMES_FILE, LOCK_FILE].contains(file)
                        || file.starts_with("events.out.tfevents."))
            }
            ["checkpoints", checkpoint] => is_dir && is_checkpoint(checkpoint),
            ["checkpoints", checkpoint, "model"] => is_dir && is_checkpoint(checkpoint),
            ["checkpoints", checkpoint, "model", file] => is_checkpoint(checkpoint) && model_file(file),
            ["checkpoints", checkpoint, file] => {
                !is_dir
                    && is_checkpoint(checkpoint)
                    && [
                        checkpoint::OPTIMIZER_FILE,
                        checkpoint::STATE_FILE,
                        checkpoint::CONFIG_FILE,
                    ]
                    .contains(file)
            }
            _ => false,
        },
        _ => false,
    }
}

/// Each entrant greedy, then sampled, on the held-out split with every clinical objective.
fn evaluate_entrants(
    registry: &PluginRegistry,
    reported: &RewardPreset,
    entrants: &[Entrant],
    samples: usize,
) -> anyhow::Result<Vec<EvalReport>> {
    let mut reports = Vec::new();
    for entrant in entrants {
        let config = &entrant.config;
        let reward = RunReward::from_specs(registry, &preset_objectives(reported), &config.algorithm)?;
        let examples = load_splits(registry, config)?.eval;
        let policy = Policy::load(registry, &config.model, &entrant.model)?.for_inference();
        let greedy = EvalSection {
            samples: 1,
            temperature: 0.0,
            ..config.eval.clone()
        };
        let sampled = EvalSection {
            samples,
            temperature: 1.0,
            ..config.eval.clone()
        };
        for settings in [greedy, sampled] {
            let mut report = evaluate(
                registry, &policy, &reward, config, &settings, &examples, "held-out", None,
            )?;
            report.label = entrant.label.clone();
            reports.push(report);
        }
    }
    Ok(reports)
}

/// One row per model and decoding: the share of questions right and each objective's mean.
fn results_table(reported: &RewardPreset, reports: &[EvalReport]) -> String {
    let names: Vec<&str> = reported.objectives.iter().map(|(n, _)| *n).collect();
    let mut header = vec!["model".to_string(), "decoding".into(), "acc (share right)".into()];
    header.extend(names.iter().map(|n| format!("{n} obj (mean)")));
    let rows = reports.iter().map(|r| {
        let mut row = vec![r.label.clone(), decoding(r), format!("{:.3}", r.accuracy)];
        row.extend(
            names
                .iter()
                .map(|n| format!("{:.3}", r.objectives.get(*n).copied().unwrap_or(f64::NAN))),
        );
        row
    });
    text_table(header, rows)
}

/// Accuracy per `meta_info` group: a row per group, a column per model (greedy / vote).
fn breakdown_table(reports: &[EvalReport]) -> String {
    let mut labels: Vec<&str> = Vec::new();
    for report in reports {
        if !labels.contains(&report.label.as_str()) {
            labels.push(&report.label);
        }
    }
    let groups: Vec<(&String, usize)> = reports
        .first()
        .map(|r| r.by_meta.iter().map(|(k, v)| (k, v.questions)).collect())
        .unwrap_or_default();
    let mut header = vec!["acc by meta_info".to_string(), "questions".into()];
    header.extend(labels.iter().map(|l| format!("{l}: greedy / vote")));
    let rows = groups.iter().map(|(group, questions)| {
        let mut row = vec![group.to_string(), questions.to_string()];
        for label in &labels {
            let cell: Vec<String> = reports
                .iter()
                .filter(|r| r.label == *label)
                .map(|r| {
                    r.by_meta
                        .get(*group)
                        .map_or("-".into(), |g| format!("{:.2}", g.accuracy))
                })
                .collect();
            row.push(cell.join(" / "));
        }
        row
    });
    text_table(header, rows)
}

/// Reads an arm's metrics.jsonl into its first-vs-last means.
fn trend(reported: &RewardPreset, label: &str, metrics: &Path) -> anyhow::Result<TrainingTrend> {
    let text =
        std::fs::read_to_string(metrics).with_context(|| format!("cannot read {}", metrics.display()))?;
    let records: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not JSONL", metrics.display()))?;
    let window = (records.len() / 10).clamp(1, 10);
    let mean_of = |slice: &[Value], get: &dyn Fn(&Value) -> Option<f64>| {
        let values: Vec<f64> = slice.iter().filter_map(get).collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    let (first, last) = (
        &records[..window.min(records.len())],
        &records[records.len().saturating_sub(window)..],
    );
    let names: Vec<&str> = reported.objectives.iter().map(|(n, _)| *n).collect();
    let means = names
        .iter()
        .map(|name| {
            let get = |r: &Value| r["objectives"][*name]["mean"].as_f64();
            (name.to_string(), (mean_of(first, &get), mean_of(last, &get)))
        })
        .collect();
    let zero_std = |r: &Value| r["frac_reward_zero_std"].as_f64();
    Ok(TrainingTrend {
        arm: label.to_string(),
        window,
        means,
        frac_reward_zero_std: (mean_of(first, &zero_std), mean_of(last, &zero_std)),
    })
}

fn trend_line(reported: &RewardPreset, trend: &TrainingTrend) -> String {
    let mut parts: Vec<String> = reported
        .objectives
        .iter()
        .filter_map(|(name, _)| {
            trend
                .means
                .get(*name)
                .map(|(a, b)| format!("{name} {a:.2} → {b:.2}"))
        })
        .collect();
    let (a, b) = trend.frac_reward_zero_std;
    parts.push(format!("frac_reward_zero_std {a:.2} → {b:.2}"));
    format!("{:<14} {}", trend.arm, parts.join(" | "))
}

/// Where the demo's files are, and commands that go on from them (the evaluation as the demo
/// sampled it: `eval_samples` per question).
fn print_outputs(out: &Path, entrants: &[Entrant], report: &Path, eval_samples: usize) {
    let show = |p: &Path| p.display().to_string();
    println!("outputs in {}:", out.display());
    println!(
        "  data/                  the task (MedQA format; meta_info marks hard/easy and the question kind)"
    );
    println!("  model/  sft/model/     the initial model and the cold start");
    for entrant in entrants.iter().filter(|e| e.run_dir.is_some()) {
        let dir = entrant.run_dir.as_deref().unwrap_or(Path::new(""));
        println!(
            "  {:<22} the {} arm: metrics.jsonl, samples.jsonl, checkpoints/",
            format!(
                "{}/",
                dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
            ),
            entrant.label
        );
    }
    println!("  report.json            the tables above as JSON");
    println!("  report.html            the arms' curves per objective, trade-offs and samples (a browser opens it)");
    println!("run one part again (the same seed gives the same run), or evaluate a model:");
    println!(
        "  crpo-host sft   --config {} --output-dir {}",
        show(&out.join("sft.toml")),
        show(&out.join("sft-again"))
    );
    for entrant in entrants.iter().filter(|e| e.run_dir.is_some()) {
        let dir = entrant.run_dir.as_deref().unwrap_or(Path::new(""));
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        println!(
            "  crpo-host train --config {} --output-dir {}",
            show(&out.join(format!("{name}.toml"))),
            show(&out.join(format!("{name}-again")))
        );
    }
    if let Some(last) = entrants.last() {
        let name = last
            .run_dir
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().to_string());
        if let Some(name) = name {
            println!(
                "  crpo-host eval  --config {} --model {} --samples {} --temperature 1",
                show(&out.join(format!("{name}.toml"))),
                show(&last.model),
                eval_samples.max(1)
            );
        }
    }
    println!("report: {}", report.display());
    println!("charts: {}", out.join("report.html").display());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An earlier demo's layout: configs, data, model, a run with a checkpoint, the report.
    fn earlier_demo(out: &Path) {
        let files = [
            "sft.toml",
            "grpo.toml",
            "report.json",
            "report.html",
            "data/train.jsonl",
            "data/eval.jsonl",
            "model/config.json",
            "model/model.safetensors",
            "sft/metrics.jsonl",
            "sft/model/tokenizer.json",
            "grpo/metrics.jsonl",
            "grpo/samples.jsonl",
            "grpo/.crpo-run.lock",
            "grpo/events.out.tfevents.0000000001.host.1",
            "grpo/checkpoints/step-000002/trainer_state.json",
            "grpo/checkpoints/step-000002/model/model.safetensors",
        ];
        for file in files {
            let path = out.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let text = if file.ends_with(".toml") {
                "# Written by `crpo-host demo`: x.\n"
            } else {
                "{}"
            };
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn overwrite_replaces_an_earlier_demo_but_never_a_file_a_demo_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("demo");
        earlier_demo(&out);
        for foreign in [
            "notes.txt",
            "grpo/my_notes.md",
            "grpo-again/metrics.jsonl",
            "grpo/checkpoints/mine/x.json",
            "model/extra.bin",
            "data/mydata.jsonl",
            "my.toml",
        ] {
            let path = out.join(foreign);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "mine").unwrap();
            let error = prepare_directory(&out, true).unwrap_err().to_string();
            assert!(error.contains("which no demo writes"), "{foreign}: {error}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine", "{foreign}");
            std::fs::remove_file(&path).unwrap();
        }
        std::fs::remove_dir_all(out.join("grpo-again")).unwrap();
        std::fs::remove_dir_all(out.join("grpo/checkpoints/mine")).unwrap();
        // A run of it in use by another process: not deleted under it.
        let held = crate::train::run_lock::lock(&out.join("grpo"), "run.output_dir").unwrap();
        let error = prepare_directory(&out, true).unwrap_err().to_string();
        assert!(error.contains("in use by another crpo-host run"), "{error}");
        drop(held);
        prepare_directory(&out, true).unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "replaced whole");
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let error = prepare_directory(&dir.path().join("file"), true)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is a file"), "{error}");
    }
}
