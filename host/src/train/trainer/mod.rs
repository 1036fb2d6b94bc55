//! The CRPO loop: each step samples groups and scores them ([`Rollouts`]), turns scores into
//! advantages, updates the policy ([`update_policy`]), and records [`StepMetrics`], samples
//! and checkpoints. How a run starts is in `start.rs`, what a step writes in `records.rs`,
//! what the ranks of a distributed run exchange in `ranks.rs`.

use super::checkpoint;
use super::config::RunConfig;
use super::data::{next_indices, DataCursor, PromptFormat, Splits};
use super::divergence::NonfiniteStreak;
use super::input_fingerprints::InputFingerprints;
use super::metrics::{
    mean_by_name, ClipRatio, CompletionLength, DynamicSampling, JsonlLog, MeanStd, ObjectiveStats,
    StepMetrics,
};
use super::optimizer::AdamW;
use super::resume::StartMode;
use super::reward::RunReward;
use super::rollouts::{sample_groups, Group, Rollouts};
use super::tensorboard::{scalars_of, EventWriter};
use super::update::{update_policy, Batch, Reference, UpdateStats, SUMMING_GRADIENTS};
use crate::distributed::{shard, World};
use crate::interrupt::{Interrupt, Interrupted};
use crate::memory_stats;
use crate::plugins::PluginRegistry;
use crate::rollout::sampling::SamplingConfig;
use crate::rollout::Policy;
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::time::Instant;

mod ranks;
mod records;
mod start;

use ranks::{any_rank_signalled, gather_groups};

pub const MODE: &str = "train";

/// What a finished run reports.
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub steps: usize,
    pub last_checkpoint: Option<PathBuf>,
    pub last_metrics: Option<StepMetrics>,
}

