//! Where a run starts: fresh into a directory holding nothing of an earlier run, or resumed
//! from its newest usable checkpoint with the same config (up to the keys that may change).
//!
//! Nothing of an earlier run is overwritten without `--resume`; a resume never silently
//! starts over, never silently changes what the run means, and falls back past a corrupt
//! checkpoint with a warning.

use super::checkpoint::{self, TrainerState};
use super::config::RunConfig;
use super::input_fingerprints::InputFingerprints;
use super::metrics::{flatten, METRICS_FILE, SAMPLES_FILE};
use super::optimizer::{AdamW, AdamWSettings};
use super::run_lock::RunLock;
use crate::plugins::PluginRegistry;
use crate::rollout::Policy;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The policy and optimizer a run starts with, and the state it resumes (with
/// `start.resume`: the newest usable checkpoint's; else the configured model, a fresh AdamW).
pub fn policy_and_optimizer(
    registry: &PluginRegistry,
    config: &RunConfig,
    (run_dir, setting): (&Path, &str),
    start_mode: StartMode,
    mode: &str,
    settings: AdamWSettings,
) -> anyhow::Result<(Option<TrainerState>, Policy, AdamW, RunLock, InputFingerprints)> {
    // A start that stopped before it logged a step (killed while loading the model, say)
    // leaves the lock file, and its run_info.json once past its checks.
    let started_before = run_dir.join(super::run_lock::LOCK_FILE).exists()
        || run_dir.join(super::run_info::RUN_INFO_FILE).exists();
    // Taken before anything in the directory is read or tidied: another run may be using it.
    let made = super::run_lock::missing_directories(run_dir);
    let lock = super::run_lock::lock(run_dir, setting)?;
    let started = start_policy_and_optimizer(
        registry,
        config,
        (run_dir, setting),
        start_mode,
        mode,
        settings,
        started_before,
    );
    if started.is_err() {
        // A start refused before it wrote anything leaves no directory it made (a lock alone,
        // an empty parent).
        super::run_lock::remove_made_directories(&made);
    }
    let (state, policy, optimizer, inputs) = started?;
    Ok((state, policy, optimizer, lock, inputs))
}

/// [`policy_and_optimizer`] once the run directory is locked.
fn start_policy_and_optimizer(
    registry: &PluginRegistry,
    config: &RunConfig,
    (run_dir, setting): (&Path, &str),
    start_mode: StartMode,
    mode: &str,
    settings: AdamWSettings,
    started_before: bool,
) -> anyhow::Result<(Option<TrainerState>, Policy, AdamW, InputFingerprints)> {
    let inputs = InputFingerprints::of(config, mode)?;
    // Fresh LoRA adapters are drawn from torch's generator: from the run's seed, as
    // transformers' Trainer seeds before it builds the model, so a run is reproducible.
    tch::manual_seed(config.run.seed as i64);
    let resumed = start(
        run_dir,
        (config, &inputs),
        start_mode,
        started_before,
        mode,
        setting,
        |dir| {
            let policy = Policy::load(registry, &config.model, &dir.join(checkpoint::MODEL_DIR))?;
            let mut optimizer = AdamW::new(policy.parameters(), settings);
            optimizer.load(&dir.join(checkpoint::OPTIMIZER_FILE))?;
            Ok((policy, optimizer))
        },
    )?;
    Ok(match resumed {
        Some(resumed) => {
            let (policy, optimizer) = resumed.loaded;
            (Some(resumed.state), policy, optimizer, inputs)
        }
        None => {
            let policy = Policy::load(registry, &config.model, &config.model.path)?;
            let optimizer = AdamW::new(policy.parameters(), settings);
            (None, policy, optimizer, inputs)
        }
    })
}

/// How a command was asked to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartMode {
    /// `--resume`: continue from the newest usable checkpoint.
    pub resume: bool,
    /// `--allow-config-change`: resume although keys that change the run's meaning differ.
    pub allow_config_change: bool,
}

/// Where the run resumes from.
pub struct Resumed<T> {
    pub state: TrainerState,
    pub dir: PathBuf,
    /// What the caller loaded from the checkpoint (model, optimizer).
    pub loaded: T,
}

