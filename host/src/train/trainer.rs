//! The CRPO loop: sample groups, score them with every objective, turn scores into
//! group-relative advantages, and update the policy with the clipped surrogate, the k3 KL to
//! the frozen reference and the entropy bonus. Checkpoints and metrics as in the modules.

use super::checkpoint::{self, TrainerState};
use super::config::{LossType, RunConfig};
use super::data::{load_splits, next_indices, DataCursor, PromptFormat, Splits};
use super::maths;
use super::metrics::{mean_std, JsonlLog, METRICS_FILE, SAMPLES_FILE};
use super::optimizer::{learning_rate, AdamW, AdamWSettings};
use super::reward::RunReward;
use super::rollout::{sample_groups, Group};
use crate::plugins::PluginRegistry;
use crate::rollout::sampling::SamplingConfig;
use crate::rollout::Policy;
use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Kind, Tensor};

pub const MODE: &str = "train";

/// What a finished run reports.
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub steps: usize,
    pub last_checkpoint: Option<PathBuf>,
    pub last_metrics: Option<Value>,
}

/// The random seed of step `step`'s sampling round `round`: every draw derives from the run
/// seed and the position, so a resumed run draws what the uninterrupted one would have.
pub fn sampling_seed(seed: u64, step: usize, round: usize) -> u64 {
    let mut z = seed ^ ((step as u64) << 8 | round as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub struct Trainer {
    config: RunConfig,
    config_toml: String,
    policy: Policy,
    reference: Option<Policy>,
    reward: RunReward,
    optimizer: AdamW,
    splits: Splits,
    format: PromptFormat,
    cursor: DataCursor,
    step: usize,
    metrics: JsonlLog,
    samples: JsonlLog,
}

/// The flattened batch of one step: N completions in groups of G.
struct Batch {
    prompts: Vec<Vec<i64>>,
    completions: Vec<Vec<i64>>,
    advantages: Vec<f32>,
}

/// Statistics of the policy updates of one step.
#[derive(Default)]
struct UpdateStats {
    loss: f64,
    kl: f64,
    entropy: f64,
    clip_low: f64,
    clip_high: f64,
    grad_norm: f64,
    lr: f64,
    micro_batches: usize,
    updates: usize,
    tokens: usize,
}

impl Trainer {
    /// Sets up a run; with `resume`, from the run directory's latest checkpoint.
    pub fn new(registry: &PluginRegistry, config: RunConfig, resume: bool) -> anyhow::Result<Self> {
        let run_dir = config.run.output_dir.clone();
        let resumed = checkpoint::resume_point(&run_dir, resume, MODE, "run.output_dir")?;
        let model_dir = resumed.as_ref().map_or_else(
            || config.model.path.clone(),
            |(_, dir)| dir.join(checkpoint::MODEL_DIR),
        );
        std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
        let policy = Policy::load(registry, &config.model, &model_dir)?;
        // The reference is the initial model, frozen; with beta = 0 it is not needed at all.
        let reference = if config.algorithm.beta > 0.0 {
            Some(Policy::load(registry, &config.model, &config.model.path).context("the reference model")?)
        } else {
            None
        };
        let reward = RunReward::from_config(registry, &config)?;
        let algorithm = &config.algorithm;
        let mut optimizer = AdamW::new(
            policy.parameters(),
            AdamWSettings {
                beta1: algorithm.adam_beta1,
                beta2: algorithm.adam_beta2,
                eps: algorithm.adam_epsilon,
                weight_decay: algorithm.weight_decay,
            },
        );
        if let Some((_, dir)) = &resumed {
            optimizer.load(&dir.join(checkpoint::OPTIMIZER_FILE))?;
        }
        let state = resumed.map(|(state, _)| state);
        let splits = load_splits(registry, &config)?;
        let format = PromptFormat::from_config(&config, registry)?;
        let keep_through = state.as_ref().map(|s| s.step);
        let config_toml = toml::to_string(&config)?;
        Ok(Trainer {
            metrics: JsonlLog::open(&run_dir, METRICS_FILE, keep_through)?,
            samples: JsonlLog::open(&run_dir, SAMPLES_FILE, keep_through)?,
            cursor: state.as_ref().map_or_else(DataCursor::default, |s| s.cursor),
            step: state.as_ref().map_or(0, |s| s.step),
            config,
            config_toml,
            policy,
            reference,
            reward,
            optimizer,
            splits,
            format,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Trains to `run.max_steps`, checkpointing every `run.save_steps` and at the end.
    pub fn run(mut self) -> anyhow::Result<TrainSummary> {
        let max_steps = self.config.run.max_steps;
        let progress = super::progress::bar(max_steps as u64, self.step as u64, "train");
        let mut last_checkpoint = checkpoint::latest(&self.config.run.output_dir)?.map(|(_, p)| p);
        let mut last_metrics = None;
        while self.step < max_steps {
            let record = self.train_step()?;
            progress.suspend(|| tracing::info!("{}", super::progress::summary_line(&record)));
            progress.inc(1);
            last_metrics = Some(record);
            if self.step.is_multiple_of(self.config.run.save_steps) || self.step == max_steps {
                last_checkpoint = Some(self.save_checkpoint()?);
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
        }
    }

    /// Samples this step's groups; under dynamic sampling, drops tied groups and samples more
    /// prompts until the batch is full or the rounds run out.
    fn collect_groups(&mut self) -> anyhow::Result<(Vec<Group>, usize, usize)> {
        let algorithm = self.config.algorithm.clone();
        let weights = self.reward.weights();
        let wanted = algorithm.prompts_per_step;
        let mut kept: Vec<Group> = Vec::new();
        let (mut dropped, mut rounds) = (0, 0);
        while kept.len() < wanted {
            let count = if rounds == 0 { wanted } else { wanted - kept.len() };
            let indices = next_indices(
                &mut self.cursor,
                self.splits.train.len(),
                count,
                self.config.run.seed,
                self.config.data.shuffle,
            );
            let sampling = self.sampling(sampling_seed(self.config.run.seed, self.step, rounds));
            let groups = sample_groups(
                &self.policy,
                &self.reward,
                &self.splits.train,
                &indices,
                &self.format,
                algorithm.num_generations,
                &sampling,
            )?;
            rounds += 1;
            if !algorithm.dynamic_sampling {
                kept.extend(groups);
                break;
            }
            for group in groups {
                if group.is_tied(&weights) {
                    dropped += 1;
                } else {
                    kept.push(group);
                }
            }
            if rounds > algorithm.max_resample_rounds {
                break;
            }
        }
        Ok((kept, dropped, rounds))
    }

    fn train_step(&mut self) -> anyhow::Result<Value> {
        let started = Instant::now();
        let (groups, dropped, rounds) = self.collect_groups()?;
        let rollout_seconds = started.elapsed().as_secs_f64();
        let algorithm = self.config.algorithm.clone();
        let weights = self.reward.weights();
        let names = self.reward.names();
        let g = algorithm.num_generations;

        let scores: Vec<f32> = groups
            .iter()
            .flat_map(|gr| gr.scores.iter().flatten().copied())
            .collect();
        let n = groups.len() * g;
        let totals: Vec<f32> = groups.iter().flat_map(|gr| gr.totals(&weights)).collect();
        let advantages: Vec<f32> = if n == 0 {
            Vec::new()
        } else {
            let table = Tensor::from_slice(&scores).view([n as i64, names.len() as i64]);
            let advantages = maths::advantages(
                &table,
                &Tensor::from_slice(&weights),
                g,
                algorithm.aggregation,
                algorithm.scale_rewards,
            );
            Vec::<f32>::try_from(advantages)?
        };
        let batch = Batch {
            prompts: groups
                .iter()
                .flat_map(|gr| std::iter::repeat_n(gr.prompt_ids.clone(), g))
                .collect(),
            completions: groups.iter().flat_map(|gr| gr.completions.clone()).collect(),
            advantages: advantages.clone(),
        };
        let train_started = Instant::now();
        let stats = if n == 0 {
            tracing::warn!("step {}: every group tied; no update", self.step + 1);
            UpdateStats::default()
        } else {
            self.update(&batch)?
        };
        let train_seconds = train_started.elapsed().as_secs_f64();
        self.step += 1;

        let lengths: Vec<f32> = batch.completions.iter().map(|c| c.len() as f32).collect();
        let generated_tokens: f32 = lengths.iter().sum();
        let truncated = groups.iter().flat_map(|gr| &gr.finished).filter(|f| !**f).count();
        let mut objectives = Map::new();
        for (k, name) in names.iter().enumerate() {
            let column: Vec<f32> = groups
                .iter()
                .flat_map(|gr| gr.scores.iter().map(move |row| row[k]))
                .collect();
            let (mean, std) = mean_std(&column);
            objectives.insert(
                name.clone(),
                json!({"mean": mean, "std": std, "weight": weights[k]}),
            );
        }
        let (reward_mean, reward_std) = mean_std(&totals);
        let (advantage_mean, advantage_std) = mean_std(&advantages);
        let tied = groups.iter().filter(|gr| gr.is_tied(&weights)).count();
        let record = json!({
            "step": self.step,
            "objectives": objectives,
            "reward": {"mean": reward_mean, "std": reward_std},
            "advantage": {"mean": advantage_mean, "std": advantage_std},
            "frac_reward_zero_std": if groups.is_empty() { 1.0 } else { tied as f64 / groups.len() as f64 },
            "dynamic_sampling": {"groups_dropped": dropped, "rounds": rounds},
            "kl": stats.kl,
            "clip_ratio": {"low": stats.clip_low, "high": stats.clip_high},
            "entropy": stats.entropy,
            "loss": stats.loss,
            "completion_length": {
                "mean": mean_std(&lengths).0,
                "max": lengths.iter().copied().fold(0.0, f32::max),
                "truncated_fraction": if n == 0 { 0.0 } else { truncated as f64 / n as f64 },
            },
            "learning_rate": stats.lr,
            "grad_norm": stats.grad_norm,
            "optimizer_updates": self.optimizer.steps,
            "rollout_tokens_per_s": generated_tokens as f64 / rollout_seconds.max(1e-9),
            "train_tokens_per_s": stats.tokens as f64 / train_seconds.max(1e-9),
            "step_time_s": started.elapsed().as_secs_f64(),
            "epoch": self.cursor.epoch,
        });
        self.metrics.append(&record)?;
        let every = self.config.run.sample_steps;
        if every > 0 && self.step.is_multiple_of(every) {
            self.write_samples(&groups, &advantages, &names, &weights)?;
        }
        Ok(record)
    }

    /// PPO epochs over the batch in micro-batches, one optimizer update per
    /// `gradient_accumulation_steps` micro-batches.
    fn update(&mut self, batch: &Batch) -> anyhow::Result<UpdateStats> {
        let algorithm = self.config.algorithm.clone();
        let n = batch.completions.len();
        let micro: Vec<Vec<usize>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(algorithm.mini_batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        let pick =
            |rows: &[usize], from: &[Vec<i64>]| rows.iter().map(|&i| from[i].clone()).collect::<Vec<_>>();
        let updates_per_epoch = micro.len().div_ceil(algorithm.gradient_accumulation_steps);
        // With a single update the sampling policy is the current one: its log-probs are the
        // detached current ones. Otherwise they are computed once, before any update.
        let single_update = updates_per_epoch * algorithm.num_iterations == 1;
        let (mut old, mut reference) = (Vec::new(), Vec::new());
        {
            let _guard = tch::no_grad_guard();
            for rows in &micro {
                let (prompts, completions) = (pick(rows, &batch.prompts), pick(rows, &batch.completions));
                if !single_update {
                    old.push(self.policy.logprobs(&prompts, &completions, false)?.logprobs);
                }
                if let Some(reference_model) = &self.reference {
                    reference.push(reference_model.logprobs(&prompts, &completions, false)?.logprobs);
                }
            }
        }
        let nominal_updates = self.config.run.max_steps
            * (algorithm.prompts_per_step * algorithm.num_generations)
                .div_ceil(algorithm.mini_batch_size)
                .div_ceil(algorithm.gradient_accumulation_steps)
            * algorithm.num_iterations;
        let mut stats = UpdateStats::default();
        let (mut kl_sum, mut entropy_sum, mut low_sum, mut high_sum, mut token_sum) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        for _ in 0..algorithm.num_iterations {
            for chunk in (0..micro.len())
                .collect::<Vec<_>>()
                .chunks(algorithm.gradient_accumulation_steps)
            {
                let step_tokens: usize = chunk
                    .iter()
                    .flat_map(|&m| micro[m].iter().map(|&i| batch.completions[i].len()))
                    .sum();
                for &m in chunk {
                    let rows = &micro[m];
                    let (prompts, completions) = (pick(rows, &batch.prompts), pick(rows, &batch.completions));
                    let advantages: Vec<f32> = rows.iter().map(|&i| batch.advantages[i]).collect();
                    let advantages = Tensor::from_slice(&advantages).to_device(self.policy.device);
                    let current =
                        self.policy
                            .logprobs(&prompts, &completions, algorithm.entropy_coeff > 0.0)?;
                    let old_logprobs = if single_update {
                        current.logprobs.detach()
                    } else {
                        old[m].shallow_clone()
                    };
                    let surrogate = maths::clipped_surrogate(
                        &current.logprobs,
                        &old_logprobs,
                        &advantages,
                        algorithm.epsilon,
                        algorithm.epsilon_high(),
                    );
                    let kl = reference
                        .get(m)
                        .map(|reference_logprobs| maths::k3_kl(&current.logprobs, reference_logprobs));
                    if let Some(kl) = &kl {
                        kl_sum += (kl * &current.mask).sum(Kind::Float).double_value(&[]);
                    }
                    let per_token = maths::per_token_loss(
                        &surrogate.objective,
                        kl.as_ref(),
                        algorithm.beta,
                        &current.entropies,
                        algorithm.entropy_coeff,
                    );
                    let mut loss = maths::reduce_loss(
                        &per_token,
                        &current.mask,
                        algorithm.loss_type,
                        algorithm.max_completion_length,
                        step_tokens as f64,
                    );
                    if algorithm.loss_type != LossType::Dapo {
                        loss = loss.g_div_scalar(chunk.len() as f64);
                    }
                    loss.backward();
                    let tokens = current.mask.sum(Kind::Float).double_value(&[]);
                    token_sum += tokens;
                    entropy_sum += current.entropies.sum(Kind::Float).double_value(&[]);
                    let masked_count = |t: &Tensor| {
                        (t.to_kind(Kind::Float) * &current.mask)
                            .sum(Kind::Float)
                            .double_value(&[])
                    };
                    low_sum += masked_count(&surrogate.clipped_low);
                    high_sum += masked_count(&surrogate.clipped_high);
                    stats.loss += loss.double_value(&[]);
                    stats.micro_batches += 1;
                    stats.tokens += prompts.iter().chain(&completions).map(Vec::len).sum::<usize>();
                }
                stats.grad_norm = self.optimizer.clip_grad_norm(algorithm.max_grad_norm);
                if !stats.grad_norm.is_finite() {
                    bail!(
                        "step {}: the gradient norm is {} (try a lower algorithm.learning_rate)",
                        self.step + 1,
                        stats.grad_norm
                    );
                }
                stats.lr = learning_rate(
                    algorithm.learning_rate,
                    algorithm.lr_scheduler_type,
                    algorithm.warmup_steps,
                    self.optimizer.steps as usize,
                    nominal_updates,
                );
                self.optimizer.step(stats.lr);
                self.optimizer.zero_grad();
                stats.updates += 1;
            }
        }
        let tokens = token_sum.max(1.0);
        stats.kl = kl_sum / tokens;
        stats.entropy = entropy_sum / tokens;
        stats.clip_low = low_sum / tokens;
        stats.clip_high = high_sum / tokens;
        stats.loss /= stats.updates.max(1) as f64;
        Ok(stats)
    }

    fn write_samples(
        &self,
        groups: &[Group],
        advantages: &[f32],
        names: &[String],
        weights: &[f32],
    ) -> anyhow::Result<()> {
        let g = self.config.algorithm.num_generations;
        for (index, (group, completion)) in groups
            .iter()
            .flat_map(|gr| (0..g).map(move |c| (gr, c)))
            .enumerate()
            .take(self.config.run.sample_count)
        {
            let scores: Map<String, Value> = names
                .iter()
                .zip(&group.scores[completion])
                .map(|(name, value)| (name.clone(), json!(value)))
                .collect();
            self.samples.append(&json!({
                "step": self.step,
                "example": self.splits.train[group.example].id,
                "prompt": group.prompt_text,
                "completion": group.texts[completion],
                "scores": scores,
                "reward": group.totals(weights)[completion],
                "advantage": advantages[index],
            }))?;
        }
        Ok(())
    }

    fn save_checkpoint(&self) -> anyhow::Result<PathBuf> {
        let state = TrainerState {
            step: self.step,
            optimizer_updates: self.optimizer.steps,
            cursor: self.cursor,
            seed: self.config.run.seed,
            mode: MODE.into(),
        };
        let path = checkpoint::save(
            &self.config.run.output_dir,
            &state,
            &self.config_toml,
            self.config.run.save_total_limit,
            |dir| {
                self.policy.save(&dir.join(checkpoint::MODEL_DIR))?;
                self.optimizer.save(&dir.join(checkpoint::OPTIMIZER_FILE))
            },
        )?;
        tracing::info!("checkpoint {}", path.display());
        Ok(path)
    }
}
