//! G completions of one prompt share its pass: the built-in policy's `prefill_repeated` and
//! `forward_continuations` must give what the sdk's defaults give by running every
//! `[prompt | completion]` row in full — the same logits, the same gradients, the same samples.

use crpo_plugins_policy::generation::{generate_with, SamplingConfig, TokenSpace};
use crpo_plugins_policy::logprobs::ContinuationBatch;
use crpo_plugins_policy::plugin::Qwen2PolicyPlugin;
use crpo_plugins_policy::tiny::write_tiny;
use crpo_sdk::policy::{CacheId, PolicyLoad, PolicyModel, PolicyPlugin};
use crpo_sdk::PluginError;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The built-in model with the sdk's default `prefill_repeated` and `forward_continuations`,
/// i.e. every row laid out and run in full: the reference the shared passes must match.
struct FullRows(Box<dyn PolicyModel>);

impl PolicyModel for FullRows {
    fn forward(&self, ids: &Tensor, mask: &Tensor, cache: Option<CacheId>) -> Result<Tensor, PluginError> {
        self.0.forward(ids, mask, cache)
    }
    fn forward_from(&self, ids: &Tensor, mask: &Tensor, first: i64) -> Result<Tensor, PluginError> {
        self.0.forward_from(ids, mask, first)
    }
    fn new_cache(&self) -> CacheId {
        self.0.new_cache()
    }
    fn drop_cache(&self, cache: CacheId) {
        self.0.drop_cache(cache)
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.0.parameters()
    }
    fn save(&self, dir: &Path) -> Result<(), PluginError> {
        self.0.save(dir)
    }
}

fn load(dir: &Path) -> Box<dyn PolicyModel> {
    let options = serde_json::Value::Null;
    Qwen2PolicyPlugin
        .load(&PolicyLoad {
            dir,
            device: Device::Cpu,
            kind: Kind::Float,
            options: &options,
        })
        .unwrap()
}

/// Two prompts of different lengths, continued three and two times with completions of
/// different lengths (so both paddings are exercised).
fn batch() -> ContinuationBatch {
    let long = vec![5, 9, 13, 2, 7, 11];
    let short = vec![3, 8];
    ContinuationBatch::new(
        &[long.clone(), long.clone(), long, short.clone(), short],
        &[
            vec![4, 6, 1],
            vec![4],
            vec![20, 21, 22, 23],
            vec![17, 2],
            vec![30, 31, 32],
        ],
        0,
        Device::Cpu,
    )
}

fn continuation_logits(model: &dyn PolicyModel, batch: &ContinuationBatch) -> Tensor {
    model
        .forward_continuations(
            &batch.prompt_ids,
            &batch.prompt_mask,
            &batch.repeats,
            &batch.continuation_ids,
            &batch.continuation_mask,
        )
        .unwrap()
}

/// Σ of the real tokens' log-probs: a loss whose gradient reaches every parameter.
fn real_token_logprob_sum(logits: &Tensor, batch: &ContinuationBatch) -> Tensor {
    let logprobs = logits
        .log_softmax(-1, Kind::Float)
        .gather(-1, &batch.continuation_ids.unsqueeze(-1), false)
        .squeeze_dim(-1);
    (logprobs * batch.continuation_mask.to_kind(Kind::Float)).sum(Kind::Float)
}

fn gradients(model: &dyn PolicyModel) -> Vec<(String, Tensor)> {
    model
        .parameters()
        .into_iter()
        .map(|(name, p)| {
            let grad = p.grad().copy();
            let _ = p.grad().zero_();
            (name, grad)
        })
        .collect()
}

#[test]
fn shared_prompt_pass_gives_the_full_rows_logits_and_gradients() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), 3).unwrap();
    let shared = load(dir.path());
    let full = FullRows(load(dir.path()));
    let batch = batch();
    assert_eq!(batch.repeats, vec![3, 2]);

    let shared_logits = continuation_logits(shared.as_ref(), &batch);
    let full_logits = continuation_logits(&full, &batch);
    assert_eq!(shared_logits.size(), full_logits.size());
    assert_eq!(shared_logits.size()[..2], [5, 4]);
    // Only positions that predict a real token matter (padded columns see other keys).
    let real = batch.continuation_mask.to_kind(Kind::Float).unsqueeze(-1);
    let diff = ((&shared_logits - &full_logits) * &real)
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-4, "shared-prompt logits differ by {diff}");

    real_token_logprob_sum(&shared_logits, &batch).backward();
    real_token_logprob_sum(&full_logits, &batch).backward();
    let (shared_grads, full_grads) = (gradients(shared.as_ref()), gradients(&full));
    assert!(shared_grads.len() > 10);
    for ((name, a), (_, b)) in shared_grads.iter().zip(&full_grads) {
        let scale = b.abs().max().double_value(&[]).max(1e-6);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{name}: gradient differs by {diff} (max {scale})"
        );
    }
    assert!(
        full_grads
            .iter()
            .any(|(_, g)| g.abs().max().double_value(&[]) > 1e-3),
        "the loss reaches the parameters"
    );
}

fn sample(model: &dyn PolicyModel, prompts: &[Vec<i64>]) -> Vec<Vec<i64>> {
    let cache = model.new_cache();
    let mut step = |ids: &Tensor, mask: &Tensor, repeats: Option<&[i64]>| match repeats {
        Some(repeats) => model.prefill_repeated(ids, mask, repeats, cache),
        None => model.forward(ids, mask, Some(cache)),
    };
    let tokens = TokenSpace {
        eos_ids: &[],
        pad_id: 0,
        usable_vocab: 200,
    };
    let config = SamplingConfig {
        max_new_tokens: 6,
        temperature: 1.0,
        seed: 11,
        ..SamplingConfig::default()
    };
    let completions = generate_with(&mut step, Device::Cpu, prompts, &tokens, &config).unwrap();
    model.drop_cache(cache);
    completions.into_iter().map(|c| c.ids).collect()
}

#[test]
fn shared_prefill_samples_what_repeated_prompts_sample() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), 3).unwrap();
    let shared = load(dir.path());
    let full = FullRows(load(dir.path()));
    let (long, short) = (vec![5i64, 9, 13, 2, 7, 11], vec![3i64, 8]);
    let prompts = vec![long.clone(), long.clone(), long, short.clone(), short];
    let from_shared = sample(shared.as_ref(), &prompts);
    assert_eq!(from_shared, sample(&full, &prompts));
    assert_ne!(
        from_shared[0], from_shared[1],
        "each copy of a prompt draws its own sample"
    );
}