/// Keys that may differ on resume: they change how long the run goes and what it records,
/// not what a step computes.
const SAFE_KEYS: &[&str] = &[
    // Where the inputs are: what they hold is compared by sha256 (the fingerprints), and a
    // resumed run takes its weights from the checkpoint, so a moved project still resumes.
    "model.path",
    "data.path",
    "data.eval_path",
    "model.lora.adapter",
    "run.output_dir",
    "run.max_steps",
    "run.save_steps",
    "run.save_total_limit",
    "run.sample_steps",
    "run.num_completions_to_print",
    "run.log_completions",
    "run.logging_steps",
    "run.eval_steps",
    "run.eval_decodings",
    "run.plugin_dirs",
    "run.plugin_pins",
    "run.allow_insecure_plugins",
    "run.max_nonfinite_steps",
    "run.memory_check",
    "run.ddp_timeout",
    "algorithm.kl_warning_threshold",
    "algorithm.group_by_length",
    "algorithm.rollout_batch_size",
    "algorithm.max_tokens_per_micro_batch",
    "algorithm.gradient_checkpointing",
    "sft.output_dir",
];

/// Files of an earlier run that a fresh start would overwrite.
const RUN_FILES: &[&str] = &[METRICS_FILE, SAMPLES_FILE];

/// Prepares `run_dir` for `mode` (`train` or `sft`) and returns the checkpoint to resume
/// from, if any: newest first, each tried with `load` until one loads (a corrupt one is
/// passed over with a warning). `setting` names the config key that moves the run; `inputs`
/// are what the run reads now, compared with what the checkpoint read. `started_before`: a
/// run had started in `run_dir` before this one — `--resume` where it logged no step starts
/// from the beginning, where none started it is a mistyped directory.
pub fn start<T>(
    run_dir: &Path,
    (config, inputs): (&RunConfig, &InputFingerprints),
    start: StartMode,
    started_before: bool,
    mode: &str,
    setting: &str,
    mut load: impl FnMut(&Path) -> anyhow::Result<T>,
) -> anyhow::Result<Option<Resumed<T>>> {
    super::run_lock::refuse_an_unfit_run_dir(run_dir, setting)?;
    refuse_inputs_among_run_files(config, run_dir, setting)?;
    checkpoint::remove_temporaries(run_dir)?;
    let checkpoints = checkpoint::list(run_dir)?;
    if checkpoints.is_empty() {
        remove_empty_run_files(run_dir)?;
    }
    let earlier_files: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|f| run_dir.join(f).exists())
        .collect();
    let info = run_dir.join(super::run_info::RUN_INFO_FILE);
    if info.exists() && !super::run_info::is_run_info(&info) {
        bail!(
            "{} is not a crpo run's run_info.json, and a run writes its own there: choose another {setting} (it would be lost)",
            info.display()
        );
    }
    if !start.resume {
        if let Some((_, latest)) = checkpoints.last() {
            bail!(
                "{} already has checkpoints (latest {}): pass --resume to continue it, or choose another {setting}",
                run_dir.display(),
                latest.display()
            );
        }
        if !earlier_files.is_empty() {
            bail!(
                "{} holds an earlier run's {} and no checkpoint to continue it from: remove them (they are kept, not replaced), or choose another {setting}",
                run_dir.display(),
                earlier_files.join(" and ")
            );
        }
        return Ok(None);
    }
    if checkpoints.is_empty() {
        // A run stopped before it logged a step (a job killed at start-up, resubmitted with
        // --resume as a requeue script does): nothing to continue, nothing to lose.
        if started_before && earlier_files.is_empty() {
            tracing::warn!(
                "--resume: {} has no checkpoint and no step logged (the run there stopped before its first): starting from the beginning",
                run_dir.display()
            );
            return Ok(None);
        }
        if earlier_files.is_empty() {
            bail!(
                "--resume: {} has no checkpoint to resume from (no run started there); start without --resume",
                run_dir.display()
            );
        }
        bail!(
            "--resume: {} has no checkpoint to resume from, only the steps an earlier start logged before it stopped ({}): remove them to start over (they are kept, not replaced), or choose another {setting}",
            run_dir.display(),
            earlier_files.join(" and ")
        );
    }
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    for (named_step, dir) in checkpoints.iter().rev() {
        let state = match checkpoint::read_state(dir).and_then(|state| consistent(state, *named_step)) {
            Ok(state) => state,
            Err(error) => {
                failures.push((dir.clone(), format!("{error:#}")));
                continue;
            }
        };
        if state.mode != mode {
            bail!(
                "{} is a checkpoint of `{}`, not of `{mode}`",
                dir.display(),
                state.mode
            );
        }
        // Refused before loading: a changed config (LoRA added, another model) would otherwise
        // read as a checkpoint that does not fit. An allowed change is recorded once one loads.
        let saved = match saved_config(dir) {
            Ok(saved) => saved,
            Err(error) => {
                failures.push((dir.clone(), format!("{error:#}")));
                continue;
            }
        };
        refuse_lora_changes(dir, &saved, config)?;
        if !start.allow_config_change && files_present(dir).is_ok() {
            check_config(run_dir, dir, &state, (&saved, config, inputs), mode, false)?;
        }
        match files_present(dir).and_then(|()| load(dir)) {
            Ok(loaded) => {
                for (failed, why) in &failures {
                    let moved = checkpoint::set_aside(failed)?;
                    tracing::warn!(
                        "checkpoint {} is unusable ({why}); moved to {} and resuming from the earlier {}",
                        failed.display(),
                        moved.display(),
                        dir.display()
                    );
                }
                if start.allow_config_change {
                    check_config(run_dir, dir, &state, (&saved, config, inputs), mode, true)?;
                }
                tracing::info!("resuming from {} (step {})", dir.display(), state.step);
                return Ok(Some(Resumed {
                    state,
                    dir: dir.clone(),
                    loaded,
                }));
            }
            Err(error) => failures.push((dir.clone(), format!("{error:#}"))),
        }
    }
    let list: Vec<String> = failures
        .iter()
        .map(|(dir, why)| format!("  {}: {why}", dir.display()))
        .collect();
    bail!(
        "--resume: no checkpoint of {} is usable:\n{}",
        run_dir.display(),
        list.join("\n")
    )
}

