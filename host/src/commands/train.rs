//! `crpo-host train`, `sft`, `eval` and `demo-data`.

use crate::plugins::PluginRegistry;
use crate::train::config::RunConfig;
use crate::train::data::{load_splits, read_examples};
use crate::train::eval::{evaluate, table, EvalReport};
use crate::train::policy::LoadedPolicy;
use crate::train::reward::RunReward;
use crate::train::{metrics, sft, trainer};
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The run config (TOML; see docs/config.md).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue from the run directory's latest checkpoint.
    #[arg(long)]
    pub resume: bool,
}

/// Reads the config and loads the plugins of `--plugins`, CRPO_PLUGIN_PATH and the config.
pub fn load(dirs: &[PathBuf], config: &Path) -> anyhow::Result<(RunConfig, PluginRegistry)> {
    let config = RunConfig::load(config)?;
    let mut all = dirs.to_vec();
    all.extend(config.run.plugin_dirs.iter().cloned());
    let registry = PluginRegistry::load(&all)?;
    Ok((config, registry))
}

pub fn train(dirs: &[PathBuf], args: &RunArgs) -> anyhow::Result<()> {
    let (config, registry) = load(dirs, &args.config)?;
    let summary = trainer::Trainer::new(&registry, config, args.resume)?.run()?;
    println!(
        "trained {} steps; run directory {}",
        summary.steps,
        summary.run_dir.display()
    );
    println!(
        "  metrics:    {}",
        summary.run_dir.join(metrics::METRICS_FILE).display()
    );
    println!(
        "  samples:    {}",
        summary.run_dir.join(metrics::SAMPLES_FILE).display()
    );
    if let Some(checkpoint) = summary.last_checkpoint {
        println!("  checkpoint: {} (model in model/)", checkpoint.display());
    }
    Ok(())
}

pub fn sft(dirs: &[PathBuf], args: &RunArgs) -> anyhow::Result<()> {
    let (config, registry) = load(dirs, &args.config)?;
    let summary = sft::run(&registry, &config, args.resume)?;
    println!(
        "fine-tuned {} steps (loss {:.3} → {:.3}); model {}",
        summary.steps,
        summary.first_loss.unwrap_or(f64::NAN),
        summary.last_loss.unwrap_or(f64::NAN),
        summary.model_dir.display()
    );
    println!("  checkpoints and metrics: {}", summary.run_dir.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// Model directories to evaluate (repeatable; default: the config's model).
    #[arg(long)]
    pub model: Vec<PathBuf>,
    /// Files to evaluate, read with the config's dataset reader (repeatable; default: the
    /// config's eval split).
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Samples per question, majority-voted (overrides eval.samples).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Write the reports as JSON here.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn eval(dirs: &[PathBuf], args: &EvalArgs) -> anyhow::Result<()> {
    let (mut config, registry) = load(dirs, &args.config)?;
    if let Some(samples) = args.samples {
        config.eval.samples = samples;
        if samples > 1 && config.eval.temperature <= 0.0 {
            config.eval.temperature = 1.0;
        }
        config.validate()?;
    }
    let reports = run_eval(&registry, &config, &args.model, &args.data)?;
    println!("{}", table(&reports));
    if let Some(path) = &args.output {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("reports written to {}", path.display());
    }
    Ok(())
}

/// Evaluates each model on each dataset (the config's eval split when `data` is empty).
pub fn run_eval(
    registry: &PluginRegistry,
    config: &RunConfig,
    models: &[PathBuf],
    data: &[PathBuf],
) -> anyhow::Result<Vec<EvalReport>> {
    let reward = RunReward::from_config(registry, config)?;
    let datasets = if data.is_empty() {
        vec![("eval".to_string(), load_splits(registry, config)?.eval)]
    } else {
        data.iter()
            .map(|path| {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                Ok((name, read_examples(registry, config, path)?))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let models = if models.is_empty() {
        vec![config.model.path.clone()]
    } else {
        models.to_vec()
    };
    let mut reports = Vec::new();
    for model in &models {
        let policy = LoadedPolicy::load(registry, &config.model, model)?;
        for (name, examples) in &datasets {
            reports.push(evaluate(&policy, &reward, config, examples, name)?);
        }
    }
    Ok(reports)
}

#[derive(clap::Args)]
pub struct DemoDataArgs {
    /// Directory to write train.jsonl and eval.jsonl to.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn demo_data(args: &DemoDataArgs) -> anyhow::Result<()> {
    use crpo_plugins_datasets::demo;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    for (name, seed, per_condition) in demo::FILES {
        let path = args.out.join(name);
        std::fs::write(&path, demo::to_jsonl(&demo::generate(seed, per_condition)))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
