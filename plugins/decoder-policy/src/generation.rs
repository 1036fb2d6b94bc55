//! Batched sampling with a KV cache: B prompts of different lengths (left-padded, which
//! changes no sequence's result) decoded together, each stopping at its own EOS.
//!
//! Randomness is drawn per sequence, from ChaCha stream `i` of the configured seed for the
//! `i`-th prompt, never from libtorch's process-wide generator: a sequence's sample depends
//! only on the seed, its index and the model, whatever else runs in the process.

use crate::qwen2::{DecoderModel, KvCache};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// EOS cannot be sampled before this many tokens (fixed-length completions for benchmarks,
    /// as transformers' `min_new_tokens`).
    pub min_new_tokens: usize,
    /// 0 (or `greedy`) takes the most likely token.
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0 = all).
    pub top_p: f64,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    pub greedy: bool,
    /// Seed of the per-sequence random streams.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            max_new_tokens: 128,
            min_new_tokens: 0,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            greedy: false,
            seed: 0,
        }
    }
}

/// One random stream per sequence of a batch (see the module docs).
pub fn sequence_rngs(seed: u64, batch: usize) -> Vec<ChaCha8Rng> {
    (0..batch)
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64);
            rng
        })
        .collect()
}

/// One generated completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated ids, the EOS included when one was produced.
    pub ids: Vec<i64>,
    /// Whether it ended with EOS (otherwise it was cut at `max_new_tokens`).
    pub finished: bool,
}

/// Left-pads `sequences` with `pad_id` into `[B, T]` ids and a `[B, T]` 0/1 mask.
pub fn left_pad(sequences: &[Vec<i64>], pad_id: i64, device: Device) -> (Tensor, Tensor) {
    let width = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(sequences.len() * width);
    let mut mask = Vec::with_capacity(sequences.len() * width);
    for seq in sequences {
        let pad = width - seq.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(seq.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, seq.len())));
    }
    let shape = [sequences.len() as i64, width as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

/// Picks the next token of each row of `logits` `[B, V]` (f32), row `i` drawing from `rngs[i]`.
pub fn sample_next(logits: &Tensor, config: &SamplingConfig, rngs: &mut [ChaCha8Rng]) -> Vec<i64> {
    if config.greedy || config.temperature <= 0.0 {
        return Vec::<i64>::try_from(logits.argmax(-1, false).to_device(Device::Cpu)).expect("int64 ids");
    }
    let mut logits = logits / config.temperature;
    let vocab = logits.size()[1];
    if config.top_k > 0 && (config.top_k as i64) < vocab {
        let (kth, _) = logits.topk(config.top_k as i64, -1, true, true);
        let threshold = kth.narrow(-1, config.top_k as i64 - 1, 1);
        logits = logits.masked_fill(&logits.lt_tensor(&threshold), f64::NEG_INFINITY);
    }
    if config.top_p < 1.0 {
        let (sorted, order) = logits.sort(-1, true);
        let cumulative = sorted.softmax(-1, Kind::Float).cumsum(-1, Kind::Float);
        // Drop a token when the tokens before it already reach top_p (the first always stays).
        let before = &cumulative - sorted.softmax(-1, Kind::Float);
        let drop_sorted = before.ge(config.top_p);
        let drop = drop_sorted.scatter(-1, &order, &drop_sorted);
        logits = logits.masked_fill(&drop, f64::NEG_INFINITY);
    }
    // Filtering ran on the model's device; the draw is an inverse-CDF lookup per row.
    let probabilities = logits.softmax(-1, Kind::Float).to_device(Device::Cpu);
    let probabilities = Vec::<f32>::try_from(probabilities.view([-1])).expect("f32 probabilities");
    probabilities
        .chunks(vocab as usize)
        .zip(rngs.iter_mut())
        .map(|(row, rng)| draw(row, rng.random::<f32>()))
        .collect()
}

/// The index where the cumulative probability first exceeds `u` × total (u in [0, 1)).
fn draw(row: &[f32], u: f32) -> i64 {
    let target = u * row.iter().sum::<f32>();
    let mut cumulative = 0.0;
    let last_possible = row.iter().rposition(|&p| p > 0.0).unwrap_or(0);
    row.iter()
        .position(|&p| {
            cumulative += p;
            p > 0.0 && cumulative > target
        })
        .unwrap_or(last_possible) as i64
}

/// Generates one completion per prompt. `usable_vocab` excludes padded embedding rows that no
/// tokenizer id maps to.
pub fn generate(
    model: &DecoderModel,
    prompts: &[Vec<i64>],
    eos_ids: &[u32],
    pad_id: u32,
    usable_vocab: usize,
    config: &SamplingConfig,
) -> Vec<Completion> {
    let mut cache = KvCache::default();
    let mut step = |ids: &Tensor, mask: &Tensor, repeats: Option<&[i64]>| {
        Ok::<_, std::convert::Infallible>(match repeats {
            Some(repeats) => {
                let rows = crpo_sdk::policy::repeat_index(repeats, model.device())
                    .expect("prompt runs are never negative");
                model.prefill_repeated(ids, mask, &rows, &mut cache)
            }
            None => model.forward_last(ids, mask, Some(&mut cache)),
        })
    };
    let tokens = TokenSpace {
        eos_ids,
        pad_id,
        usable_vocab,
    };
    match generate_with(&mut step, model.device(), prompts, &tokens, config) {
        Ok(completions) => completions,
    }
}

/// The tokenizer facts generation needs.
pub struct TokenSpace<'a> {
    pub eos_ids: &'a [u32],
    pub pad_id: u32,
    /// Ids at or above this are padded embedding rows no tokenizer id maps to: never sampled.
    pub usable_vocab: usize,
}

