//! Sampling the next token: greedy, or temperature with top-k / top-p filtering, drawn by
//! inverse CDF from a random stream per sequence.
//!
//! Randomness is drawn per sequence, from ChaCha stream `i` of the configured seed for the
//! `i`-th sequence of a batch, never from libtorch's process-wide generator: a sequence's
//! sample depends only on the seed, its index and the model, whatever else runs in the
//! process or whichever rows still run beside it.

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
    /// The stream of the batch's first sequence: a step generated in several batches numbers
    /// its sequences across them, so each draws what it would in one batch.
    pub first_stream: u64,
    /// Per-row budgets below `max_new_tokens` (benchmarks: completions of given lengths, so
    /// two engines do the same work); empty, every row's budget is `max_new_tokens`.
    pub row_budgets: Vec<usize>,
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
            first_stream: 0,
            row_budgets: Vec::new(),
        }
    }
}

/// Refuses a temperature no sampler can use, naming `key`: a finite number ≥ 0 (0 decodes
/// greedily).
pub fn check_temperature(temperature: f64, key: &str) -> anyhow::Result<()> {
    if !temperature.is_finite() || temperature < 0.0 {
        anyhow::bail!("{key} must be a finite number ≥ 0 (0 decodes greedily); it is {temperature}");
    }
    if temperature > 0.0 && temperature < MIN_TEMPERATURE {
        anyhow::bail!(
            "{key} = {temperature} is below {MIN_TEMPERATURE}: logits divided by it overflow and sampling reads garbage; use 0 to decode greedily"
        );
    }
    Ok(())
}

/// The lowest temperature sampled with: below it the scaled logits can overflow (1e-40
/// sampled empty completions), and sampling is greedy in all but name.
pub const MIN_TEMPERATURE: f64 = 1e-3;

/// Refuses a temperature or top-p no sampler can use, naming the key of each (top-p is in
/// (0, 1]).
pub fn check_temperature_and_top_p(
    (temperature, temperature_key): (f64, &str),
    (top_p, top_p_key): (f64, &str),
) -> anyhow::Result<()> {
    check_temperature(temperature, temperature_key)?;
    if top_p.is_nan() || top_p <= 0.0 || top_p > 1.0 {
        anyhow::bail!("{top_p_key} must be in (0, 1] (1 keeps every token); it is {top_p}");
    }
    Ok(())
}

impl SamplingConfig {
    /// The new-token budget of row `row`.
    pub fn budget(&self, row: usize) -> usize {
        self.row_budgets
            .get(row)
            .map_or(self.max_new_tokens, |&b| b.min(self.max_new_tokens))
    }
}

/// One random stream per sequence of a batch (see the module docs), numbered from `first`.
pub fn sequence_rngs(seed: u64, first: u64, batch: usize) -> Vec<ChaCha8Rng> {
    (0..batch)
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(first + i as u64);
            rng
        })
        .collect()
}

