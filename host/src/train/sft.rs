//! Cold-start supervised fine-tuning (the paper's recipe: SFT, then CRPO): next-token loss
//! on the reference completion's tokens only, with the trainer's checkpoints and resume.
//! The result is published as `<sft dir>/model`, a Hugging Face directory.

use super::checkpoint::{self, TrainerState};
use super::config::RunConfig;
use super::data::{load_splits, next_indices, DataCursor, PromptFormat};
use super::maths::masked_mean;
use super::metrics::{JsonlLog, METRICS_FILE};
use super::optimizer::{learning_rate, AdamWSettings};
use super::resume::{self, StartMode};
use super::tensorboard::{scalars_of, EventWriter};
use crate::interrupt::{Interrupt, Interrupted};
use crate::plugins::PluginRegistry;
use crate::rollout::Policy;
use anyhow::{bail, Context};
use crpo_sdk::Example;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const MODE: &str = "sft";

pub struct SftSummary {
    pub run_dir: PathBuf,
    pub model_dir: PathBuf,
    pub steps: usize,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
}

/// Where `sft` writes: `sft.output_dir`, else `<run.output_dir>/sft`.
pub fn sft_dir(config: &RunConfig) -> PathBuf {
    config
        .sft
        .output_dir
        .clone()
        .unwrap_or_else(|| config.run.output_dir.join("sft"))
}

/// Each reference ends with an EOS, so that the model learns to stop: a tokenizer without one
/// is refused before the run starts (the one the policy loads: an adapter directory's own, else
/// its base's; one that cannot be read here is the load's to name).
fn refuse_a_tokenizer_without_eos(config: &RunConfig) -> anyhow::Result<()> {
    let model = &config.model.path;
    let dir = if model.join("tokenizer.json").exists() {
        model.clone()
    } else {
        super::memory_plan::planned_model(config).0
    };
    match crate::rollout::tokenizer::ChatTokenizer::from_dir(&dir) {
        Ok(tokenizer) if tokenizer.turn_end_id().is_none() => Err(no_eos(&dir)),
        _ => Ok(()),
    }
}

fn no_eos(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: no EOS token (eos_token_id in generation_config.json or config.json, eos_token in tokenizer_config.json): sft ends each reference with one so that the model learns to stop; set eos_token in tokenizer_config.json",
        dir.display()
    )
}

