//! The CRPO maths as plain tensor functions (docs/algorithm.md maps each to its formula).
//! Shapes: N completions in groups of G consecutive rows, K objectives, C completion tokens.

#[cfg(test)]
use super::config::LossType;
use super::config::{Aggregation, ScaleRewards};
use tch::{Kind, Tensor};

/// Added to a standard deviation before dividing by it (TRL's value).
pub const STD_EPS: f64 = 1e-4;

/// Per-row mean and (unbiased, as torch.std) standard deviation of each group, broadcast back
/// to `[N]`. `values` is `[N]` with N a multiple of `group_size`.
fn group_stats(values: &Tensor, group_size: usize) -> (Tensor, Tensor) {
    let grouped = values.view([-1, group_size as i64]);
    let mean = grouped.mean_dim(-1, true, Kind::Float);
    let std = grouped.std_dim(-1, true, true);
    let expand = |t: Tensor| t.expand([-1, group_size as i64], false).reshape([-1]);
    (expand(mean), expand(std))
}

/// Centres `values` on their group mean and scales by the group's std, the batch's std, or not.
fn normalise(values: &Tensor, group_size: usize, scale: ScaleRewards) -> Tensor {
    let (mean, group_std) = group_stats(values, group_size);
    let centred = values - mean;
    match scale {
        ScaleRewards::Group => centred / (group_std + STD_EPS),
        ScaleRewards::Batch => centred / (values.std(true) + STD_EPS),
        ScaleRewards::None => centred,
    }
}

/// The total reward of one completion: Σ_k w_k r_k over its objective values.
pub fn weighted_total(values: &[f32], weights: &[f32]) -> f32 {
    values.iter().zip(weights).map(|(v, w)| v * w).sum()
}

/// Whether a group's totals all tie (the group carries no learning signal).
pub fn is_tied(totals: &[f32]) -> bool {
    let (low, high) = totals
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &t| {
            (lo.min(t), hi.max(t))
        });
    high - low <= 1e-6
}

/// One advantage per completion from `[N]` totals and `[N, K]` objective scores.
/// - sum_then_normalize (the paper): A = normalise(total).
/// - normalize_then_sum (GDPO): A = zscore_batch(Σ_k w_k normalise(r_k)).
pub fn advantages(
    totals: &Tensor,
    scores: &Tensor,
    weights: &Tensor,
    group_size: usize,
    aggregation: Aggregation,
    scale: ScaleRewards,
) -> Tensor {
    match aggregation {
        Aggregation::SumThenNormalize => normalise(totals, group_size, scale),
        Aggregation::NormalizeThenSum => {
            let objectives = scores.size()[1];
            let normalised = Tensor::stack(
                &(0..objectives)
                    .map(|k| normalise(&scores.select(1, k), group_size, scale))
                    .collect::<Vec<_>>(),
                1,
            );
            let summed = normalised.matmul(weights);
            (&summed - summed.mean(Kind::Float)) / (summed.std(true) + STD_EPS)
        }
    }
}

/// Per-token k3 estimate of KL(π‖π_ref): exp(ref − logp) − (ref − logp) − 1 (always ≥ 0).
pub fn k3_kl(logprobs: &Tensor, ref_logprobs: &Tensor) -> Tensor {
    let delta = ref_logprobs - logprobs;
    delta.exp() - &delta - 1.0
}

/// The clipped surrogate per token and where each clip was active.
pub struct Surrogate {
    /// min(ρA, clip(ρ, 1−ε, 1+ε_high)·A), `[N, C]`; to be maximised.
    pub objective: Tensor,
    /// ρ < 1−ε with A < 0: the update was stopped from pushing a bad token further down.
    pub clipped_low: Tensor,
    /// ρ > 1+ε_high with A > 0: the update was stopped from pushing a good token further up.
    pub clipped_high: Tensor,
}

/// `advantages` is `[N]`, the log-prob tensors `[N, C]`.
pub fn clipped_surrogate(
    logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    epsilon: f64,
    epsilon_high: f64,
) -> Surrogate {
    let ratio = (logprobs - old_logprobs).exp();
    let advantages = advantages.unsqueeze(1);
    let unclipped = &ratio * &advantages;
    let clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon_high) * &advantages;
    Surrogate {
        objective: unclipped.minimum(&clipped),
        clipped_low: ratio.lt(1.0 - epsilon).logical_and(&advantages.lt(0.0)),
        clipped_high: ratio.gt(1.0 + epsilon_high).logical_and(&advantages.gt(0.0)),
    }
}