/// A data file where the run writes its metrics or samples would be appended to (or, were it
/// taken for an earlier run's, the user told to remove it).
fn refuse_inputs_among_run_files(config: &RunConfig, run_dir: &Path, setting: &str) -> anyhow::Result<()> {
    let inputs = [
        ("data.path", Some(&config.data.path)),
        ("data.eval_path", config.data.eval_path.as_ref()),
    ];
    for (key, path) in inputs {
        let Some(input) = path.and_then(|p| p.canonicalize().ok()) else {
            continue;
        };
        for file in RUN_FILES {
            if run_dir
                .join(file)
                .canonicalize()
                .is_ok_and(|written| written == input)
            {
                bail!(
                    "{key} {} is the {file} this run writes in its directory {}: move the data elsewhere or choose another {setting}",
                    input.display(),
                    run_dir.display()
                );
            }
        }
    }
    Ok(())
}

/// Removes metrics and samples files a run left empty (it stopped before its first step was
/// recorded, e.g. refused by a check at start-up): they hold nothing a user could lose, and
/// leaving them would refuse every start into the directory.
fn remove_empty_run_files(run_dir: &Path) -> anyhow::Result<()> {
    for file in RUN_FILES {
        let path = run_dir.join(file);
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove the empty {}", path.display()))?;
        }
    }
    Ok(())
}

/// Whether the checkpoint's files are all there (their contents are checked by loading).
fn files_present(dir: &Path) -> anyhow::Result<()> {
    for needed in [
        checkpoint::MODEL_DIR,
        checkpoint::OPTIMIZER_FILE,
        checkpoint::CONFIG_FILE,
    ] {
        if !dir.join(needed).exists() {
            bail!("{} is missing", dir.join(needed).display());
        }
    }
    checkpoint::check_manifest(dir)
}

/// One key whose value differs between the checkpoint's config and this one.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChange {
    pub key: String,
    pub was: Value,
    pub now: Value,
}