/// Fine-tunes to `sft.epochs`; `interrupt` (SIGTERM, SIGINT) stops it after a step with a
/// checkpoint.
pub fn run(
    registry: &PluginRegistry,
    config: &RunConfig,
    start: StartMode,
    interrupt: Option<&Interrupt>,
) -> anyhow::Result<SftSummary> {
    let run_dir = sft_dir(config);
    let settings = AdamWSettings {
        beta1: config.algorithm.adam_beta1,
        beta2: config.algorithm.adam_beta2,
        eps: config.algorithm.adam_epsilon,
        weight_decay: config.sft.weight_decay,
    };
    let work = format!(
        "{} epoch(s) of {}'s reference completions in batches of {}",
        config.sft.epochs,
        config.data.path.display(),
        config.sft.batch_size
    );
    tracing::info!("{}", super::startup::line(MODE, config, &work, &run_dir));
    // A resume from a checkpoint needs no model.path (a full fine-tuning: it may have moved);
    // what does need it names it as it reads it.
    if !start.resume {
        crate::rollout::policy::require_local_model(&config.model.path, "model.path")?;
    }
    super::preflight::refuse_before_loading(
        config,
        super::memory_plan::Phase::Sft,
        super::preflight::MemoryCheck::ThisProcess,
    )?;
    refuse_a_tokenizer_without_eos(config)?;
    super::run_lock::refuse_a_model_as_run_dir(config, &run_dir, "sft.output_dir")?;
    refuse_replacing_saved_models(config, &run_dir, start)?;
    let (state, policy, mut optimizer, _run_lock, inputs) = resume::policy_and_optimizer(
        registry,
        config,
        (&run_dir, "sft.output_dir"),
        start,
        MODE,
        settings,
    )?;
    if config.sft.gradient_checkpointing {
        policy.set_gradient_checkpointing("sft.gradient_checkpointing", true)?;
    }
    if state.is_some() {
        super::position_budget::check_loaded(&policy, config, super::memory_plan::Phase::Sft)?;
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    super::run_info::write(&run_dir, MODE, &policy, registry, 1)?;
    let train = load_splits(registry, config)?.train;
    let blank = train
        .iter()
        .filter(|e| e.reference_completion.is_some() && e.usable_reference().is_none())
        .count();
    if blank > 0 {
        tracing::warn!("{blank} examples have a blank reference completion: left out of fine-tuning");
    }
    let examples: Vec<Example> = train
        .into_iter()
        .filter(|e| e.usable_reference().is_some())
        .collect();
    if examples.is_empty() {
        bail!(
            "{} has no reference completions to fine-tune on: the `{}` reader gave none (MedQA-layout records carry them as `reference_completion`; the `jsonl` reader maps one from any field, docs/datasets.md)",
            config.data.path.display(),
            config.data.dataset
        );
    }
    let format = PromptFormat::from_config(config, registry)?;
    let examples = format.admit(&policy.tokenizer, examples, "fine-tuning")?;
    let sft = &config.sft;
    if sft.batch_size > examples.len() {
        let held_out = if config.data.eval_path.is_none() && config.data.eval_fraction > 0.0 {
            format!(
                " (data.eval_fraction = {} of the file is held out for evaluation)",
                config.data.eval_fraction
            )
        } else {
            String::new()
        };
        bail!(
            "sft.per_device_train_batch_size = {} is more than the {} examples to fine-tune on{held_out}: a batch would hold each of them several times; set it to at most {}",
            sft.batch_size,
            examples.len(),
            examples.len()
        );
    }
    let total_steps = sft.epochs * examples.len().div_ceil(sft.batch_size);
    // The warm-up reaches the full rate at update `warmup_steps`.
    if sft.warmup_steps > total_steps {
        tracing::warn!(
            "sft.warmup_steps = {} is more than the {total_steps} updates of this fine-tuning: the learning rate never reaches sft.learning_rate",
            sft.warmup_steps
        );
    }
    let eos = policy
        .tokenizer
        .turn_end_id()
        .ok_or_else(|| no_eos(&policy.source))? as i64;
    let metrics = JsonlLog::open(&run_dir, METRICS_FILE, state.as_ref().map(|s| s.step))?;
    let mut events = EventWriter::create(&run_dir, state.as_ref().map(|s| s.step + 1))?;
    let mut cursor = state.as_ref().map_or_else(DataCursor::default, |s| s.cursor);
    let mut step = state.as_ref().map_or(0, |s| s.step);
    let (mut first_loss, mut last_loss) = (None, None);
    let progress = super::progress::bar(total_steps as u64, step as u64, "sft", "updates");
    let config_toml = toml::to_string(&config.with_absolute_paths())?;
    // Examples whose reference was cut at sft.max_completion_length.
    let mut cut = std::collections::BTreeSet::new();
    while step < total_steps {
        let started = Instant::now();
        let indices = next_indices(
            &mut cursor,
            examples.len(),
            sft.batch_size,
            config.run.seed,
            config.data.shuffle,
        );
        let (mut prompts, mut completions) = (Vec::new(), Vec::new());
        for &i in &indices {
            let prompt = format
                .render(&policy.tokenizer, &examples[i])?
                .with_context(|| {
                    format!(
                        "example `{}`: its prompt is over algorithm.max_prompt_length",
                        examples[i].id
                    )
                })?
                .ids;
            let reference = examples[i].usable_reference().unwrap_or_default();
            let (ids, was_cut) = reference_ids(
                policy.tokenizer.encode(reference)?,
                eos,
                sft.max_completion_length,
            );
            if was_cut && cut.insert(i) && cut.len() == 1 {
                tracing::warn!(
                    "example `{}`'s reference completion is over sft.max_completion_length ({}): trained on its first tokens, without EOS (each such example is counted at the end)",
                    examples[i].id,
                    sft.max_completion_length
                );
            }
            prompts.push(prompt);
            completions.push(ids);
        }
        let scored = policy.logprobs(&prompts, &completions, false)?;
        let loss = -masked_mean(&scored.logprobs, &scored.mask);
        loss.backward();
        let grad_norm = optimizer.clip_grad_norm(sft.max_grad_norm);
        if !grad_norm.is_finite() {
            bail!(
                "sft step {}: the gradient norm is {grad_norm} (try a lower sft.learning_rate)",
                step + 1
            );
        }
        let lr = learning_rate(
            sft.learning_rate,
            sft.lr_scheduler_type
                .unwrap_or(config.algorithm.lr_scheduler_type),
            sft.warmup_steps,
            step,
            total_steps,
        );
        if !optimizer.step(lr) {
            bail!(
                "sft step {}: the update made weights non-finite (learning rate {lr:.3e}); nothing was checkpointed: lower sft.learning_rate",
                step + 1
            );
        }
        optimizer.zero_grad();
        step += 1;
        let loss = loss.double_value(&[]);
        first_loss.get_or_insert(loss);
        last_loss = Some(loss);
        let tokens: usize = prompts.iter().chain(&completions).map(Vec::len).sum();
        let seconds = started.elapsed().as_secs_f64();
        let record = json!({
            "step": step, "loss": loss, "learning_rate": lr, "grad_norm": grad_norm,
            "epoch": cursor.epoch, "train_tokens_per_s": tokens as f64 / seconds.max(1e-9), "step_time_s": seconds,
        });
        metrics.append(&record)?;
        events.scalars(step, &scalars_of("sft", &record))?;
        if super::progress::logs_step(step, total_steps, config.run.logging_steps) {
            tracing::info!("sft step {step}/{total_steps}: loss {loss:.4}, lr {lr:.2e}, {seconds:.2} s");
        }
        progress.inc(1);
        if step == 1 {
            // The first step carries the start-up costs: the ETA starts after it.
            progress.reset_eta();
        }
        let save_steps = config.run.save_steps;
        let signal = interrupt.and_then(Interrupt::received);
        if save_steps > 0 && (step.is_multiple_of(save_steps) || step == total_steps || signal.is_some()) {
            let state = TrainerState {
                world_size: 1,
                step,
                optimizer_updates: optimizer.steps,
                cursor,
                seed: config.run.seed,
                mode: MODE.into(),
                nonfinite_steps: 0,
                inputs: Some(inputs.clone()),
            };
            checkpoint::save(
                &run_dir,
                &state,
                &config_toml,
                config.run.save_total_limit,
                |dir| {
                    policy.save(&dir.join(checkpoint::MODEL_DIR))?;
                    optimizer.save(&dir.join(checkpoint::OPTIMIZER_FILE))
                },
            )?;
        }
        if let Some(signal) = signal {
            progress.finish_and_clear();
            return Err(Interrupted::after(signal, &format!("sft step {step}"), save_steps > 0).into());
        }
    }
    progress.finish_and_clear();
    if !cut.is_empty() {
        tracing::warn!(
            "{} of {} examples had a reference completion over sft.max_completion_length ({}): trained on their first tokens, without EOS",
            cut.len(),
            examples.len(),
            sft.max_completion_length
        );
    }
    let model_dir = run_dir.join(checkpoint::MODEL_DIR);
    publish_model(&policy, &model_dir)?;
    Ok(SftSummary {
        run_dir,
        model_dir,
        steps: step,
        first_loss,
        last_loss,
    })
}

/// The ids a reference completion trains on: its tokens and EOS, cut at `max` tokens — EOS
/// and all, as TRL cuts (a cut reference does not end there, and ending it with EOS would
/// teach the model to stop mid-answer) — and whether it was cut.
fn reference_ids(mut ids: Vec<i64>, eos: i64, max: usize) -> (Vec<i64>, bool) {
    ids.push(eos);
    let cut = ids.len() > max;
    ids.truncate(max);
    (ids, cut)
}

/// The fine-tuned model replaces `<sft.output_dir>/model` at the end: that may not be (or
/// hold) the base model or the adapter the run starts from, and a fresh run may not find a
/// model there already (a user's, or another run's).
fn refuse_replacing_saved_models(config: &RunConfig, run_dir: &Path, start: StartMode) -> anyhow::Result<()> {
    let model_dir = run_dir.join(checkpoint::MODEL_DIR);
    let adapter = config.model.lora.as_ref().and_then(|lora| lora.adapter.as_ref());
    for (input, name) in [
        (Some(&config.model.path), "the base model (model.path)"),
        (adapter, "the adapter to start from (model.lora.adapter)"),
    ] {
        if let Some(input) = input {
            crate::atomic_file::refuse_replacing(&model_dir, "sft.output_dir", input, name)?;
        }
    }
    // A resume from a checkpoint replaces the model its own run wrote; a start from the
    // beginning (--resume where no checkpoint is) replaces nothing.
    let continues = start.resume && !checkpoint::list(run_dir)?.is_empty();
    if !continues && crate::atomic_file::is_occupied(&model_dir) {
        bail!(
            "{} already holds a model, which sft would replace with its fine-tuned one: choose another sft.output_dir (it would be lost)",
            run_dir.display()
        );
    }
    Ok(())
}

/// Writes the model to `target` atomically: into a temporary sibling, then renamed over.
pub fn publish_model(policy: &Policy, target: &Path) -> anyhow::Result<()> {
    crate::atomic_file::publish_dir(target, |temp| policy.save(temp))
}

#[cfg(test)]
mod tests {
    use super::reference_ids;

    #[test]
    fn a_reference_ends_with_eos_unless_it_is_cut() {
        assert_eq!(reference_ids(vec![5, 6], 2, 3), (vec![5, 6, 2], false));
        assert_eq!(reference_ids(vec![5, 6, 7], 2, 3), (vec![5, 6, 7], true));
        assert_eq!(reference_ids(vec![5, 6, 7, 8], 2, 3), (vec![5, 6, 7], true));
    }
}
