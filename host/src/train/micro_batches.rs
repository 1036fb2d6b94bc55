//! How one step's completions are cut into optimizer updates and forward passes.
//!
//! The loss is defined over *nominal* micro-batches, as TRL's: consecutive runs of
//! `per_device_train_batch_size` completions, `gradient_accumulation_steps` of them per
//! optimizer update. What runs through the model is a separate choice: completions of very
//! different lengths padded into one pass waste most of it (a 1,000-token completion beside
//! fifteen of 50 makes the pass 16 × 1,000), so with `group_by_length` an update's completions
//! are ordered by length before they are cut into passes, and `max_tokens_per_micro_batch`
//! caps a pass's padded size. Each completion carries the weight its nominal micro-batch gives
//! it (`row_weights`), so the loss — and the update — is the same whatever the passes.

use super::config::{AlgorithmConfig, LossType};

/// One optimizer update: its forward passes (indices into the step's completions, equal
/// prompts kept consecutive so they share a prompt pass) and each completion's loss weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub passes: Vec<Vec<usize>>,
    /// Indexed like the step's completions; the weight of a completion's token sum in the
    /// loss (0 for completions of other updates).
    pub row_weights: Vec<f64>,
}

/// A step's completions as the planner sees them.
pub struct Rows<'a> {
    pub prompts: &'a [Vec<i64>],
    pub completions: &'a [Vec<i64>],
    /// Whether each completion counts in the loss (`mask_truncated_completions`).
    pub counted: &'a [bool],
}

/// The step's updates, in order.
pub fn plan(rows: &Rows<'_>, algorithm: &AlgorithmConfig) -> Vec<Update> {
    plan_across(rows, algorithm, 1)
}

