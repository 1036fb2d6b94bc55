use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use crpo_host::commands;
use crpo_host::plugins::{PluginLoadError, PluginRegistry};
use std::path::PathBuf;
use std::process::ExitCode;

/// crpo: multi-objective verifiable RL (CRPO) for language models.
#[derive(Parser)]
#[command(name = "crpo-host", bin_name = "crpo-host", version)]
struct Cli {
    /// Directory of plugin libraries to load (repeatable). CRPO_PLUGIN_PATH (colon-separated)
    /// adds more.
    #[arg(long = "plugins", value_name = "DIR", global = true, value_parser = crpo_host::home_path::path_argument)]
    plugin_dirs: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Versions, libtorch, CUDA devices, cuDNN, threads and plugin directories; with
    /// --check-model, a model on the GPU against the CPU.
    Doctor(commands::doctor::DoctorArgs),
    /// List every plugin: kind, name, version, origin and description; with --verify, each
    /// library's sha256 and a pin for run.plugin_pins (without loading any).
    Plugins(commands::plugins::PluginsArgs),
    /// Check a dataset before a run: `data check --config run.toml` (or --dataset NAME --path
    /// FILE) reads it through its reader and reports counts, malformed records, the gold
    /// answers, prompt lengths and the first prompts as the model sees them.
    Data(commands::data::DataArgs),
    /// Write a ready plugin crate: `new reward NAME` (an objective in one function) or `new
    /// dataset NAME` (a reader), with a test and a README that says how to load it.
    New(commands::new::NewArgs),
    /// Score existing completions with reward objectives (JSONL in, JSONL out).
    Score(commands::score::ScoreArgs),
    /// Write a policy plugin's preset model (random weights, trained tokenizer).
    InitModel(commands::model::InitModelArgs),
    /// Generate a completion with a model directory, through a policy plugin.
    Generate(commands::model::GenerateArgs),
    /// Fold a LoRA adapter (PEFT's files) into its base model: a plain model directory.
    MergeLora(commands::merge_lora::MergeLoraArgs),
    /// Train a policy with CRPO (config: see docs/config.md).
    Train(commands::train::RunArgs),
    /// Cold-start supervised fine-tuning on the data's reference completions.
    Sft(commands::train::RunArgs),
    /// One self-contained HTML report of a run (or several, overlaid): a curve per objective,
    /// the training signals, trade-offs between objectives, sampled completions.
    Report(commands::report::ReportArgs),
    /// Accuracy and every objective's mean on held-out questions.
    Eval(commands::eval::EvalArgs),
    /// What CRPO does, on the bundled clinical task: cold start, GRPO and CRPO arms, evaluation.
    Demo(commands::demo::DemoArgs),
    /// The rollout engine's speed on completions of realistic, varied lengths.
    BenchRollout(commands::bench_rollout::BenchRolloutArgs),
    /// Write the demo task (MedQA format), with its knobs.
    DemoData(commands::demo_data::DemoDataArgs),
    /// Serves one reward objective over stdin/stdout for a run that isolates it
    /// (`isolation = "process"`); started by the trainer, not by hand.
    #[command(hide = true)]
    RewardWorker,
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`crpo-host plugins | head`) as command-line tools do,
    // instead of Rust's default of failing the next print with a panic.
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    crpo_host::memory::configure_for_training();
    crpo_host::error_report::install_panic_hook();
    tracing_subscriber::fmt()
        // Step summaries are info; RUST_LOG overrides (e.g. RUST_LOG=warn for quiet runs).
        // In a distributed run rank 0 speaks for all; the other ranks only warn.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                let other_rank = std::env::var("RANK").is_ok_and(|rank| rank.trim() != "0");
                tracing_subscriber::EnvFilter::new(if other_rank { "warn" } else { "info" })
            }),
        )
        // Log lines go around the progress bars, never over them.
        .with_writer(crpo_host::train::progress::log_writer)
        // Colour codes only for a person at a terminal: never in a redirected log, never under
        // NO_COLOR (https://no-color.org).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let matches = Cli::command().get_matches();
    let command_name = matches.subcommand_name().unwrap_or_default().to_string();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let resumable = matches!(cli.command, Command::Train(_) | Command::Sft(_));
    // A reward worker's exit is its host's to report (it names the objective).
    if !matches!(cli.command, Command::RewardWorker) {
        crpo_host::exit_guard::install(&command_name);
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    crpo_host::exit_guard::finished();
    let Ok(result) = result else {
        // The panic hook has said what happened.
        return ExitCode::from(101);
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", crpo_host::error_report::describe(&err, resumable));
            match err.downcast_ref::<crpo_host::interrupt::Interrupted>() {
                Some(interrupted) => ExitCode::from((128 + interrupted.signal) as u8),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut dirs = cli.plugin_dirs;
    let from_environment: Vec<PathBuf> = std::env::var_os("CRPO_PLUGIN_PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    dirs.extend(from_environment.iter().cloned());
    run_command(cli.command, &dirs).map_err(|err| name_the_plugin_path_variable(err, &from_environment))
}

/// A plugin directory that cannot be read or is unsafe to load from and came from
/// CRPO_PLUGIN_PATH (not --plugins) says so: a stale variable in a shell profile is otherwise
/// hard to find.
fn name_the_plugin_path_variable(err: anyhow::Error, from_environment: &[PathBuf]) -> anyhow::Error {
    let directory = |error: &PluginLoadError| match error {
        PluginLoadError::Directory { dir, .. } => Some((dir.clone(), "cannot be read")),
        PluginLoadError::UnsafeDirectory { dir, .. } => Some((dir.clone(), "is unsafe to load from")),
        _ => None,
    };
    let refused = err.chain().find_map(|cause| {
        if let Some(error) = cause.downcast_ref::<PluginLoadError>() {
            return directory(error);
        }
        let listing = cause.downcast_ref::<commands::plugins::DidNotLoad>()?;
        listing.0.iter().find_map(directory)
    });
    match refused {
        Some((dir, why)) if from_environment.contains(&dir) => err.context(format!(
            "a plugin directory of CRPO_PLUGIN_PATH (colon-separated) {why}"
        )),
        _ => err,
    }
}

/// The name of a command that runs in one process (not `train`, nor the read-only `doctor`
/// and `plugins`, nor the reward worker a training rank starts).
fn single_process_name(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Train(_) | Command::Doctor(_) | Command::Plugins(_) | Command::RewardWorker => return None,
        Command::Data(_) => "data",
        Command::New(_) => "new",
        Command::Score(_) => "score",
        Command::InitModel(_) => "init-model",
        Command::Generate(_) => "generate",
        Command::MergeLora(_) => "merge-lora",
        Command::Sft(_) => "sft",
        Command::Report(_) => "report",
        Command::Eval(_) => "eval",
        Command::Demo(_) => "demo",
        Command::BenchRollout(_) => "bench-rollout",
        Command::DemoData(_) => "demo-data",
    })
}

fn run_command(command: Command, dirs: &[PathBuf]) -> anyhow::Result<()> {
    if let Some(name) = single_process_name(&command) {
        crpo_host::distributed::launch::refuse_a_distributed_launch(name, |var| std::env::var(var).ok())?;
    }
    match command {
        Command::Doctor(args) => commands::doctor::run(dirs, &args),
        Command::Plugins(args) => commands::plugins::run(dirs, &args),
        Command::Data(args) => commands::data::run(dirs, &args),
        Command::New(args) => commands::new::run(dirs, &args),
        Command::Score(args) => commands::score::run(&PluginRegistry::load(dirs)?, &args),
        Command::InitModel(args) => commands::model::init_model(&PluginRegistry::load(dirs)?, &args),
        Command::MergeLora(args) => commands::merge_lora::run(&args),
        Command::Generate(args) => commands::model::generate(&PluginRegistry::load(dirs)?, &args),
        Command::Train(args) => commands::train::train(dirs, &args),
        Command::Sft(args) => commands::train::sft(dirs, &args),
        Command::Eval(args) => commands::eval::run(dirs, &args),
        Command::Report(args) => commands::report::run(&args),
        Command::DemoData(args) => commands::demo_data::run(&args),
        Command::Demo(args) => commands::demo::run(dirs, &args),
        Command::RewardWorker => crpo_host::plugins::isolation::serve_worker(),
        Command::BenchRollout(args) => commands::bench_rollout::run(&PluginRegistry::load(dirs)?, &args),
    }
}