/// Runs of equal consecutive rows (a step's G copies of one prompt): each distinct row once,
/// with its count.
pub fn runs(rows: &[Vec<i64>]) -> (Vec<Vec<i64>>, Vec<i64>) {
    let (mut distinct, mut counts): (Vec<Vec<i64>>, Vec<i64>) = (Vec::new(), Vec::new());
    for row in rows {
        match (distinct.last(), counts.last_mut()) {
            (Some(last), Some(count)) if last == row => *count += 1,
            _ => {
                distinct.push(row.clone());
                counts.push(1);
            }
        }
    }
    (distinct, counts)
}

/// One cached forward of generation: `(ids, mask, repeats) → logits` (see [`generate_with`]).
pub type CachedStep<'a, E> = dyn FnMut(&Tensor, &Tensor, Option<&[i64]>) -> Result<Tensor, E> + 'a;

/// Generation over any cached forward `step(ids, mask, repeats)`, which returns logits
/// `[B, T, V]` (only the last position is read, so `[B, 1, V]` will do) and extends its own
/// KV cache. The first call gets each distinct run of equal consecutive prompts once
/// (left-padded) with `Some(repeats)`, and must return and cache `repeats[p]` rows for prompt
/// `p` (`PolicyModel::prefill_repeated`): G samples of a prompt share one prefill. Later
/// calls get one column per sequence and `None`. Policies loaded from plugin libraries
/// generate through this.
pub fn generate_with<E>(
    step: &mut CachedStep<'_, E>,
    device: Device,
    prompts: &[Vec<i64>],
    tokens: &TokenSpace<'_>,
    config: &SamplingConfig,
) -> Result<Vec<Completion>, E> {
    let _no_grad = tch::no_grad_guard();
    let pad_id = tokens.pad_id as i64;
    let (distinct, repeats) = runs(prompts);
    let (ids, mask) = left_pad(&distinct, pad_id, device);
    let batch = prompts.len();
    let mut logits = step(&ids, &mask, Some(&repeats))?.select(1, -1);
    let mut completions: Vec<Completion> = vec![
        Completion {
            ids: Vec::new(),
            finished: false
        };
        batch
    ];
    let eos: Vec<i64> = tokens.eos_ids.iter().map(|&id| id as i64).collect();
    let usable_vocab = tokens.usable_vocab as i64;
    let mut rngs = sequence_rngs(config.seed, batch);
    for generated in 0..config.max_new_tokens {
        let scores = logits.to_kind(Kind::Float);
        let vocab = scores.size()[1];
        if usable_vocab < vocab {
            let _ = scores
                .narrow(1, usable_vocab, vocab - usable_vocab)
                .fill_(f64::NEG_INFINITY);
        }
        if generated < config.min_new_tokens {
            for &id in &eos {
                let _ = scores.narrow(1, id, 1).fill_(f64::NEG_INFINITY);
            }
        }
        let next = sample_next(&scores, config, &mut rngs);
        let mut step_ids = Vec::with_capacity(batch);
        let mut step_mask = Vec::with_capacity(batch);
        for (completion, &token) in completions.iter_mut().zip(&next) {
            if completion.finished {
                // Finished rows are fed padding that nothing attends to.
                step_ids.push(pad_id);
                step_mask.push(0i64);
            } else {
                completion.ids.push(token);
                completion.finished = eos.contains(&token);
                step_ids.push(token);
                step_mask.push(1);
            }
        }
        if completions.iter().all(|c| c.finished) {
            break;
        }
        let step_ids = Tensor::from_slice(&step_ids)
            .view([batch as i64, 1])
            .to_device(device);
        let step_mask = Tensor::from_slice(&step_mask)
            .view([batch as i64, 1])
            .to_device(device);
        logits = step(&step_ids, &step_mask, None)?.select(1, -1);
    }
    Ok(completions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Tensor {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (as log-probs), twice.
        let row = [0.5f32, 0.3, 0.15, 0.05].map(f32::ln);
        Tensor::from_slice(&[row, row].concat()).view([2, 4])
    }

    fn draws(config: &SamplingConfig, n: usize) -> Vec<i64> {
        let mut rngs = sequence_rngs(5, 2);
        (0..n)
            .flat_map(|_| sample_next(&logits(), config, &mut rngs))
            .collect()
    }

    fn sampling(top_k: usize, top_p: f64) -> SamplingConfig {
        SamplingConfig {
            temperature: 1.0,
            top_k,
            top_p,
            ..SamplingConfig::default()
        }
    }

    #[test]
    fn greedy_and_zero_temperature_take_the_argmax() {
        let greedy = SamplingConfig {
            greedy: true,
            ..SamplingConfig::default()
        };
        let mut rngs = sequence_rngs(0, 2);
        assert_eq!(sample_next(&logits(), &greedy, &mut rngs), vec![0, 0]);
        let cold = SamplingConfig {
            temperature: 0.0,
            ..SamplingConfig::default()
        };
        assert_eq!(sample_next(&logits(), &cold, &mut rngs), vec![0, 0]);
    }

    #[test]
    fn top_k_keeps_only_the_k_most_likely() {
        assert!(draws(&sampling(1, 1.0), 50).iter().all(|&t| t == 0));
        let two = draws(&sampling(2, 1.0), 200);
        assert!(two.iter().all(|&t| t < 2) && two.contains(&1));
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // 0.5 alone does not reach 0.7; 0.5 + 0.3 does: tokens 0 and 1 only.
        let kept = draws(&sampling(0, 0.7), 300);
        assert!(kept.iter().all(|&t| t < 2) && kept.contains(&0) && kept.contains(&1));
        // A tiny p keeps the most likely token, never nothing.
        assert!(draws(&sampling(0, 1e-6), 50).iter().all(|&t| t == 0));
    }

    #[test]
    fn full_sampling_follows_the_distribution() {
        let all = draws(&sampling(0, 1.0), 2000);
        let share = |token| all.iter().filter(|&&t| t == token).count() as f64 / all.len() as f64;
        assert!(
            (share(0) - 0.5).abs() < 0.05 && (share(3) - 0.05).abs() < 0.03,
            "{} {}",
            share(0),
            share(3)
        );
    }

    #[test]
    fn draw_inverts_the_cumulative_distribution() {
        let row = [0.5f32, 0.0, 0.3, 0.2];
        assert_eq!(draw(&row, 0.0), 0);
        assert_eq!(draw(&row, 0.49), 0);
        assert_eq!(draw(&row, 0.51), 2, "a zero-probability token is never drawn");
        assert_eq!(draw(&row, 0.81), 3);
        assert_eq!(draw(&row, 0.999_999_9), 3);
    }

    #[test]
    fn each_sequence_has_its_own_stream() {
        let config = sampling(0, 1.0);
        let mut pair = sequence_rngs(3, 2);
        let mut alone = sequence_rngs(3, 1);
        let (mut row0, mut row1, mut solo) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..20 {
            let both = sample_next(&logits(), &config, &mut pair);
            row0.push(both[0]);
            row1.push(both[1]);
            solo.push(sample_next(&logits().narrow(0, 0, 1), &config, &mut alone)[0]);
        }
        assert_eq!(row0, solo, "row 0 does not depend on row 1");
        assert_ne!(row0, row1, "rows draw from different streams");
    }

    #[test]
    fn runs_group_equal_consecutive_prompts() {
        let rows = [vec![1, 2], vec![1, 2], vec![3], vec![1, 2]];
        let (distinct, counts) = runs(&rows);
        assert_eq!(distinct, vec![vec![1, 2], vec![3], vec![1, 2]]);
        assert_eq!(counts, vec![2, 1, 1]);
    }

    #[test]
    fn left_pad_aligns_sequences_right() {
        let (ids, mask) = left_pad(&[vec![7, 8, 9], vec![5]], 0, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(ids.view([-1])).unwrap(),
            vec![7, 8, 9, 0, 0, 5]
        );
        assert_eq!(
            Vec::<i64>::try_from(mask.view([-1])).unwrap(),
            vec![1, 1, 1, 0, 0, 1]
        );
    }
}