/// The step's updates when `world_size` ranks share them: `per_device_train_batch_size` is per
/// rank, as in TRL, so a nominal micro-batch holds `world_size` times as many completions and
/// its passes (at most `per_device_train_batch_size` each) are spread over the ranks.
pub fn plan_across(rows: &Rows<'_>, algorithm: &AlgorithmConfig, world_size: usize) -> Vec<Update> {
    let n = rows.completions.len();
    let nominal: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(algorithm.mini_batch_size.max(1) * world_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    nominal
        .chunks(algorithm.gradient_accumulation_steps.max(1))
        .map(|micro_batches| Update {
            passes: passes(rows, micro_batches, algorithm),
            row_weights: row_weights(rows, micro_batches, algorithm),
        })
        .collect()
}

/// The weight of each completion's masked token sum so that the update's loss is the loss
/// type's reduction over the nominal `micro_batches`, averaged over them (dapo: over the
/// update's tokens).
fn row_weights(rows: &Rows<'_>, micro_batches: &[Vec<usize>], algorithm: &AlgorithmConfig) -> Vec<f64> {
    let counted_len = |i: usize| {
        if rows.counted[i] {
            rows.completions[i].len()
        } else {
            0
        }
    };
    let update_tokens: usize = micro_batches.iter().flatten().map(|&i| counted_len(i)).sum();
    let count = micro_batches.len() as f64;
    let mut weights = vec![0.0; rows.completions.len()];
    for micro_batch in micro_batches {
        let size = micro_batch.len() as f64;
        let tokens: usize = micro_batch.iter().map(|&i| counted_len(i)).sum();
        for &i in micro_batch {
            weights[i] = match algorithm.loss_type {
                LossType::Grpo => 1.0 / (counted_len(i).max(1) as f64 * size * count),
                LossType::Bnpo => 1.0 / (tokens.max(1) as f64 * count),
                LossType::DrGrpo => 1.0 / (size * algorithm.max_completion_length as f64 * count),
                LossType::Dapo => 1.0 / update_tokens.max(1) as f64,
            };
        }
    }
    weights
}

/// The update's forward passes: the nominal micro-batches (cut further by the token budget),
/// or, with `group_by_length`, its completions in order of length cut the same way —
/// whichever runs fewer padded tokens through the model.
fn passes(rows: &Rows<'_>, micro_batches: &[Vec<usize>], algorithm: &AlgorithmConfig) -> Vec<Vec<usize>> {
    let budget = algorithm.max_tokens_per_micro_batch;
    let in_order: Vec<Vec<usize>> = micro_batches
        .iter()
        .flat_map(|micro_batch| cut(rows, micro_batch, algorithm.mini_batch_size, budget))
        .collect();
    if !algorithm.group_by_length {
        return in_order;
    }
    let mut by_length: Vec<usize> = micro_batches.iter().flatten().copied().collect();
    by_length.sort_by_key(|&i| rows.completions[i].len());
    let mut bucketed = cut(rows, &by_length, algorithm.mini_batch_size, budget);
    for pass in &mut bucketed {
        // Back in step order: a group's completions sit together and share a prompt pass.
        pass.sort_unstable();
    }
    let cost = |plan: &[Vec<usize>]| plan.iter().map(|pass| padded_tokens(rows, pass)).sum::<usize>();
    if cost(&bucketed) < cost(&in_order) {
        bucketed
    } else {
        in_order
    }
}

/// Cuts `order` into passes of at most `size` completions and, with a budget, at most
/// `budget` padded tokens (a completion over the budget alone runs alone).
fn cut(rows: &Rows<'_>, order: &[usize], size: usize, budget: Option<usize>) -> Vec<Vec<usize>> {
    let mut passes: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for &i in order {
        let mut grown = current.clone();
        grown.push(i);
        let over_budget = budget.is_some_and(|budget| padded_tokens(rows, &grown) > budget);
        if !current.is_empty() && (current.len() >= size.max(1) || over_budget) {
            passes.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        passes.push(current);
    }
    passes
}

/// Tokens a pass runs, padding included: each distinct run of equal prompts once at the
/// longest prompt's width, each completion at the longest completion's.
pub fn padded_tokens(rows: &Rows<'_>, pass: &[usize]) -> usize {
    let mut sorted = pass.to_vec();
    sorted.sort_unstable();
    let prompt_width = sorted.iter().map(|&i| rows.prompts[i].len()).max().unwrap_or(0);
    let completion_width = sorted
        .iter()
        .map(|&i| rows.completions[i].len())
        .max()
        .unwrap_or(0)
        .max(1);
    let distinct_prompts = sorted
        .iter()
        .enumerate()
        .filter(|&(k, &i)| k == 0 || rows.prompts[sorted[k - 1]] != rows.prompts[i])
        .count();
    distinct_prompts * prompt_width + sorted.len() * completion_width
}

#[cfg(test)]
mod tests {
    use super::*;

    fn algorithm(loss_type: LossType, mini_batch_size: usize, accumulation: usize) -> AlgorithmConfig {
        AlgorithmConfig {
            loss_type,
            mini_batch_size,
            gradient_accumulation_steps: accumulation,
            max_completion_length: 8,
            ..AlgorithmConfig::default()
        }
    }

    /// Two prompts, two completions each: lengths 1, 6, 2, 5.
    fn step() -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
        let prompts = vec![vec![1, 2], vec![1, 2], vec![3], vec![3]];
        let completions = [1, 6, 2, 5].iter().map(|&len| vec![9; len]).collect();
        (prompts, completions)
    }

    #[test]
    fn weights_reproduce_each_loss_type_over_nominal_micro_batches() {
        let (prompts, completions) = step();
        let counted = [true, true, false, true];
        let rows = Rows {
            prompts: &prompts,
            completions: &completions,
            counted: &counted,
        };
        // Nominal micro-batches {0,1} and {2,3}, one update; row 2 is masked (0 tokens).
        let weights = |loss| plan(&rows, &algorithm(loss, 2, 2))[0].row_weights.clone();
        // grpo: 1 / (own tokens × micro-batch size × micro-batches).
        assert_eq!(
            weights(LossType::Grpo),
            vec![1.0 / 4.0, 1.0 / 24.0, 1.0 / 4.0, 1.0 / 20.0]
        );
        // bnpo: 1 / (micro-batch tokens × micro-batches): 7 and 5 tokens.
        assert_eq!(
            weights(LossType::Bnpo),
            vec![1.0 / 14.0, 1.0 / 14.0, 1.0 / 10.0, 1.0 / 10.0]
        );
        // dr_grpo: 1 / (micro-batch size × max_completion_length × micro-batches).
        assert_eq!(weights(LossType::DrGrpo), vec![1.0 / 32.0; 4]);
        // dapo: 1 / the update's 12 tokens.
        assert_eq!(weights(LossType::Dapo), vec![1.0 / 12.0; 4]);
    }

    #[test]
    fn updates_follow_gradient_accumulation() {
        let (prompts, completions) = step();
        let rows = Rows {
            prompts: &prompts,
            completions: &completions,
            counted: &[true; 4],
        };
        let updates = plan(&rows, &algorithm(LossType::Dapo, 1, 2));
        assert_eq!(updates.len(), 2);
        // Each update normalises by its own tokens: 1 + 6 and 2 + 5.
        assert_eq!(updates[0].row_weights, vec![1.0 / 7.0, 1.0 / 7.0, 0.0, 0.0]);
        assert_eq!(updates[1].row_weights, vec![0.0, 0.0, 1.0 / 7.0, 1.0 / 7.0]);
    }

    #[test]
    fn ranks_share_a_nominal_micro_batch_as_accumulation_would() {
        let (prompts, completions) = step();
        let rows = Rows {
            prompts: &prompts,
            completions: &completions,
            counted: &[true; 4],
        };
        for loss in [LossType::Grpo, LossType::Dapo, LossType::DrGrpo] {
            // Two ranks of 2 completions: one update of 4, in passes of at most 2 — the update
            // one process makes accumulating two micro-batches of 2.
            let across = plan_across(&rows, &algorithm(loss, 2, 1), 2);
            let accumulated = plan(&rows, &algorithm(loss, 2, 2));
            assert_eq!(across.len(), 1);
            assert_eq!(across[0].row_weights, accumulated[0].row_weights, "{loss:?}");
            assert!(across[0].passes.iter().all(|pass| pass.len() <= 2));
        }
    }

    #[test]
    fn completions_of_like_length_share_a_pass_when_that_pads_less() {
        let (prompts, completions) = step();
        let rows = Rows {
            prompts: &prompts,
            completions: &completions,
            counted: &[true; 4],
        };
        let mut config = algorithm(LossType::Dapo, 2, 2);
        // In order: {0,1} 2 + 2×6 = 14, {2,3} 1 + 2×5 = 11 → 25. By length: {0,2} (lengths
        // 1, 2) two prompts at width 2 + 2×2 = 8, {1,3} (6, 5) 4 + 2×6 = 16 → 24.
        assert_eq!(plan(&rows, &config)[0].passes, vec![vec![0, 2], vec![1, 3]]);
        config.group_by_length = false;
        assert_eq!(plan(&rows, &config)[0].passes, vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn equal_lengths_keep_the_step_order_and_the_shared_prompts() {
        let prompts = vec![vec![1], vec![1], vec![2], vec![2]];
        let completions = vec![vec![5; 4]; 4];
        let rows = Rows {
            prompts: &prompts,
            completions: &completions,
            counted: &[true; 4],
        };
        let updates = plan(&rows, &algorithm(LossType::Dapo, 2, 2));
        assert_eq!(updates[0].passes, vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn a_token_budget_cuts_passes_and_a_long_completion_runs_alone() {
        let (prompts, completions) = step();
        let rows = Rows {
            prompts: &prompts,
            completions: &completions,
            counted: &[true; 4],
        };
        let mut config = algorithm(LossType::Dapo, 4, 1);
        config.group_by_length = false;
        config.max_tokens_per_micro_batch = Some(8);
        // {0}: 2 + 1 = 3; {0,1} would be 2 + 12 = 14 > 8 → cut; {1} = 8; {1,2} > 8;
        // {2}: 1 + 2 = 3, {2,3}: 1 + 10 = 11 > 8 → cut; {3} = 6.
        assert_eq!(
            plan(&rows, &config)[0].passes,
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
        config.max_tokens_per_micro_batch = Some(4);
        // Row 1 alone is 8 tokens, over the budget: it still runs, alone.
        assert!(plan(&rows, &config)[0].passes.contains(&vec![1]));
    }

    #[test]
    fn padded_tokens_count_each_prompt_run_once() {
        let (prompts, completions) = step();
        let rows = Rows {
            prompts: &prompts,
            completions: &completions,
            counted: &[true; 4],
        };
        assert_eq!(padded_tokens(&rows, &[0, 1, 2, 3]), 2 * 2 + 4 * 6);
        assert_eq!(padded_tokens(&rows, &[2, 3]), 1 + 2 * 5);
    }

    #[test]
    fn weighted_sums_equal_the_loss_types_reductions_averaged_over_micro_batches() {
        use super::super::maths::{reduce_loss, weighted_token_sum};
        use tch::{Kind, Tensor};
        let (prompts, completions) = step();
        let counted = [true, false, true, true];
        let rows = Rows {
            prompts: &prompts,
            completions: &completions,
            counted: &counted,
        };
        let per_token = Tensor::randn([4, 6], (Kind::Float, tch::Device::Cpu));
        let mask_of = |i: usize| -> Vec<f32> {
            let len = if counted[i] { completions[i].len() } else { 0 };
            (0..6).map(|t| f32::from(u8::from(t < len))).collect()
        };
        let mask = Tensor::from_slice(&(0..4).flat_map(mask_of).collect::<Vec<_>>()).view([4, 6]);
        for loss_type in [LossType::Grpo, LossType::Bnpo, LossType::DrGrpo, LossType::Dapo] {
            let config = algorithm(loss_type, 2, 2);
            let weights = &plan(&rows, &config)[0].row_weights;
            let weights = Tensor::from_slice(&weights.iter().map(|&w| w as f32).collect::<Vec<_>>());
            let planned = weighted_token_sum(&per_token, &mask, &weights).double_value(&[]);
            let micro = |start: i64| {
                let loss = reduce_loss(
                    &per_token.narrow(0, start, 2),
                    &mask.narrow(0, start, 2),
                    loss_type,
                    8,
                    mask.sum(Kind::Float).double_value(&[]),
                );
                loss.double_value(&[])
            };
            let averaged = if loss_type == LossType::Dapo { 1.0 } else { 0.5 };
            let expected = (micro(0) + micro(2)) * averaged;
            assert!(
                (planned - expected).abs() < 1e-5,
                "{loss_type:?}: {planned} vs {expected}"
            );
        }
    }
}