/// Compares `config` with the checkpoint's: safe keys may change (logged); others are refused
/// by name with both values unless `allow`, and an allowed change is recorded in
/// `<run>/resumes.jsonl`.
/// A checkpoint's trainer state, if it agrees with the checkpoint's name and can be resumed:
/// a state edited or mixed up with another checkpoint's is not trusted (its step would cut
/// the run's metrics back to it, and its checkpoints would clash with those on disk).
fn consistent(state: TrainerState, named_step: usize) -> anyhow::Result<TrainerState> {
    if state.step != named_step {
        bail!(
            "its trainer state says step {}, its name step {named_step}",
            state.step
        );
    }
    if state.world_size == 0 || state.optimizer_updates < 0 {
        bail!(
            "its trainer state is not one a run writes (world_size {}, optimizer updates {})",
            state.world_size,
            state.optimizer_updates
        );
    }
    Ok(state)
}

/// The checkpoint's weights or adapters are what a run continues with: LoRA added, removed
/// or reshaped in the config would be recorded but not applied, so no flag allows it.
fn refuse_lora_changes(checkpoint_dir: &Path, saved: &RunConfig, config: &RunConfig) -> anyhow::Result<()> {
    let continues = "but a run continues with the weights or adapters its checkpoint holds, even with --allow-config-change";
    match (&saved.model.lora, &config.model.lora) {
        (Some(_), None) => bail!(
            "--resume: the checkpoint ({}) trained LoRA adapters ([model.lora]) and this config has no [model.lora], {continues}: restore the table (to train the whole model, start a new run from a model merged with crpo-host merge-lora)",
            checkpoint_dir.display()
        ),
        (None, Some(_)) => bail!(
            "--resume: the checkpoint ({}) trained the whole model and this config adds [model.lora], {continues}: remove the table (to train adapters, start a new run with model.path naming the checkpoint's model/)",
            checkpoint_dir.display()
        ),
        _ => {}
    }
    let changes = config_changes(saved, config)?;
    let reshaped: Vec<String> = changes
        .iter()
        .filter(|c| {
            // The adapter a run started from: its checkpoint holds the adapters it continues with.
            c.key.starts_with("model.lora.")
                && !matches!(c.key.as_str(), "model.lora.lora_dropout" | "model.lora.adapter")
        })
        .map(|change| {
            format!(
                "{} is {} in the checkpoint and {} now",
                change.key, change.was, change.now
            )
        })
        .collect();
    if !reshaped.is_empty() {
        bail!(
            "--resume: {} (checkpoint {}), {continues}: restore {} (to train other adapters, start a new run, with model.lora.adapter naming this one's)",
            reshaped.join("; "),
            checkpoint_dir.display(),
            if reshaped.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

/// The config a checkpoint was trained with.
fn saved_config(checkpoint_dir: &Path) -> anyhow::Result<RunConfig> {
    let path = checkpoint_dir.join(checkpoint::CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a config this version reads", path.display()))
}

fn check_config(
    run_dir: &Path,
    checkpoint_dir: &Path,
    state: &TrainerState,
    (saved, config, inputs): (&RunConfig, &RunConfig, &InputFingerprints),
    mode: &str,
    allow: bool,
) -> anyhow::Result<()> {
    let mut changes = config_changes(saved, config)?;
    if let Some(was) = &state.inputs {
        changes.extend(inputs.changes_since(was));
    }
    let (safe, meaningful): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| is_safe(&c.key, mode));
    for change in &safe {
        tracing::info!(
            "resume: {} changed from {} to {}",
            change.key,
            change.was,
            change.now
        );
    }
    if meaningful.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = meaningful
        .iter()
        .map(|c| format!("  {}: {} in the checkpoint, {} now", c.key, c.was, c.now))
        .collect();
    if !allow {
        bail!(
            "--resume: the config differs from the one {} was trained with:\n{}\nrestore those values, or pass --allow-config-change to continue with the new ones (recorded in the run)",
            checkpoint_dir.display(),
            listed.join("\n")
        );
    }
    tracing::warn!(
        "resume with --allow-config-change; the run now differs from its checkpoint:\n{}",
        listed.join("\n")
    );
    let record = json!({
        "step": state.step,
        "checkpoint": checkpoint_dir.display().to_string(),
        "allow_config_change": true,
        "changes": meaningful
            .iter()
            .map(|c| json!({"key": c.key, "was": c.was, "now": c.now}))
            .collect::<Vec<_>>(),
    });
    let log = run_dir.join(RESUMES_FILE);
    let mut line = record.to_string();
    line.push('\n');
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .with_context(|| format!("cannot record the config change in {}", log.display()))
}

/// Where resumes with `--allow-config-change` are recorded.
pub const RESUMES_FILE: &str = "resumes.jsonl";

fn is_safe(key: &str, mode: &str) -> bool {
    // Only what the command reads matters: `train` ignores [sft] and [eval], `sft` [eval].
    SAFE_KEYS
        .iter()
        .any(|safe| key == *safe || key.starts_with(&format!("{safe}.")))
        || key.starts_with("eval.")
        || (mode == "train" && key.starts_with("sft."))
}

/// Every dotted key whose value differs (paths compared after resolving them).
pub fn config_changes(was: &RunConfig, now: &RunConfig) -> anyhow::Result<Vec<ConfigChange>> {
    let (mut was, mut now) = (was.clone(), now.clone());
    for config in [&mut was, &mut now] {
        // One key wherever the config set it (earlier configs: [data]).
        config.algorithm.max_prompt_length = Some(config.max_prompt_length());
        config.data.max_prompt_length = None;
        // Checkpoints record absolute paths; a config may give them relative.
        for path in [
            &mut config.model.path,
            &mut config.data.path,
            &mut config.run.output_dir,
        ] {
            *path = canonical(path);
        }
        config
            .run
            .plugin_dirs
            .iter_mut()
            .for_each(|path| *path = canonical(path));
        let optional = [
            config.data.eval_path.as_mut(),
            config.sft.output_dir.as_mut(),
            config.model.lora.as_mut().and_then(|lora| lora.adapter.as_mut()),
        ];
        for path in optional.into_iter().flatten() {
            *path = canonical(path);
        }
        // A list of modules or layers selects a set (PEFT makes it one): its order is no change.
        if let Some(lora) = config.model.lora.as_mut() {
            use crpo_policy_sdk::lora::{LayerIndices, TargetModules};
            let names = [Some(&mut lora.target_modules), lora.exclude_modules.as_mut()];
            for modules in names.into_iter().flatten() {
                if let TargetModules::Names(names) = modules {
                    names.sort();
                    names.dedup();
                }
            }
            if let Some(LayerIndices::Many(layers)) = lora.layers_to_transform.as_mut() {
                layers.sort_unstable();
                layers.dedup();
            }
        }
    }
    let (was, now) = (
        flatten(&serde_json::to_value(&was)?, "."),
        flatten(&serde_json::to_value(&now)?, "."),
    );
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| was.get(*k) != now.get(*k))
        .map(|k| ConfigChange {
            key: k.clone(),
            was: was.get(k).cloned().unwrap_or(Value::Null),
            now: now.get(k).cloned().unwrap_or(Value::Null),
        })
        .collect())
}

/// The file a path names (absolute even where it does not exist yet).
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
        [model]
        path = "m"
        [data]
        path = "d.jsonl"
        [reward]
        preset = "crpo"
    "#;

    #[test]
    fn changes_are_named_by_dotted_key_and_split_safe_from_meaningful() {
        let was = RunConfig::parse(CONFIG).unwrap();
        let mut now = was.clone();
        now.run.seed = 7;
        now.run.max_steps = 500;
        now.algorithm.learning_rate = 1e-3;
        now.sft.epochs = 3;
        let changes = config_changes(&was, &now).unwrap();
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "algorithm.learning_rate",
                "run.max_steps",
                "run.seed",
                "sft.num_train_epochs"
            ]
        );
        let seed = changes.iter().find(|c| c.key == "run.seed").unwrap();
        assert_eq!((seed.was.clone(), seed.now.clone()), (json!(0), json!(7)));
        let meaningful: Vec<&str> = keys.iter().copied().filter(|k| !is_safe(k, "train")).collect();
        assert_eq!(meaningful, ["algorithm.learning_rate", "run.seed"]);
        assert!(
            !is_safe("sft.num_train_epochs", "sft"),
            "sft reads its own section"
        );
    }

    #[test]
    fn lora_added_or_removed_is_named_as_such() {
        let full = RunConfig::parse(CONFIG).unwrap();
        let mut adapted = full.clone();
        adapted.model.lora = Some(crpo_policy_sdk::lora::LoraConfig::new(4, 8.0));
        let dir = Path::new("run/checkpoints/step-000001");
        let removed = refuse_lora_changes(dir, &adapted, &full).unwrap_err().to_string();
        assert!(
            removed.contains("trained LoRA adapters") && removed.contains("has no [model.lora]"),
            "{removed}"
        );
        let added = refuse_lora_changes(dir, &full, &adapted).unwrap_err().to_string();
        assert!(added.contains("adds [model.lora]"), "{added}");
        let mut reshaped = adapted.clone();
        reshaped.model.lora.as_mut().unwrap().r = 8;
        let reshaped = refuse_lora_changes(dir, &adapted, &reshaped)
            .unwrap_err()
            .to_string();
        assert!(
            reshaped.contains("model.lora.r is 4 in the checkpoint"),
            "{reshaped}"
        );
        assert!(refuse_lora_changes(dir, &adapted, &adapted).is_ok());
        // Every key changed is named, not the first alone.
        let mut rescaled = adapted.clone();
        let lora = rescaled.model.lora.as_mut().unwrap();
        (lora.lora_alpha, lora.use_rslora) = (16.0, true);
        let rescaled = refuse_lora_changes(dir, &adapted, &rescaled)
            .unwrap_err()
            .to_string();
        assert!(
            rescaled.contains("model.lora.lora_alpha is 8.0 in the checkpoint and 16.0 now")
                && rescaled.contains("model.lora.use_rslora is false in the checkpoint and true now"),
            "{rescaled}"
        );
        // A list of modules or layers is a set: its order is no change.
        let listed = |modules: &[&str], layers: Vec<usize>| {
            let mut config = adapted.clone();
            let lora = config.model.lora.as_mut().unwrap();
            lora.target_modules =
                crpo_policy_sdk::lora::TargetModules::Names(modules.iter().map(|m| m.to_string()).collect());
            lora.layers_to_transform = Some(crpo_policy_sdk::lora::LayerIndices::Many(layers));
            config
        };
        let was = listed(&["q_proj", "v_proj", "down_proj"], vec![0, 1]);
        assert!(
            refuse_lora_changes(dir, &was, &listed(&["down_proj", "v_proj", "q_proj"], vec![1, 0])).is_ok()
        );
        assert!(refuse_lora_changes(dir, &was, &listed(&["q_proj", "v_proj"], vec![0, 1])).is_err());
    }

    #[test]
    fn where_the_inputs_are_is_a_safe_change() {
        let was = RunConfig::parse(CONFIG).unwrap().with_absolute_paths();
        let mut moved = was.clone();
        moved.model.path = PathBuf::from("/elsewhere/m");
        moved.data.path = PathBuf::from("/elsewhere/d.jsonl");
        let changes = config_changes(&was, &moved).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(
            changes.iter().all(|c| is_safe(&c.key, "train")),
            "{:?}",
            changes.len()
        );
    }

    #[test]
    fn a_checkpoints_absolute_paths_equal_the_relative_ones_they_came_from() {
        let was = RunConfig::parse(&format!("{CONFIG}\n[run]\nplugin_dirs = [\"p\"]\n")).unwrap();
        let recorded = was.with_absolute_paths();
        assert!(recorded.model.path.is_absolute() && recorded.run.output_dir.is_absolute());
        assert!(recorded.run.plugin_dirs[0].is_absolute());
        assert!(config_changes(&recorded, &was).unwrap().is_empty());
    }

    #[test]
    fn options_tables_compare_key_by_key() {
        let was = RunConfig::parse(&format!("{CONFIG}\n[[reward.objectives]]\nplugin = \"x\"\n")).unwrap();
        let now = RunConfig::parse(&format!(
            "{CONFIG}\n[[reward.objectives]]\nplugin = \"x\"\noptions = {{ k = 2 }}\n"
        ))
        .unwrap();
        let changes = config_changes(&was, &now).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].key, "reward.objectives");
    }
}
