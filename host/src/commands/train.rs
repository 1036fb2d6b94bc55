//! `crpo-host train` and `sft`.

use crate::interrupt::Interrupt;
use crate::plugins::trust::Trust;
use crate::plugins::PluginRegistry;
use crate::train::config::RunConfig;
use crate::train::resume::StartMode;
use crate::train::{metrics, sft, trainer};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The run config (TOML; see docs/config.md).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue from the run directory's newest usable checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: continue although the config differs from the checkpoint's in keys that
    /// change what the run computes (each is listed and recorded in <run>/resumes.jsonl).
    #[arg(long, requires = "resume")]
    pub allow_config_change: bool,
    /// Write the run here instead of the config's `run.output_dir` (`sft.output_dir` for sft).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

impl RunArgs {
    pub fn start_mode(&self) -> StartMode {
        StartMode {
            resume: self.resume,
            allow_config_change: self.allow_config_change,
        }
    }
}

/// Reads the config and loads the plugins of `--plugins`, CRPO_PLUGIN_PATH and the config.
pub fn load(dirs: &[PathBuf], config: &Path) -> anyhow::Result<(RunConfig, PluginRegistry)> {
    let config = RunConfig::load(config)?;
    let mut all = dirs.to_vec();
    all.extend(config.run.plugin_dirs.iter().cloned());
    let trust = Trust {
        pins: config.run.plugin_pins.clone(),
        allow_insecure: config.run.allow_insecure_plugins,
    };
    let registry = PluginRegistry::load_trusted(&all, &trust)?;
    Ok((config, registry))
}

pub fn train(dirs: &[PathBuf], args: &RunArgs) -> anyhow::Result<()> {
    let (mut config, registry) = load(dirs, &args.config)?;
    if let Some(dir) = &args.output_dir {
        config.run.output_dir = dir.clone();
    }
    let summary = trainer::Trainer::new(&registry, config, args.start_mode())?
        .interruptible(Interrupt::install()?)
        .run()?;
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
    let (mut config, registry) = load(dirs, &args.config)?;
    if let Some(dir) = &args.output_dir {
        config.sft.output_dir = Some(dir.clone());
    }
    let interrupt = Interrupt::install()?;
    let summary = sft::run(&registry, &config, args.start_mode(), Some(&interrupt))?;
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
