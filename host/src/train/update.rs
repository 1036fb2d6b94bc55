//! The policy update of one step: PPO epochs over the step's completions, one optimizer
//! update per `gradient_accumulation_steps` micro-batches, each run in the forward passes
//! `micro_batches::plan` chose.

use super::config::AlgorithmConfig;
use super::loss::{pass_loss, LossStats};
use super::micro_batches::{plan, Rows};
use super::optimizer::{learning_rate, AdamW};
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
/// schedule's length).
pub fn update_policy(
    policy: &Policy,
    reference: Reference<'_>,
    optimizer: &mut AdamW,
    batch: &Batch<'_>,
    algorithm: &AlgorithmConfig,
    step: usize,
    nominal_updates: usize,
) -> anyhow::Result<UpdateStats> {
    let counted: Vec<bool> = (0..batch.completions.len())
        .map(|i| batch.counts(i, algorithm))
        .collect();
    let updates = plan(
        &Rows {
            prompts: batch.prompts,
            completions: batch.completions,
            counted: &counted,
        },
        algorithm,
    );
    let pick = |rows: &[usize], from: &[Vec<i64>]| rows.iter().map(|&i| from[i].clone()).collect::<Vec<_>>();
    // With a single update the sampling policy is the current one: its log-probs are the
    // detached current ones. Otherwise they are computed once, before any update.
    let single_update = updates.len() * algorithm.num_iterations == 1;
    // Per update, per pass.
    let (mut old, mut reference_logprobs) = (Vec::new(), Vec::new());
    {
        let _guard = tch::no_grad_guard();
        for update in &updates {
            let (mut update_old, mut update_reference) = (Vec::new(), Vec::new());
            for rows in &update.passes {
                let (prompts, completions) = (pick(rows, batch.prompts), pick(rows, batch.completions));
                if !single_update {
                    update_old.push(policy.logprobs(&prompts, &completions, false)?.logprobs);
                }
                match reference {
                    Reference::None => {}
                    Reference::Model(model) => {
                        update_reference.push(model.logprobs(&prompts, &completions, false)?.logprobs)
                    }
                    Reference::AdaptersOff => {
                        update_reference.push(policy.base_logprobs(&prompts, &completions)?.logprobs)
                    }
                }
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
            for (p, rows) in update.passes.iter().enumerate() {
                let (prompts, completions) = (pick(rows, batch.prompts), pick(rows, batch.completions));
                let on_device = |values: Vec<f32>| Tensor::from_slice(&values).to_device(policy.device);
                let advantages = on_device(rows.iter().map(|&i| batch.advantages[i]).collect());
                let row_weights = on_device(rows.iter().map(|&i| update.row_weights[i] as f32).collect());
                let mut current = policy.logprobs(&prompts, &completions, algorithm.entropy_coeff > 0.0)?;
                if rows.iter().any(|&i| !counted[i]) {
                    let keep = on_device(rows.iter().map(|&i| f32::from(u8::from(counted[i]))).collect())
                        .unsqueeze(1);
                    current.mask = &current.mask * &keep;
                    current.logprobs = &current.logprobs * &keep;
                    current.entropies = &current.entropies * &keep;
                }
                let old_logprobs = if single_update {
                    current.logprobs.detach()
                } else {
                    old[u][p].shallow_clone()
                };
                let (loss, pass_stats) = pass_loss(
                    &current,
                    &old_logprobs,
                    reference_logprobs[u].get(p),
                    &advantages,
                    algorithm,
                    &row_weights,
                );
                let value = loss.double_value(&[]);
                if !value.is_finite() {
                    tracing::warn!("step {step}: the loss is {value}; the update is skipped");
                    stats.nonfinite = true;
                    break 'updates;
                }
                loss.backward();
                sums += pass_stats;
                update_loss += value;
                stats.tokens += prompts.iter().chain(&completions).map(Vec::len).sum::<usize>();
            }
            let grad_norm = optimizer.clip_grad_norm(algorithm.max_grad_norm);
            if !grad_norm.is_finite() {
                tracing::warn!("step {step}: the gradient norm is {grad_norm}; the update is skipped");
                stats.nonfinite = true;
                break 'updates;
            }
            stats.grad_norm = grad_norm;
            stats.loss += update_loss;
            stats.lr = learning_rate(
                algorithm.learning_rate,
                algorithm.lr_scheduler_type,
                algorithm.warmup_steps,
                optimizer.steps as usize,
                nominal_updates,
            );
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
    let tokens = sums.tokens.max(1.0);
    stats.kl = sums.kl / tokens;
    stats.entropy = sums.entropy / tokens;
    stats.clip_low = sums.clipped_low / tokens;
    stats.clip_high = sums.clipped_high / tokens;
    stats.loss /= stats.updates.max(1) as f64;
    Ok(stats)
}
