//! How a run starts: the reward first, the policy and optimizer fresh or from the newest
//! usable checkpoint, the ranks of a distributed run made identical, the reference, the data,
//! and the writers only rank 0 keeps.

use super::ranks::{check_same_model, share_state};
use super::{Trainer, Writers, MODE};
use crate::distributed::{replicas, same_config, World};
use crate::plugins::PluginRegistry;
use crate::rollout::Policy;
use crate::train::config::RunConfig;
use crate::train::data::{load_splits, DataCursor, PromptFormat};
use crate::train::input_fingerprints::InputFingerprints;
use crate::train::memory_plan::Phase;
use crate::train::metrics::{JsonlLog, METRICS_FILE, SAMPLES_FILE};
use crate::train::optimizer::AdamW;
use crate::train::preflight::MemoryCheck;
use crate::train::resume::{self, StartMode};
use crate::train::reward::RunReward;
use crate::train::tensorboard::EventWriter;
use anyhow::{bail, Context};

impl Trainer {
    /// [`Trainer::new`] as one rank of a distributed run: rank 0 starts (or resumes) the run
    /// and writes everything; the others load the model and take rank 0's weights, optimizer
    /// state and position.
    pub fn new_on(
        registry: &PluginRegistry,
        config: RunConfig,
        start: StartMode,
        world: Option<World>,
    ) -> anyhow::Result<Self> {
        let run_dir = config.run.output_dir.clone();
        let is_main = world.as_ref().is_none_or(World::is_main);
        let world_size = world.as_ref().map_or(1, |w| w.size);
        let started = (|| {
            // Built first (a plugin or Python file that fails, fails on every rank together),
            // and said at once: loading a large model takes a while before step 1.
            if config.run.max_steps == 0 {
                anyhow::bail!("run.max_steps is 0: no step would train (give the number of CRPO steps)");
            }
            let reward = RunReward::from_config(registry, &config)?;
            if reward.weights().iter().all(|&weight| weight == 0.0) {
                anyhow::bail!(
                    "every objective's weight is 0 ({}): the reward is 0 for every completion and nothing is learned; give one a weight in [[reward.objectives]]",
                    reward.names().join(", ")
                );
            }
            if is_main {
                let work = crate::train::startup::train_work(
                    &reward.names(),
                    &reward.weights(),
                    &config,
                    world_size,
                );
                tracing::info!("{}", crate::train::startup::line(MODE, &config, &work, &run_dir));
                if let Some(warning) = crate::train::startup::uneven_last_update(&config, world_size) {
                    tracing::warn!("{warning}");
                }
            }
            // A resume from a checkpoint needs no model.path (a full fine-tuning without a
            // reference: it may have moved); what does need it names it as it reads it.
            if !start.resume {
                crate::rollout::policy::require_local_model(&config.model.path, "model.path")?;
            }
            // Evaluation's budget too: checked now, not at the first evaluation steps into the run.
            crate::train::preflight::refuse_before_loading(&config, Phase::Train, MemoryCheck::ThisProcess)?;
            if !is_main {
                // Its trainable weights come from rank 0; the seed keeps the rest alike.
                tch::manual_seed(config.run.seed as i64);
                let policy = Policy::load(registry, &config.model, &config.model.path)?;
                let optimizer = AdamW::new(policy.parameters(), config.algorithm.adam_settings());
                let inputs = InputFingerprints::of_data(&config, MODE)?;
                return Ok((reward, None, policy, optimizer, None, inputs));
            }
            crate::train::run_lock::refuse_a_model_as_run_dir(&config, &run_dir, "run.output_dir")?;
            let (state, policy, optimizer, lock, inputs) = resume::policy_and_optimizer(
                registry,
                &config,
                (&run_dir, "run.output_dir"),
                start,
                MODE,
                config.algorithm.adam_settings(),
            )?;
            if let Some(state) = &state {
                if state.world_size != world_size {
                    bail!(
                        "--resume: the run was trained across {} process(es) and this start has {world_size}: a step's work is split by rank, so a different world size would not continue the same run (start it again with {} process(es))",
                        state.world_size,
                        state.world_size
                    );
                }
            }
            Ok((reward, state, policy, optimizer, Some(lock), inputs))
        })();
        let (reward, state, policy, mut optimizer, run_lock, inputs) = match &world {
            Some(world) => world.agree("starting the run", started)?,
            None => started?,
        };
        if let Some(world) = &world {
            same_config::check_same_data(world, &config, &inputs)?;
        }
        let state = match &world {
            Some(world) => {
                let state = share_state(world, state)?;
                let mut shared = optimizer.parameters();
                if state.is_some() {
                    shared.extend(optimizer.state_tensors());
                }
                replicas::start_identical(world, &shared, &shared)?;
                optimizer.steps = state.as_ref().map_or(0, |s| s.optimizer_updates);
                state
            }
            None => state,
        };
        if let Some(state) = &state {
            if state.step > config.run.max_steps {
                bail!(
                    "--resume: the run is at step {} already, beyond run.max_steps = {}: raise run.max_steps to train further (nothing was trained)",
                    state.step,
                    config.run.max_steps
                );
            }
        }
        if config.algorithm.gradient_checkpointing {
            policy.set_gradient_checkpointing("algorithm.gradient_checkpointing", true)?;
        }
        if state.is_some() {
            crate::train::position_budget::check_loaded(&policy, &config, Phase::Train)?;
        }
        if is_main {
            std::fs::create_dir_all(&run_dir)
                .with_context(|| format!("cannot create {}", run_dir.display()))?;
            crate::train::run_info::write(&run_dir, MODE, &policy, registry, world_size)?;
        }
        // The reference is the initial model, frozen; with beta = 0 it is not needed at all.
        // Under LoRA it is the policy with its adapters off.
        let reference = if config.algorithm.beta > 0.0 && !policy.adapters {
            Some(Policy::load(registry, &config.model, &config.model.path).context("the reference model")?)
        } else {
            None
        };
        let format = PromptFormat::from_config(&config, registry)?;
        let mut splits = load_splits(registry, &config)?;
        reward.check_answers_fit(
            &splits.train,
            &format!("data.path {}", config.data.path.display()),
        )?;
        if config.run.eval_steps > 0 {
            // Checked now, not at the first evaluation hours into the run.
            if splits.eval.is_empty() {
                bail!(
                    "run.eval_steps = {} evaluates the held-out set, but there is none (data.eval_path, or data.eval_fraction of the training file)",
                    config.run.eval_steps
                );
            }
            reward.check_answers_fit(&splits.eval, "the held-out data (run.eval_steps evaluates it)")?;
        }
        splits.train = format.admit(&policy.tokenizer, std::mem::take(&mut splits.train), "training")?;
        if is_main && config.algorithm.prompts_per_step > splits.train.len() {
            tracing::warn!(
                "algorithm.prompts_per_step = {} is more than the {} training examples: every step asks some prompts in more than one group",
                config.algorithm.prompts_per_step,
                splits.train.len()
            );
        }
        let ranks = world.as_ref().map_or(1, |world| world.size);
        if is_main && config.algorithm.prompts_per_step < ranks {
            let first_idle = config.algorithm.prompts_per_step;
            let idle = match ranks - first_idle {
                1 => format!("rank {first_idle} gets"),
                _ => format!("ranks {first_idle} to {} get", ranks - 1),
            };
            tracing::warn!(
                "algorithm.prompts_per_step = {first_idle} is less than the {ranks} ranks: {idle} no prompts and only share in the gradient average; set it to at least {ranks}"
            );
        }
        let keep_through = state.as_ref().map(|s| s.step);
        let config_toml = toml::to_string(&config.with_absolute_paths())?;
        let writers = if is_main {
            Some(Writers {
                metrics: JsonlLog::open(&run_dir, METRICS_FILE, keep_through)?,
                samples: JsonlLog::open(&run_dir, SAMPLES_FILE, keep_through)?,
                events: EventWriter::create(&run_dir, keep_through.map(|step| step + 1))?,
            })
        } else {
            None
        };
        if let Some(world) = &world {
            check_same_model(world, &policy, reference.as_ref())?;
        }
        Ok(Trainer {
            writers,
            world,
            _run_lock: run_lock,
            cursor: state.as_ref().map_or_else(DataCursor::default, |s| s.cursor),
            step: state.as_ref().map_or(0, |s| s.step),
            nonfinite_steps: state.as_ref().map_or(0, |s| s.nonfinite_steps),
            interrupt: None,
            config,
            config_toml,
            inputs,
            policy,
            reference,
            reward,
            optimizer,
            splits,
            format,
        })
    }
}