/// The per-token loss to minimise: −surrogate + β·KL − entropy_coeff·entropy (the KL term
/// only with a reference). Out of place throughout: tch's `+=` is in-place, which autograd
/// must not see.
pub fn per_token_loss(
    surrogate: &Tensor,
    kl: Option<&Tensor>,
    beta: f64,
    entropies: &Tensor,
    entropy_coeff: f64,
) -> Tensor {
    let mut loss = -surrogate;
    if let Some(kl) = kl {
        loss = loss.g_add(&(kl * beta));
    }
    if entropy_coeff > 0.0 {
        loss = loss.g_sub(&(entropies * entropy_coeff));
    }
    loss
}

/// The loss of a pass: each completion's masked token sum of the per-token loss `[N, C]`,
/// times its weight `[N]` (the loss type's normaliser, from `micro_batches::plan`), summed.
pub fn weighted_token_sum(per_token: &Tensor, mask: &Tensor, row_weights: &Tensor) -> Tensor {
    ((per_token * mask).sum_dim_intlist(-1, false, Kind::Float) * row_weights).sum(Kind::Float)
}

/// The loss types' reductions of one micro-batch, as TRL defines them: what
/// `weighted_token_sum` with the planned weights must reproduce.
/// `max_completion_length` is dr_grpo's constant; `step_tokens` is dapo's normaliser (the
/// active tokens of the whole optimizer update).
#[cfg(test)]
pub fn reduce_loss(
    per_token: &Tensor,
    mask: &Tensor,
    loss_type: LossType,
    max_completion_length: usize,
    step_tokens: f64,
) -> Tensor {
    let masked = per_token * mask;
    match loss_type {
        LossType::Grpo => {
            let per_sequence = masked.sum_dim_intlist(-1, false, Kind::Float)
                / mask.sum_dim_intlist(-1, false, Kind::Float).clamp_min(1.0);
            per_sequence.mean(Kind::Float)
        }
        LossType::Bnpo => masked.sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0),
        LossType::DrGrpo => {
            masked.sum(Kind::Float) / (per_token.size()[0] as f64 * max_completion_length as f64)
        }
        LossType::Dapo => masked.sum(Kind::Float) / step_tokens.max(1.0),
    }
}