/// Picks the next token of each row of `logits` `[B, V]` (f32); row `i` is sequence `rows[i]`
/// and draws from `rngs[rows[i]]`.
pub fn sample_next(
    logits: &Tensor,
    config: &SamplingConfig,
    rngs: &mut [ChaCha8Rng],
    rows: &[usize],
) -> Vec<i64> {
    if config.greedy || config.temperature <= 0.0 {
        return Vec::<i64>::try_from(logits.argmax(-1, false).to_device(Device::Cpu)).expect("int64 ids");
    }
    let mut logits = logits / config.temperature;
    let vocab = logits.size()[1];
    // Compared unsigned: a top-k past i64's range (2^63) would turn negative as i64.
    if config.top_k > 0 && (config.top_k as u64) < vocab as u64 {
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
    let probabilities = logits.softmax(-1, Kind::Float);
    if probabilities.device().is_cuda() {
        return draw_on_device(&probabilities, rngs, rows);
    }
    let probabilities = probabilities.to_device(Device::Cpu);
    let probabilities = Vec::<f32>::try_from(probabilities.view([-1])).expect("f32 probabilities");
    probabilities
        .chunks(vocab as usize)
        .zip(rows)
        .map(|(row, &sequence)| draw(row, rngs[sequence].random::<f32>()))
        .collect()
}

/// [`draw`] for every row on the GPU: the uniforms come from the rows' own streams and only
/// they and the chosen ids cross, not `[B, V]` probabilities (40 MB a step for Qwen's
/// vocabulary at 64 rows). The index is the first whose cumulative probability exceeds
/// `u` × total; a zero-probability token never is (the cumulative sum does not rise there).
fn draw_on_device(probabilities: &Tensor, rngs: &mut [ChaCha8Rng], rows: &[usize]) -> Vec<i64> {
    let uniforms: Vec<f32> = rows
        .iter()
        .map(|&sequence| rngs[sequence].random::<f32>())
        .collect();
    let cumulative = probabilities.cumsum(-1, Kind::Float);
    let vocab = cumulative.size()[1];
    let total = cumulative.narrow(1, vocab - 1, 1);
    let targets = Tensor::from_slice(&uniforms)
        .to_device(probabilities.device())
        .unsqueeze(1)
        * &total;
    // `values.searchsorted(sorted, …)`: per row, the first index whose cumulative sum is
    // above the target (side "right").
    let ids = targets
        .searchsorted(&cumulative, false, true, "right", None::<&Tensor>)
        .clamp_max(vocab - 1)
        .squeeze_dim(1);
    Vec::<i64>::try_from(ids.to_device(Device::Cpu)).expect("int64 ids")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Tensor {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (as log-probs), twice.
        let row = [0.5f32, 0.3, 0.15, 0.05].map(f32::ln);
        Tensor::from_slice(&[row, row].concat()).view([2, 4])
    }

    fn draws(config: &SamplingConfig, n: usize) -> Vec<i64> {
        let mut rngs = sequence_rngs(5, 0, 2);
        (0..n)
            .flat_map(|_| sample_next(&logits(), config, &mut rngs, &[0, 1]))
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
    fn unusable_temperatures_and_top_ps_are_refused_by_name() {
        let check = |t: f64, p: f64| check_temperature_and_top_p((t, "--temperature"), (p, "--top-p"));
        assert!(check(0.0, 1.0).is_ok() && check(0.7, 0.95).is_ok());
        for t in [f64::NAN, -1.0, f64::INFINITY, 1e-40, 1e-38] {
            assert!(check(t, 1.0)
                .unwrap_err()
                .to_string()
                .starts_with("--temperature"));
        }
        for p in [f64::NAN, 0.0, -1.0, 2.0] {
            assert!(check(1.0, p).unwrap_err().to_string().starts_with("--top-p"));
        }
    }

    #[test]
    fn greedy_and_zero_temperature_take_the_argmax() {
        let greedy = SamplingConfig {
            greedy: true,
            ..SamplingConfig::default()
        };
        let mut rngs = sequence_rngs(0, 0, 2);
        assert_eq!(sample_next(&logits(), &greedy, &mut rngs, &[0, 1]), vec![0, 0]);
        let cold = SamplingConfig {
            temperature: 0.0,
            ..SamplingConfig::default()
        };
        assert_eq!(sample_next(&logits(), &cold, &mut rngs, &[0, 1]), vec![0, 0]);
    }

    #[test]
    fn top_k_keeps_only_the_k_most_likely() {
        // A top-k past the vocabulary (even past i64's range) keeps every token.
        let all = draws(&sampling(1 << 63, 1.0), 200);
        assert!(all.iter().any(|&t| t >= 2), "{all:?}");
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
    fn the_device_draw_picks_what_the_host_draw_picks() {
        // Same uniforms, same inverse-CDF rule, the tensor version (as the GPU path runs it).
        let probabilities = Tensor::from_slice(&[0.5f32, 0.0, 0.3, 0.2, 0.1, 0.1, 0.0, 0.8]).view([2, 4]);
        let rows = [0usize, 1];
        for seed in 0..20 {
            let mut a = sequence_rngs(seed, 0, 2);
            let mut b = sequence_rngs(seed, 0, 2);
            let on_device = draw_on_device(&probabilities, &mut a, &rows);
            let values = Vec::<f32>::try_from(probabilities.view([-1])).unwrap();
            let on_host: Vec<i64> = values
                .chunks(4)
                .zip(&rows)
                .map(|(row, &s)| draw(row, b[s].random::<f32>()))
                .collect();
            assert_eq!(on_device, on_host, "seed {seed}");
        }
    }

    #[test]
    fn each_sequence_has_its_own_stream() {
        let config = sampling(0, 1.0);
        let mut pair = sequence_rngs(3, 0, 2);
        let mut alone = sequence_rngs(3, 0, 1);
        let (mut row0, mut row1, mut solo) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..20 {
            let both = sample_next(&logits(), &config, &mut pair, &[0, 1]);
            row0.push(both[0]);
            row1.push(both[1]);
            solo.push(sample_next(&logits().narrow(0, 0, 1), &config, &mut alone, &[0])[0]);
        }
        assert_eq!(row0, solo, "row 0 does not depend on row 1");
        assert_ne!(row0, row1, "rows draw from different streams");
    }
}
