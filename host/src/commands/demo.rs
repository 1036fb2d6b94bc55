//! `crpo-host demo`: the Clinical-R1 recipe end to end on the bundled synthetic MCQ set, on
//! CPU in minutes: make a small model, cold-start SFT, CRPO training, evaluation before and
//! after (and, with `--compare-grpo`, the GRPO baseline from the same cold start, as the
//! paper's Table 1 compares them).

use crate::plugins::{ObjectiveSpec, PluginRegistry};
use crate::train::config::RunConfig;
use crate::train::data::load_splits;
use crate::train::eval::{evaluate, table, EvalReport};
use crate::train::policy::LoadedPolicy;
use crate::train::presets::Preset;
use crate::train::reward::RunReward;
use crate::train::{checkpoint, sft, trainer::Trainer};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// The demo's run config, written next to its outputs.
pub const DEMO_CONFIG: &str = include_str!("demo/crpo.toml");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the model, data, runs and reports go.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Replace what a previous demo left in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Also train the grpo-baseline preset from the same cold start and compare.
    #[arg(long)]
    pub compare_grpo: bool,
    /// Model preset: tiny or small.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// CRPO steps (default: the demo config's).
    #[arg(long)]
    pub steps: Option<usize>,
}

/// Objectives reported by the demo's evaluation: the preset's, weighted as in `crpo` (so
/// `reward` is the paper's reward), and the beyond-paper ones with weight 0 (shown, not summed).
fn report_objectives() -> Vec<ObjectiveSpec> {
    let weighted = [
        ("accuracy", 10.0),
        ("clinical_reasoning", 1.0),
        ("consistency", 0.5),
        ("format_code", 0.0),
        ("faithfulness", 0.0),
        ("comprehensiveness", 0.0),
    ];
    weighted
        .iter()
        .map(|&(plugin, weight)| ObjectiveSpec {
            name: None,
            plugin: plugin.into(),
            weight: Some(weight),
            options: serde_json::Value::Null,
        })
        .collect()
}

pub fn run(dirs: &[PathBuf], args: &DemoArgs) -> anyhow::Result<()> {
    let out = &args.out;
    prepare_directory(out, args.overwrite)?;
    let registry = PluginRegistry::load(dirs)?;
    crate::commands::train::demo_data(&crate::commands::train::DemoDataArgs {
        out: out.join("data"),
    })?;
    let preset = crpo_plugins_policy::tiny::Preset::from_name(&args.preset)
        .filter(|p| *p != crpo_plugins_policy::tiny::Preset::Qwen05bShape)
        .with_context(|| format!("--preset {}: expected tiny or small", args.preset))?;
    crpo_plugins_policy::tiny::write_preset(&out.join("model"), preset, 0)?;
    let config_path = out.join("crpo.toml");
    std::fs::write(&config_path, DEMO_CONFIG)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let mut crpo = RunConfig::load(&config_path)?;
    if let Some(steps) = args.steps {
        crpo.run.max_steps = steps;
    }

    println!("1/4 cold start: supervised fine-tuning on the reference completions");
    let mut cold = crpo.clone();
    cold.model.path = out.join("model");
    let sft = sft::run(&registry, &cold, false)?;
    println!(
        "    {} updates, loss {:.3} → {:.3}",
        sft.steps,
        sft.first_loss.unwrap_or(f64::NAN),
        sft.last_loss.unwrap_or(f64::NAN)
    );

    println!("2/4 CRPO (preset crpo: 10·accuracy + clinical_reasoning + 0.5·consistency)");
    let crpo_model = train(&registry, &crpo)?;
    let mut models = vec![
        ("cold start (SFT)".to_string(), sft.model_dir.clone()),
        ("CRPO".to_string(), crpo_model),
    ];
    if args.compare_grpo {
        println!("3/4 GRPO baseline (preset grpo-baseline: 10·accuracy + format_code), same cold start");
        let mut grpo = crpo.clone();
        grpo.run.output_dir = out.join("grpo");
        grpo.reward.preset = Some(Preset::GrpoBaseline);
        models.push(("GRPO baseline".to_string(), train(&registry, &grpo)?));
    } else {
        println!("3/4 GRPO baseline: skipped (pass --compare-grpo)");
    }

    println!("4/4 evaluation on the held-out questions (greedy)");
    let reports = evaluate_models(&registry, &crpo, &models)?;
    let report_path = out.join("report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&reports)?)?;
    println!("\n{}\n", table(&reports));
    println!("reward = 10·accuracy + clinical_reasoning + 0.5·consistency (the paper's); the other objectives are shown, not summed.");
    println!("outputs in {}:", out.display());
    println!(
        "  crpo.toml               the run config (reuse it: crpo-host train --config {})",
        config_path.display()
    );
    println!("  data/                   the synthetic MCQ set (MedQA format)");
    println!("  model/  sft/model/      the initial model and the cold-start model");
    println!("  crpo/metrics.jsonl      per-step metrics, each objective's mean and std");
    println!("  crpo/samples.jsonl      completions with their scores and advantages");
    println!("  crpo/checkpoints/       checkpoints (Hugging Face model directories inside)");
    if args.compare_grpo {
        println!("  grpo/                   the GRPO baseline's run");
    }
    println!("  report.json             the table above as JSON");
    Ok(())
}

/// Refuses to mix with an earlier demo's files unless asked to replace them.
fn prepare_directory(out: &Path, overwrite: bool) -> anyhow::Result<()> {
    let occupied = out.exists() && std::fs::read_dir(out)?.next().is_some();
    if occupied {
        if !overwrite {
            bail!(
                "{} is not empty: pass --overwrite to replace the previous demo, or choose --out",
                out.display()
            );
        }
        for part in ["data", "model", "sft", "crpo", "grpo", "crpo.toml", "report.json"] {
            let path = out.join(part);
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else if path.exists() {
                std::fs::remove_file(&path)?;
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// Trains one config and returns its final model directory.
fn train(registry: &PluginRegistry, config: &RunConfig) -> anyhow::Result<PathBuf> {
    let summary = Trainer::new(registry, config.clone(), false)?.run()?;
    let checkpoint = summary.last_checkpoint.context("the run wrote no checkpoint")?;
    if let Some(last) = &summary.last_metrics {
        println!("    {}", crate::train::progress::summary_line(last));
    }
    Ok(checkpoint.join(checkpoint::MODEL_DIR))
}

fn evaluate_models(
    registry: &PluginRegistry,
    config: &RunConfig,
    models: &[(String, PathBuf)],
) -> anyhow::Result<Vec<EvalReport>> {
    let mut eval_config = config.clone();
    eval_config.reward.preset = None;
    eval_config.reward.objectives.clear();
    let reward = RunReward::from_specs(registry, &report_objectives(), &eval_config)?;
    let examples = load_splits(registry, &eval_config)?.eval;
    let mut reports = Vec::new();
    for (label, dir) in models {
        let policy = LoadedPolicy::load(registry, &eval_config.model, dir)?;
        let mut report = evaluate(&policy, &reward, &eval_config, &examples, "demo eval")?;
        report.label = label.clone();
        reports.push(report);
    }
    Ok(reports)
}