/// Mean of `values` `[N, C]` over the tokens where `mask` is 1.
pub fn masked_mean(values: &Tensor, mask: &Tensor) -> Tensor {
    (values * mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32]) -> Tensor {
        Tensor::from_slice(values)
    }

    fn values(tensor: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(tensor.reshape([-1])).unwrap()
    }

    fn assert_close(actual: &Tensor, expected: &[f32]) {
        let actual = values(actual);
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-4, "{actual:?} vs {expected:?}");
        }
    }

    /// Two groups of two completions, two objectives weighted 10 and 1.
    fn scores() -> Tensor {
        // totals: 11, 0 | 10, 10.5
        t(&[1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.5]).view([4, 2])
    }

    fn weights() -> Tensor {
        t(&[10.0, 1.0])
    }

    /// `advantages` from scores alone, the totals computed as the trainer does.
    fn advantages_of(scores: &Tensor, aggregation: Aggregation, scale: ScaleRewards) -> Tensor {
        let rows: Vec<f32> = values(scores);
        let totals: Vec<f32> = rows.chunks(2).map(|r| weighted_total(r, &[10.0, 1.0])).collect();
        advantages(&t(&totals), scores, &weights(), 2, aggregation, scale)
    }

    #[test]
    fn sum_then_normalize_with_group_scaling() {
        // Group 1: mean 5.5, unbiased std 7.7782 → ±5.5 / 7.7783 = ±0.70710.
        // Group 2: mean 10.25, std 0.35355 → ∓0.25 / 0.35365 = ∓0.70691.
        let a = advantages_of(&scores(), Aggregation::SumThenNormalize, ScaleRewards::Group);
        assert_close(&a, &[0.707_097, -0.707_097, -0.706_907, 0.706_907]);
    }

    #[test]
    fn sum_then_normalize_with_batch_or_no_scaling() {
        // Batch std of [11, 0, 10, 10.5] (unbiased) = 5.265849; group means still centre.
        let a = advantages_of(&scores(), Aggregation::SumThenNormalize, ScaleRewards::Batch);
        assert_close(&a, &[1.044_446, -1.044_446, -0.047_475, 0.047_475]);
        let a = advantages_of(&scores(), Aggregation::SumThenNormalize, ScaleRewards::None);
        assert_close(&a, &[5.5, -5.5, -0.25, 0.25]);
    }

    #[test]
    fn normalize_then_sum_weighs_each_objective_within_its_group() {
        // Objective 1 per group: [1,0] → ±0.70706, [1,1] → 0, 0.
        // Objective 2: [1,0] → ±0.70706, [0,0.5] → ∓0.70569 (std 0.35355 + 1e-4).
        // Weighted: 10·o1 + o2 = [7.777075, −7.777075, −0.706907, 0.706907], mean 0, unbiased
        // std 6.376247: the batch z-score below.
        let a = advantages_of(&scores(), Aggregation::NormalizeThenSum, ScaleRewards::Group);
        assert_close(&a, &[1.219_697, -1.219_697, -0.110_866, 0.110_866]);
    }

    #[test]
    fn a_tied_group_gets_zero_advantage_and_is_counted() {
        let tied = t(&[1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).view([4, 2]);
        let a = advantages_of(&tied, Aggregation::SumThenNormalize, ScaleRewards::Group);
        assert_close(&a, &[0.0, 0.0, -0.707_07, 0.707_07]);
        assert!(is_tied(&[10.0, 10.0]) && !is_tied(&[0.0, 1.0]));
    }

    #[test]
    fn k3_is_zero_at_equal_policies_and_matches_the_formula() {
        let logp = t(&[-1.0, -2.0]);
        assert_close(&k3_kl(&logp, &logp), &[0.0, 0.0]);
        // ref − logp = 0.5: e^0.5 − 0.5 − 1 = 0.148721; = −0.5: e^−0.5 + 0.5 − 1 = 0.106531.
        assert_close(
            &k3_kl(&t(&[-1.0, -2.0]), &t(&[-0.5, -2.5])),
            &[0.148_721, 0.106_531],
        );
    }

    #[test]
    fn the_surrogate_clips_asymmetrically() {
        // Ratios e^0.4 = 1.4918 (A = +1, upper clip 1.28 applies) and e^-0.4 = 0.6703 (A = −1,
        // lower clip 0.8 applies: min(−0.6703, −0.8) = −0.8); ratio 1 (A = 2) is untouched.
        let logp = t(&[0.4, -0.4, 0.0]).view([3, 1]);
        let old = Tensor::zeros([3, 1], (Kind::Float, tch::Device::Cpu));
        let s = clipped_surrogate(&logp, &old, &t(&[1.0, -1.0, 2.0]), 0.2, 0.28);
        assert_close(&s.objective, &[1.28, -0.8, 2.0]);
        assert_eq!(values(&s.clipped_high.to_kind(Kind::Float)), [1.0, 0.0, 0.0]);
        assert_eq!(values(&s.clipped_low.to_kind(Kind::Float)), [0.0, 1.0, 0.0]);
        // A positive advantage below the lower clip is not clipped (min picks ρA).
        let s = clipped_surrogate(
            &t(&[-0.4]).view([1, 1]),
            &old.narrow(0, 0, 1),
            &t(&[1.0]),
            0.2,
            0.2,
        );
        assert_close(&s.objective, &[0.670_32]);
    }

    #[test]
    fn the_per_token_loss_adds_kl_and_subtracts_the_entropy_bonus() {
        // −0.5 + 0.1·0.2 − 0.01·1.5 = −0.495; without a reference: −0.5 − 0.015 = −0.515.
        let (surrogate, kl, entropy) = (t(&[0.5]), t(&[0.2]), t(&[1.5]));
        assert_close(
            &per_token_loss(&surrogate, Some(&kl), 0.1, &entropy, 0.01),
            &[-0.495],
        );
        assert_close(&per_token_loss(&surrogate, None, 0.1, &entropy, 0.01), &[-0.515]);
        assert_close(&per_token_loss(&surrogate, None, 0.1, &entropy, 0.0), &[-0.5]);
    }

    #[test]
    fn each_loss_reduction() {
        // Sequence 1 has 3 tokens (1, 2, 3), sequence 2 has 1 token (4).
        let loss = t(&[1.0, 2.0, 3.0, 4.0, 9.0, 9.0]).view([2, 3]);
        let mask = t(&[1.0, 1.0, 1.0, 1.0, 0.0, 0.0]).view([2, 3]);
        let reduce = |kind, tokens| reduce_loss(&loss, &mask, kind, 4, tokens).double_value(&[]);
        assert!((reduce(LossType::Grpo, 0.0) - 3.0).abs() < 1e-6, "(2 + 4) / 2");
        assert!((reduce(LossType::Bnpo, 0.0) - 2.5).abs() < 1e-6, "10 / 4");
        assert!(
            (reduce(LossType::DrGrpo, 0.0) - 1.25).abs() < 1e-6,
            "10 / (2 · 4)"
        );
        assert!(
            (reduce(LossType::Dapo, 8.0) - 1.25).abs() < 1e-6,
            "10 / 8 step tokens"
        );
    }

    #[test]
    fn masked_mean_ignores_padding() {
        let v = t(&[1.0, 3.0, 100.0]).view([1, 3]);
        let m = t(&[1.0, 1.0, 0.0]).view([1, 3]);
        assert_eq!(masked_mean(&v, &m).double_value(&[]), 2.0);
    }
}
