//! The policy update of one step: PPO epochs over the step's completions, one optimizer
//! update per `gradient_accumulation_steps` micro-batches, each run in the forward passes
//! `micro_batches::plan` chose.

use super::config::AlgorithmConfig;
use super::loss::{pass_loss, LossStats};
use super::micro_batches::{padded_tokens, plan_across, Rows};
use super::optimizer::AdamW;
use crate::distributed::{shard, World};
use crate::rollout::Policy;
use anyhow::bail;
use tch::Tensor;

/// What the updates of one step did.
#[derive(Debug, Clone, Default)]
pub struct UpdateStats {
    /// Mean loss per optimizer update.
    pub loss: f64,
    /// Per completion token.
    pub kl: f64,
    pub entropy: f64,
    pub clip_low: f64,
    pub clip_high: f64,
    /// Of the last update.
    pub grad_norm: f64,
    pub lr: f64,
    pub updates: usize,
    /// Prompt and completion tokens run through the policy with grad.
    pub tokens: usize,
    /// An update's loss or gradient norm was not finite: it and the step's remaining updates
    /// were skipped (the weights and optimizer state are as the last finite update left them).
    pub nonfinite: bool,
}

/// The step's completions: prompt and completion ids, one advantage each, and which were
/// cut at the budget (left out of the loss under `mask_truncated_completions`).
pub struct Batch<'a> {
    pub prompts: &'a [Vec<i64>],
    pub completions: &'a [Vec<i64>],
    pub advantages: &'a [f32],
    pub truncated: &'a [bool],
}

impl Batch<'_> {
    /// Whether row `i` counts in the loss.
    fn counts(&self, i: usize, algorithm: &AlgorithmConfig) -> bool {
        !(algorithm.mask_truncated_completions && self.truncated.get(i).copied().unwrap_or(false))
    }
}

/// The model the KL term measures against.
#[derive(Clone, Copy)]
pub enum Reference<'a> {
    /// beta = 0: no KL term.
    None,
    /// The frozen initial model, loaded beside the policy.
    Model(&'a Policy),
    /// The policy's own base, its LoRA adapters off: no second copy of the weights.
    AdaptersOff,
}

