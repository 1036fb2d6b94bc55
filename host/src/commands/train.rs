//! `crpo-host train` and `sft`.

use crate::distributed::{self, LaunchEnv, World};
use crate::interrupt::Interrupt;
use crate::plugins::trust::Trust;
use crate::plugins::PluginRegistry;
use crate::train::config::RunConfig;
use crate::train::memory_plan::Phase;
use crate::train::preflight::MemoryCheck;
use crate::train::resume::StartMode;
use crate::train::{metrics, sft, trainer};
use anyhow::bail;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The run config (TOML; see docs/config.md).
    #[arg(long, value_parser = crate::home_path::path_argument)]
    pub config: PathBuf,
    /// Continue from the run directory's newest usable checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: continue although the config differs from the checkpoint's in keys that
    /// change what the run computes (each is listed and recorded in <run>/resumes.jsonl).
    #[arg(long, requires = "resume")]
    pub allow_config_change: bool,
    /// Write the run here instead of the config's `run.output_dir` (`sft.output_dir` for sft).
    #[arg(long, value_name = "DIR", value_parser = crate::home_path::path_argument)]
    pub output_dir: Option<PathBuf>,
    /// train: start N local worker processes, ranks 0..N of one data-parallel run on this
    /// machine (as `torchrun --nproc-per-node N` would; see docs/distributed.md).
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
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
pub fn load(dirs: &[PathBuf], config_path: &Path) -> anyhow::Result<(RunConfig, PluginRegistry)> {
    let config = RunConfig::load(config_path)?;
    let mut all = dirs.to_vec();
    all.extend(config.run.plugin_dirs.iter().cloned());
    let trust = Trust {
        pins: config.run.plugin_pins.clone(),
        allow_insecure: config.run.allow_insecure_plugins,
    };
    // A directory the config names is named as the config's (`--plugins` ones as the flag's).
    let registry = PluginRegistry::load_trusted(&all, &trust).map_err(|error| match error {
        crate::plugins::PluginLoadError::Directory { ref dir, .. }
            if !dirs.contains(dir) && config.run.plugin_dirs.contains(dir) =>
        {
            anyhow::Error::new(error).context(format!("{}: run.plugin_dirs", config_path.display()))
        }
        other => anyhow::Error::new(other),
    })?;
    Ok((config, registry))
}

pub fn train(dirs: &[PathBuf], args: &RunArgs) -> anyhow::Result<()> {
    if let Some(nproc) = args.nproc {
        return start_local_workers(nproc, args);
    }
    let (mut config, registry) = load(dirs, &args.config)?;
    if let Some(dir) = &args.output_dir {
        config.run.output_dir = dir.clone();
    }
    let world = join_world(&mut config)?;
    if let Some(world) = &world {
        distributed::same_config::check_same_config(world, &config)?;
    }
    let is_main = world.as_ref().is_none_or(World::is_main);
    let checkpoints = config.run.save_steps > 0;
    let summary = trainer::Trainer::new_on(&registry, config, args.start_mode(), world)?
        .interruptible(Interrupt::install(checkpoints)?)
        .run()?;
    if !is_main {
        return Ok(());
    }
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
    // A distributed launch (WORLD_SIZE > 1) of sft is refused before any command runs.
    if args.nproc.is_some() {
        bail!("sft runs in one process: --nproc is for train");
    }
    let (mut config, registry) = load(dirs, &args.config)?;
    if let Some(dir) = &args.output_dir {
        config.sft.output_dir = Some(dir.clone());
    }
    let interrupt = Interrupt::install(config.run.save_steps > 0)?;
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

/// Joins the distributed run the environment describes, if any. On CUDA each rank takes the
/// GPU of its LOCAL_RANK.
fn join_world(config: &mut RunConfig) -> anyhow::Result<Option<World>> {
    let Some(env) = LaunchEnv::from_env()? else {
        return Ok(None);
    };
    let mut device = crate::device::parse_device(&config.model.device)
        .map_err(|e| anyhow::anyhow!("model.device: {e}"))?;
    if device.is_cuda() {
        device = tch::Device::Cuda(env.local_rank);
        config.model.device = format!("cuda:{}", env.local_rank);
        crate::device::parse_device(&config.model.device)
            .map_err(|e| anyhow::anyhow!("LOCAL_RANK={}: {e}", env.local_rank))?;
    }
    distributed::join_from_env(device, Duration::from_secs(config.run.ddp_timeout))
}

/// `train --nproc N`: this command line again, without `--nproc`, as N local ranks.
fn start_local_workers(nproc: usize, args: &RunArgs) -> anyhow::Result<()> {
    let config = RunConfig::load(&args.config)?;
    let cuda = crate::device::parse_device(&config.model.device)
        .map_err(|e| anyhow::anyhow!("model.device: {e}"))?
        .is_cuda();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    distributed::launch::check_local_ranks(nproc, cuda, tch::Cuda::device_count() as usize, cores)?;
    // What every rank would refuse before loading, refused once here, before any starts (each
    // rank printed it and the launcher reported a failed worker).
    let memory = if cuda {
        MemoryCheck::Elsewhere
    } else {
        MemoryCheck::Ranks(nproc as u64)
    };
    crate::train::preflight::refuse_before_loading(&config, Phase::Train, memory)?;
    let mut worker_args: Vec<OsString> = Vec::new();
    let mut given = std::env::args_os().skip(1);
    while let Some(arg) = given.next() {
        if arg == "--nproc" {
            given.next();
        } else if !arg.to_string_lossy().starts_with("--nproc=") {
            worker_args.push(arg);
        }
    }
    // When the run stops on a signal, or a worker fails while rank 0 writes a checkpoint, the
    // others get the timeout and a margin to finish; else they are killed soon after.
    let grace = Duration::from_secs(config.run.ddp_timeout) + Duration::from_secs(10);
    let run_dir = args.output_dir.clone().unwrap_or(config.run.output_dir);
    distributed::launch::run_local_workers(nproc, &worker_args, grace, || {
        crate::train::checkpoint::being_written(&run_dir)
    })
}
