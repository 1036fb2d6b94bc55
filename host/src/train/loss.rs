//! The CRPO loss of one forward pass: the clipped surrogate, the k3 KL to the reference and
//! the entropy bonus, per token, each completion's sum weighted as its loss type and nominal
//! micro-batch say (`micro_batches.rs`; the maths is `maths.rs`), with the statistics the step
//! reports.

use super::config::AlgorithmConfig;
use super::maths;
use crate::rollout::logprobs::TokenLogProbs;
use tch::{Kind, Tensor};

/// Sums over a pass's completion tokens, for the step's means.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossStats {
    pub kl: f64,
    pub entropy: f64,
    pub clipped_low: f64,
    pub clipped_high: f64,
    /// Completion tokens.
    pub tokens: f64,
}

impl std::ops::AddAssign for LossStats {
    fn add_assign(&mut self, other: Self) {
        self.kl += other.kl;
        self.entropy += other.entropy;
        self.clipped_low += other.clipped_low;
        self.clipped_high += other.clipped_high;
        self.tokens += other.tokens;
    }
}

/// The loss of one pass to backpropagate, and its statistics. `current` are the policy's
/// log-probs (with grad), `old` the sampling policy's, `reference` the frozen reference's
/// (when beta > 0); `row_weights` `[N]` weigh each completion's token sum (the planned
/// normalisers: the passes of an update then add up to its loss).
pub fn pass_loss(
    current: &TokenLogProbs,
    old: &Tensor,
    reference: Option<&Tensor>,
    advantages: &Tensor,
    algorithm: &AlgorithmConfig,
    row_weights: &Tensor,
) -> (Tensor, LossStats) {
    let surrogate = maths::clipped_surrogate(
        &current.logprobs,
        old,
        advantages,
        algorithm.epsilon,
        algorithm.epsilon_high(),
    );
    let kl = reference.map(|reference| maths::k3_kl(&current.logprobs, reference));
    let per_token = maths::per_token_loss(
        &surrogate.objective,
        kl.as_ref(),
        algorithm.beta,
        &current.entropies,
        algorithm.entropy_coeff,
    );
    let loss = maths::weighted_token_sum(&per_token, &current.mask, row_weights);
    let masked_sum = |t: &Tensor| {
        (t.to_kind(Kind::Float) * &current.mask)
            .sum(Kind::Float)
            .double_value(&[])
    };
    let stats = LossStats {
        kl: kl.as_ref().map_or(0.0, masked_sum),
        entropy: current.entropies.sum(Kind::Float).double_value(&[]),
        clipped_low: masked_sum(&surrogate.clipped_low),
        clipped_high: masked_sum(&surrogate.clipped_high),
        tokens: current.mask.sum(Kind::Float).double_value(&[]),
    };
    (loss, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::LossType;

    fn t(values: &[f32], shape: [i64; 2]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    #[test]
    fn a_micro_batch_s_loss_and_statistics_by_hand() {
        // Two completions of 2 and 1 tokens; the sampling policy equals the current one
        // (ratio 1), advantages +1 and −1; reference log-probs 0.5 above on every token.
        let current = TokenLogProbs {
            logprobs: t(&[-1.0, -2.0, -1.5, 0.0], [2, 2]),
            entropies: t(&[1.0, 2.0, 3.0, 0.0], [2, 2]),
            mask: t(&[1.0, 1.0, 1.0, 0.0], [2, 2]),
        };
        let reference = &current.logprobs + 0.5;
        let algorithm = AlgorithmConfig {
            beta: 0.1,
            loss_type: LossType::Dapo,
            ..AlgorithmConfig::default()
        };
        let advantages = Tensor::from_slice(&[1.0f32, -1.0]);
        // dapo's weights: 1 / the update's 3 tokens.
        let (loss, stats) = pass_loss(
            &current,
            &current.logprobs,
            Some(&reference),
            &advantages,
            &algorithm,
            &Tensor::from_slice(&[1.0f32 / 3.0; 2]),
        );
        // k3 at +0.5: e^0.5 − 0.5 − 1 = 0.148721 per token. Per-token loss −A + 0.1·0.148721:
        // −0.985128 (×2) and 1.014872; dapo: their sum over 3 tokens = −0.318461.
        assert!((loss.double_value(&[]) + 0.318_461).abs() < 1e-5, "{loss:?}");
        assert!((stats.kl - 3.0 * 0.148_721).abs() < 1e-5);
        assert_eq!((stats.entropy, stats.tokens), (6.0, 3.0));
        assert_eq!((stats.clipped_low, stats.clipped_high), (0.0, 0.0));

        // grpo's weights average sequences, then the update's micro-batches: 1 / (own
        // tokens × 2 sequences × 2 micro-batches).
        let (loss, _) = pass_loss(
            &current,
            &current.logprobs,
            Some(&reference),
            &advantages,
            &algorithm,
            &Tensor::from_slice(&[1.0f32 / 8.0, 1.0 / 4.0]),
        );
        // Sequence means −0.985128 and 1.014872 → mean 0.014872, over 2 micro-batches.
        assert!((loss.double_value(&[]) - 0.007_436).abs() < 1e-5, "{loss:?}");
    }
}