/// The random seed of step `step`'s sampling round `round`: every draw derives from the run
/// seed and the position, so a resumed run draws what the uninterrupted one would have.
pub fn sampling_seed(seed: u64, step: usize, round: usize) -> u64 {
    let mut z = seed ^ ((step as u64) << 8 | round as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Separates the passes' draws (dropout) from the sampling's in [`sampling_seed`].
const DROPOUT_STREAM: u64 = 0x0064_726f_706f_7574;

pub struct Trainer {
    config: RunConfig,
    config_toml: String,
    /// What the run reads, by content: recorded in each checkpoint.
    inputs: InputFingerprints,
    policy: Policy,
    reference: Option<Policy>,
    reward: RunReward,
    optimizer: AdamW,
    splits: Splits,
    format: PromptFormat,
    cursor: DataCursor,
    step: usize,
    /// Steps whose update was skipped as non-finite, so far.
    nonfinite_steps: usize,
    interrupt: Option<Interrupt>,
    /// What the run writes: rank 0's alone in a distributed run.
    writers: Option<Writers>,
    /// The other ranks of a distributed run.
    world: Option<World>,
    /// Rank 0's hold on the run directory (crate::train::run_lock).
    _run_lock: Option<super::run_lock::RunLock>,
}

/// The run's records.
struct Writers {
    metrics: JsonlLog,
    samples: JsonlLog,
    /// TensorBoard's view of the same records.
    events: EventWriter,
}

/// AdamW with the run's settings.
/// A step's rollouts and what collecting them took.
struct Collected {
    rollouts: Rollouts,
    /// When dynamic sampling dropped every group: the last round's (all tied), which the
    /// step's statistics and samples then describe (they were zeros and nothing).
    all_dropped: Option<Rollouts>,
    dynamic_sampling: DynamicSampling,
    kv_cache_bytes: usize,
    /// Completion tokens sampled in every round, dropped groups' too: what the rollout's time
    /// was spent on.
    generated_tokens: usize,
}

impl Trainer {
    /// Sets up a run: fresh into an unused `run.output_dir`, or (`start.resume`) from its
    /// newest usable checkpoint with a matching config.
    pub fn new(registry: &PluginRegistry, config: RunConfig, start: StartMode) -> anyhow::Result<Self> {
        Self::new_on(registry, config, start, None)
    }

    /// Listens for SIGTERM and SIGINT: the run finishes its step, checkpoints and stops.
    pub fn interruptible(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Trains to `run.max_steps`, checkpointing every `run.save_steps` and at the end. Steps
    /// whose update was skipped as non-finite are counted; `run.max_nonfinite_steps` of them
    /// in a row stop the run. A signal stops it after the step, with a checkpoint.
    pub fn run(mut self) -> anyhow::Result<TrainSummary> {
        let max_steps = self.config.run.max_steps;
        let progress = if self.writers.is_some() {
            super::progress::bar(max_steps as u64, self.step as u64, "train", "steps")
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut last_checkpoint = checkpoint::latest(&self.config.run.output_dir)?.map(|(_, p)| p);
        let mut last_metrics = None;
        let mut streak = NonfiniteStreak::new(self.config.run.max_nonfinite_steps);
        let totals_decide = self.config.algorithm.aggregation == super::config::Aggregation::SumThenNormalize;
        let mut no_signal = super::no_signal::NoSignalWatch::new(self.step, max_steps, totals_decide);
        let mut first_step = true;
        while self.step < max_steps {
            let step = self.step + 1;
            if let Some(world) = &self.world {
                world.set_stage(format!("step {step}"));
            }
            let record = self
                .train_step()
                .with_context(|| format!("training step {step}"))?;
            if self.writers.is_some()
                && super::progress::logs_step(self.step, max_steps, self.config.run.logging_steps)
            {
                tracing::info!("{}", super::progress::summary_line(&record));
            }
            progress.inc(1);
            if std::mem::take(&mut first_step) {
                // The first step carries the start-up costs: the ETA starts after it.
                progress.reset_eta();
            }
            if let Some(warning) = no_signal.record(self.step, record.frac_reward_zero_std) {
                if self.writers.is_some() {
                    tracing::warn!("{warning}");
                }
            }
            let skipped = record.nonfinite_update_skipped;
            last_metrics = Some(record);
            streak.record(
                self.step,
                skipped,
                &last_checkpoint
                    .as_ref()
                    .map_or("the start".to_string(), |p| p.display().to_string()),
            )?;
            let save_steps = self.config.run.save_steps;
            let due = save_steps > 0 && (self.step.is_multiple_of(save_steps) || self.step == max_steps);
            let signal = self.interrupt.as_ref().and_then(Interrupt::received);
            // Every rank stops after the same step: one that got the signal stops them all.
            let signal = match &self.world {
                Some(world) => any_rank_signalled(world, signal)?,
                None => signal,
            };
            if (due || (signal.is_some() && save_steps > 0)) && self.writers.is_some() {
                last_checkpoint = Some(self.save_checkpoint()?);
            }
            if let Some(signal) = signal {
                progress.finish_and_clear();
                let step = format!("step {}", self.step);
                return Err(match self.world.as_ref().filter(|world| world.rank > 0) {
                    // Rank 0 says whether it wrote one: this rank's word would only repeat it.
                    Some(world) => Interrupted::on_rank(signal, &step, world.rank),
                    None => Interrupted::after(signal, &step, save_steps > 0),
                }
                .into());
            }
        }
        progress.finish_and_clear();
        Ok(TrainSummary {
            run_dir: self.config.run.output_dir.clone(),
            steps: self.step,
            last_checkpoint,
            last_metrics,
        })
    }

    /// One step: rollouts, advantages, the policy update, the records.
    fn train_step(&mut self) -> anyhow::Result<StepMetrics> {
        let started = Instant::now();
        // Draws inside the passes (LoRA dropout) come from torch's generator: seeded from the
        // run's seed and the step, so a resumed run draws what the uninterrupted one would,
        // and the rank, so ranks draw independent masks (the same seed gave every rank's k-th
        // pass the same mask). They follow each rank's passes, not each completion: with
        // dropout, N processes train like one only in distribution (docs/distributed.md).
        let rank = self.world.as_ref().map_or(0, |w| w.rank);
        tch::manual_seed(sampling_seed(self.config.run.seed ^ DROPOUT_STREAM, self.step, rank) as i64);
        memory_stats::reset_peak(self.policy.device);
        let collected = self.collect()?;
        let rollout_seconds = started.elapsed().as_secs_f64();
        let weights = self.reward.weights();
        let rollouts = &collected.rollouts;
        let advantages = rollouts.advantages(&weights, &self.config.algorithm)?;
        let (prompts, completions) = rollouts.sequences();
        let nominal_updates = self.nominal_updates();
        let train_started = Instant::now();
        let stats = if rollouts.is_empty() {
            tracing::warn!("step {}: every group tied; no update", self.step + 1);
            UpdateStats::default()
        } else {
            update_policy(
                &self.policy,
                match (
                    &self.reference,
                    self.policy.adapters && self.config.algorithm.beta > 0.0,
                ) {
                    (Some(model), _) => Reference::Model(model),
                    (None, true) => Reference::AdaptersOff,
                    (None, false) => Reference::None,
                },
                &mut self.optimizer,
                &Batch {
                    prompts: &prompts,
                    completions: &completions,
                    advantages: &advantages,
                    truncated: &rollouts.rows().map(|(g, i)| !g.finished[i]).collect::<Vec<_>>(),
                },
                &self.config.algorithm,
                self.step + 1,
                nominal_updates,
                self.world.as_ref(),
            )?
        };
        let train_seconds = train_started.elapsed().as_secs_f64();
        self.step += 1;
        if self.config.algorithm.mask_truncated_completions
            && !rollouts.is_empty()
            && rollouts.groups.iter().all(|g| g.finished.iter().all(|f| !f))
        {
            // A model with no EOS cuts every completion whatever the budget.
            let remedy = if self.policy.tokenizer.eos_ids().is_empty() {
                "the model has no EOS token to end one: give it one (eos_token in tokenizer_config.json) or set mask_truncated_completions = false"
            } else {
                "raise max_completion_length"
            };
            tracing::warn!(
                "step {}: every completion was cut at algorithm.max_completion_length = {} and mask_truncated_completions leaves them all out of the loss: nothing was trained (its loss, KL and entropy read 0; {remedy})",
                self.step,
                self.config.algorithm.max_completion_length
            );
        }
        if stats.nonfinite {
            self.nonfinite_steps += 1;
        } else if stats.updates > 0 {
            self.check_policy_is_finite(&prompts, &completions)?;
        }
        let kl_bound = self.config.algorithm.kl_warning_threshold;
        if kl_bound > 0.0 && stats.kl > kl_bound {
            tracing::warn!(
                "step {}: KL to the reference is {:.3} per token, above algorithm.kl_warning_threshold = {kl_bound}: the policy is moving fast (lower algorithm.learning_rate or raise algorithm.beta)",
                self.step,
                stats.kl
            );
        }
        // What the statistics describe: the groups trained on, or every one dropped.
        let observed = collected.all_dropped.as_ref().unwrap_or(rollouts);
        let observed_rows = match &collected.all_dropped {
            Some(dropped) => Some((
                dropped.advantages(&weights, &self.config.algorithm)?,
                dropped.sequences().1,
            )),
            None => None,
        };
        let (observed_advantages, observed_completions) = match &observed_rows {
            Some((advantages, completions)) => (advantages.as_slice(), completions.as_slice()),
            None => (advantages.as_slice(), completions.as_slice()),
        };
        let current_lr = if stats.updates > 0 {
            stats.lr
        } else {
            // No update this step: the schedule's rate where it stands (it read 0).
            self.config
                .algorithm
                .learning_rate_at(self.optimizer.steps as usize, nominal_updates)
        };
        let record = StepMetrics {
            step: self.step,
            objectives: self
                .reward
                .names()
                .into_iter()
                .zip(&weights)
                .enumerate()
                .map(|(k, (name, &weight))| {
                    let MeanStd { mean, std } = MeanStd::of(&observed.objective(k));
                    (name, ObjectiveStats { mean, std, weight })
                })
                .collect(),
            diagnostics: mean_by_name(
                observed
                    .groups
                    .iter()
                    .flat_map(|g| g.scores.diagnostics.iter().map(Vec::as_slice)),
            ),
            reward: MeanStd::of(&observed.totals),
            advantage: MeanStd::of(observed_advantages),
            frac_reward_zero_std: if observed.groups.is_empty() {
                1.0
            } else {
                observed.tied_groups() as f64 / observed.groups.len() as f64
            },
            dynamic_sampling: collected.dynamic_sampling,
            kl: (self.config.algorithm.beta > 0.0 && !rollouts.is_empty()).then_some(stats.kl),
            clip_ratio: ClipRatio {
                low: stats.clip_low,
                high: stats.clip_high,
            },
            entropy: stats.entropy,
            loss: stats.loss,
            completion_length: completion_lengths(observed_completions, observed),
            learning_rate: current_lr,
            grad_norm: stats.grad_norm,
            optimizer_updates: self.optimizer.steps,
            rollout_tokens_per_s: collected.generated_tokens as f64 / rollout_seconds.max(1e-9),
            train_tokens_per_s: stats.tokens as f64 / train_seconds.max(1e-9),
            step_time_s: started.elapsed().as_secs_f64(),
            epoch: self.cursor.epoch,
            kv_cache_bytes: collected.kv_cache_bytes,
            peak_rss_bytes: memory_stats::peak_rss_bytes(),
            gpu_memory: memory_stats::gpu_memory(self.policy.device),
            nonfinite_update_skipped: stats.nonfinite,
            nonfinite_steps: self.nonfinite_steps,
            prompts_truncated: observed.groups.iter().filter(|g| g.prompt_truncated).count(),
            communication_s: None,
            gradient_all_reduce_s: None,
            eval: None,
        };
        let mut record = record;
        if let Some(world) = &self.world {
            let spent = world.take_communication_times();
            record.communication_s = Some(spent.values().sum());
            record.gradient_all_reduce_s = Some(spent.get(SUMMING_GRADIENTS).copied().unwrap_or(0.0));
        }
        let every = self.config.run.eval_steps;
        if every > 0 && (self.step.is_multiple_of(every) || self.step == self.config.run.max_steps) {
            record.eval = Some(self.evaluate_held_out()?);
            // The evaluation's gathers wait for the slowest rank's generation: not the step's
            // communication.
            if let Some(world) = &self.world {
                world.take_communication_times();
            }
        }
        let step = self.step;
        let Some(writers) = &mut self.writers else {
            return Ok(record);
        };
        let mut json = serde_json::to_value(&record)?;
        let eval = json.as_object_mut().and_then(|o| o.remove("eval"));
        writers.events.scalars(step, &scalars_of("train", &json))?;
        if let Some(eval) = eval {
            writers.events.scalars(step, &scalars_of("eval", &eval))?;
            json["eval"] = eval;
        }
        writers.metrics.append(&json)?;
        // A run shorter than sample_steps still shows what it ends with. (Only there: a last
        // step that a longer resumed run redoes would leave its text in TensorBoard, whose
        // readers do not all purge text on a resume.)
        let every = self.config.run.sample_steps;
        let max_steps = self.config.run.max_steps;
        let short_run_ends = step == max_steps && max_steps < every;
        if self.config.run.log_completions && every > 0 && (step.is_multiple_of(every) || short_run_ends) {
            self.write_samples(observed, observed_advantages)?;
        }
        Ok(record)
    }

    /// The run's planned optimizer updates: the length of the learning-rate schedule.
    fn nominal_updates(&self) -> usize {
        let world_size = self.world.as_ref().map_or(1, |w| w.size);
        self.config.run.max_steps * self.config.algorithm.updates_per_step(world_size)
    }

    fn sampling(&self, seed: u64) -> SamplingConfig {
        let algorithm = &self.config.algorithm;
        SamplingConfig {
            max_new_tokens: algorithm.max_completion_length,
            min_new_tokens: algorithm.min_completion_length,
            temperature: algorithm.temperature,
            top_p: algorithm.top_p,
            top_k: algorithm.top_k,
            greedy: false,
            seed,
            first_stream: 0,
            row_budgets: Vec::new(),
        }
    }

    /// Samples this step's groups; under dynamic sampling, drops tied groups and samples more
    /// prompts until the batch is full or the rounds run out.
    fn collect(&mut self) -> anyhow::Result<Collected> {
        let algorithm = &self.config.algorithm;
        let wanted = algorithm.prompts_per_step;
        let mut kept: Vec<Group> = Vec::new();
        let mut dropped: Vec<Group> = Vec::new();
        let mut dynamic_sampling = DynamicSampling::default();
        let mut kv_cache_bytes = 0;
        let mut generated_tokens = 0;
        while kept.len() < wanted {
            let count = if dynamic_sampling.rounds == 0 {
                wanted
            } else {
                wanted - kept.len()
            };
            let indices = next_indices(
                &mut self.cursor,
                self.splits.train.len(),
                count,
                self.config.run.seed,
                self.config.data.shuffle,
            );
            let sampling = self.sampling(sampling_seed(
                self.config.run.seed,
                self.step,
                dynamic_sampling.rounds,
            ));
            // This rank's share; each completion's random stream is its place in the whole step.
            let share = self
                .world
                .as_ref()
                .map_or(0..indices.len(), |w| shard::share(indices.len(), w.rank, w.size));
            let mut groups = Vec::with_capacity(indices.len());
            for (batch, chunk) in indices[share.clone()]
                .chunks(algorithm.prompts_per_rollout_batch())
                .enumerate()
            {
                let first_stream = ((share.start + batch * algorithm.prompts_per_rollout_batch())
                    * algorithm.num_generations) as u64;
                let (batch_groups, stats) = sample_groups(
                    &self.policy,
                    &self.reward,
                    &self.splits.train,
                    chunk,
                    &self.format,
                    algorithm.num_generations,
                    &SamplingConfig {
                        first_stream,
                        ..sampling.clone()
                    },
                )?;
                kv_cache_bytes = kv_cache_bytes.max(stats.kv_cache_bytes);
                groups.extend(batch_groups);
            }
            if let Some(world) = &self.world {
                groups = gather_groups(world, groups)?;
            }
            generated_tokens += groups
                .iter()
                .flat_map(|group| &group.completions)
                .map(Vec::len)
                .sum::<usize>();
            dynamic_sampling.rounds += 1;
            if !algorithm.dynamic_sampling {
                kept.extend(groups);
                break;
            }
            dropped.clear();
            for group in groups {
                if group.is_tied() {
                    dynamic_sampling.groups_dropped += 1;
                    dropped.push(group);
                } else {
                    kept.push(group);
                }
            }
            if dynamic_sampling.rounds > algorithm.max_resample_rounds {
                break;
            }
        }
        let objectives = self.reward.names().len();
        Ok(Collected {
            all_dropped: (kept.is_empty() && !dropped.is_empty())
                .then(|| Rollouts::new(dropped, algorithm.num_generations, objectives)),
            rollouts: Rollouts::new(kept, algorithm.num_generations, objectives),
            dynamic_sampling,
            kv_cache_bytes,
            generated_tokens,
        })
    }

    /// After an update, the policy must still give finite log-probs (weights of magnitude
    /// 1e9 are finite but overflow in the forward pass): else the run stops here, before the
    /// weights can be checkpointed.
    fn check_policy_is_finite(&self, prompts: &[Vec<i64>], completions: &[Vec<i64>]) -> anyhow::Result<()> {
        let Some(row) = completions.iter().position(|c| !c.is_empty()) else {
            return Ok(());
        };
        let _guard = tch::no_grad_guard();
        let scored = self
            .policy
            .logprobs(&prompts[row..=row], &completions[row..=row], false)?;
        if !crpo_policy_sdk::tensor::all_finite(&scored.logprobs)? {
            let last = checkpoint::latest(&self.config.run.output_dir)?;
            bail!(
                "step {}: after the update the policy's log-probs are not finite: training diverged (lower algorithm.learning_rate); these weights are not checkpointed{}",
                self.step,
                last.map_or(String::new(), |(_, p)| format!(" (the last checkpoint is {})", p.display()))
            );
        }
        Ok(())
    }
}

/// Mean and longest completion, and the share cut at the budget.
fn completion_lengths(completions: &[Vec<i64>], rollouts: &Rollouts) -> CompletionLength {
    let lengths: Vec<f32> = completions.iter().map(|c| c.len() as f32).collect();
    let truncated = rollouts
        .groups
        .iter()
        .flat_map(|g| &g.finished)
        .filter(|f| !**f)
        .count();
    CompletionLength {
        mean: MeanStd::of(&lengths).mean,
        max: lengths.iter().copied().fold(0.0, f32::max),
        truncated_fraction: if lengths.is_empty() {
            0.0
        } else {
            truncated as f64 / lengths.len() as f64
        },
    }
}