/// Updates `policy` on `batch` against `reference`, `step` the
/// step being taken (for messages), `nominal_updates` the run's planned optimizer updates (the
/// schedule's length). Across ranks (`world`) every rank holds the whole batch and plans the
/// same updates; each runs its share of every update's passes, and the gradients are summed
/// before the optimizer step, so the update is the one a single process would make.
#[allow(clippy::too_many_arguments)]
pub fn update_policy(
    policy: &Policy,
    reference: Reference<'_>,
    optimizer: &mut AdamW,
    batch: &Batch<'_>,
    algorithm: &AlgorithmConfig,
    step: usize,
    nominal_updates: usize,
    world: Option<&World>,
) -> anyhow::Result<UpdateStats> {
    let counted: Vec<bool> = (0..batch.completions.len())
        .map(|i| batch.counts(i, algorithm))
        .collect();
    let rows = Rows {
        prompts: batch.prompts,
        completions: batch.completions,
        counted: &counted,
    };
    let world_size = world.map_or(1, |w| w.size);
    let updates = plan_across(&rows, algorithm, world_size);
    // Per update, per pass: whether this rank runs it.
    let mine: Vec<Vec<bool>> = updates
        .iter()
        .map(|update| {
            let costs: Vec<usize> = update
                .passes
                .iter()
                .map(|pass| padded_tokens(&rows, pass))
                .collect();
            shard::assign_passes(&costs, world_size)
                .into_iter()
                .map(|owner| owner == world.map_or(0, |w| w.rank))
                .collect()
        })
        .collect();
    let pick = |rows: &[usize], from: &[Vec<i64>]| rows.iter().map(|&i| from[i].clone()).collect::<Vec<_>>();
    // With a single update the sampling policy is the current one: its log-probs are the
    // detached current ones. Otherwise they are computed once, before any update.
    let single_update = updates.len() * algorithm.num_iterations == 1;
    // Every pass scores the distribution the completions were sampled from.
    let temperature = algorithm.temperature;
    // Per update, per pass.
    let (mut old, mut reference_logprobs) = (Vec::new(), Vec::new());
    {
        let _guard = tch::no_grad_guard();
        for update in &updates {
            let (mut update_old, mut update_reference) = (Vec::new(), Vec::new());
            for (p, rows) in update.passes.iter().enumerate() {
                if !mine[old.len()][p] {
                    // Another rank's pass: a placeholder keeps the indices.
                    update_old.push(Tensor::new());
                    update_reference.push(Tensor::new());
                    continue;
                }
                let (prompts, completions) = (pick(rows, batch.prompts), pick(rows, batch.completions));
                update_old.push(if single_update {
                    Tensor::new()
                } else {
                    policy
                        .sampled_logprobs(&prompts, &completions, temperature, false)?
                        .logprobs
                });
                update_reference.push(match reference {
                    Reference::None => Tensor::new(),
                    Reference::Model(model) => {
                        model
                            .sampled_logprobs(&prompts, &completions, temperature, false)?
                            .logprobs
                    }
                    Reference::AdaptersOff => {
                        policy
                            .base_logprobs(&prompts, &completions, temperature)?
                            .logprobs
                    }
                });
            }
            old.push(update_old);
            reference_logprobs.push(update_reference);
        }
    }
    let mut stats = UpdateStats::default();
    let mut sums = LossStats::default();
    'updates: for _ in 0..algorithm.num_iterations {
        for (u, update) in updates.iter().enumerate() {
            let mut update_loss = 0.0;
            let mut skipped = false;
            let last_pass_here = mine[u].iter().rposition(|&m| m);
            for (p, rows) in update.passes.iter().enumerate() {
                if !mine[u][p] {
                    continue;
                }
                let (prompts, completions) = (pick(rows, batch.prompts), pick(rows, batch.completions));
                let on_device = |values: Vec<f32>| Tensor::from_slice(&values).to_device(policy.device);
                let advantages = on_device(rows.iter().map(|&i| batch.advantages[i]).collect());
                let row_weights = on_device(rows.iter().map(|&i| update.row_weights[i] as f32).collect());
                let mut current = policy.sampled_logprobs(
                    &prompts,
                    &completions,
                    temperature,
                    algorithm.entropy_coeff > 0.0,
                )?;
                let keep = rows.iter().any(|&i| !counted[i]).then(|| {
                    on_device(rows.iter().map(|&i| f32::from(u8::from(counted[i]))).collect()).unsqueeze(1)
                });
                if let Some(keep) = &keep {
                    current.mask = &current.mask * keep;
                    current.logprobs = &current.logprobs * keep;
                    current.entropies = &current.entropies * keep;
                }
                let old_logprobs = match (single_update, &keep) {
                    (true, _) => current.logprobs.detach(),
                    // Zeroed where the current ones are: the ratio of a left-out row is then 1,
                    // never exp(−old), which overflows (and inf × mask 0 is NaN) below −88.
                    (false, Some(keep)) => &old[u][p] * keep,
                    (false, None) => old[u][p].shallow_clone(),
                };
                let reference = &reference_logprobs[u][p];
                let (loss, pass_stats) = pass_loss(
                    &current,
                    &old_logprobs,
                    reference.defined().then_some(reference),
                    &advantages,
                    algorithm,
                    &row_weights,
                );
                let value = loss.double_value(&[]);
                if !value.is_finite() {
                    tracing::warn!("step {step}: the loss is {value}; the update is skipped");
                    skipped = true;
                    break;
                }
                if let Some(world) = world.filter(|_| Some(p) == last_pass_here) {
                    // Its gradients are final as the backward makes them: their sums start
                    // while it goes on.
                    world.arm_gradient_sums(&optimizer.parameters())?;
                }
                loss.backward();
                sums += pass_stats;
                update_loss += value;
                stats.tokens += prompts.iter().chain(&completions).map(Vec::len).sum::<usize>();
            }
            if let Some(world) = world {
                skipped = sum_gradients(world, optimizer, skipped)?;
            }
            if skipped {
                stats.nonfinite = true;
                break 'updates;
            }
            let grad_norm = optimizer.clip_grad_norm(algorithm.max_grad_norm);
            if !grad_norm.is_finite() {
                tracing::warn!("step {step}: the gradient norm is {grad_norm}; the update is skipped");
                stats.nonfinite = true;
                break 'updates;
            }
            stats.grad_norm = grad_norm;
            stats.loss += update_loss;
            stats.lr = algorithm.learning_rate_at(optimizer.steps as usize, nominal_updates);
            if !optimizer.step(stats.lr) {
                bail!(
                    "step {step}: the update made weights non-finite (learning rate {:.3e}); the run stops before anything is checkpointed: lower algorithm.learning_rate",
                    stats.lr
                );
            }
            optimizer.zero_grad();
            stats.updates += 1;
        }
    }
    // A skipped update leaves no gradient behind for the next step.
    optimizer.zero_grad();
    if let Some(world) = world {
        sum_statistics(world, &mut stats, &mut sums)?;
    }
    let tokens = sums.tokens.max(1.0);
    stats.kl = sums.kl / tokens;
    stats.entropy = sums.entropy / tokens;
    stats.clip_low = sums.clipped_low / tokens;
    stats.clip_high = sums.clipped_high / tokens;
    stats.loss /= stats.updates.max(1) as f64;
    Ok(stats)
}

/// The gradient sum's name in messages and timings.
pub const SUMMING_GRADIENTS: &str = "summing gradients";

/// Sums every rank's gradients (the passes of an update are split among them, so the sum is
/// the update's whole gradient; most of it was sent during the last backward), then whether
/// any rank's loss was not finite: then every rank skips the update. Returns whether it is
/// skipped.
fn sum_gradients(world: &World, optimizer: &AdamW, skipped_here: bool) -> anyhow::Result<bool> {
    world.finish_gradient_sums(SUMMING_GRADIENTS, &optimizer.parameters())?;
    let flag = Tensor::from_slice(&[f64::from(u8::from(skipped_here))]);
    world.all_reduce_sum("agreeing the loss is finite", &[&flag])?;
    Ok(flag.double_value(&[0]) > 0.0)
}

/// Every rank's loss and token statistics summed: the step's, as one process would report it.
fn sum_statistics(world: &World, stats: &mut UpdateStats, sums: &mut LossStats) -> anyhow::Result<()> {
    let values = Tensor::from_slice(&[
        stats.loss,
        stats.tokens as f64,
        sums.kl,
        sums.entropy,
        sums.clipped_low,
        sums.clipped_high,
        sums.tokens,
    ]);
    world.all_reduce_sum("summing the step's statistics", &[&values])?;
    let v = Vec::<f64>::try_from(&values)?;
    stats.loss = v[0];
    stats.tokens = v[1] as usize;
    *sums = LossStats {
        kl: v[2],
        entropy: v[3],
        clipped_low: v[4],
        clipped_high: v[5],
        tokens: v[6],
    };
    Ok(())
}
