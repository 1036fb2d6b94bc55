//! G completions of one prompt share its pass: the built-in policy's `forward_continuations`
//! must give what the sdk's default gives by running every `[prompt | completion]` row in
//! full — the same logits and gradients — and the engine's shared prefill (each distinct
//! prompt run once, its cache rows repeated) must continue exactly as repeated prompts do.

use crpo_host::rollout::logprobs::ContinuationBatch;
use crpo_plugins_policy::plugin::Qwen2PolicyPlugin;
use crpo_plugins_policy::presets::write_tiny;
use crpo_policy_sdk::{
    repeat_index, CacheLayout, KeyValues, KvCache, PluginError, PolicyLoad, PolicyModel, PolicyPlugin,
};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The built-in model with the sdk's default `forward_continuations`, i.e. every row laid out
/// and run in full: the reference the shared pass must match.
struct FullRows(Box<dyn PolicyModel>);

impl PolicyModel for FullRows {
    fn cache_layout(&self) -> Option<CacheLayout> {
        self.0.cache_layout()
    }
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor, PluginError> {
        self.0.forward(ids, mask)
    }
    fn forward_cached(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor, PluginError> {
        self.0.forward_cached(ids, mask, cache)
    }
    fn forward_from(&self, ids: &Tensor, mask: &Tensor, first: i64) -> Result<Tensor, PluginError> {
        self.0.forward_from(ids, mask, first)
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
    .unwrap()
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

#[test]
fn a_shared_prefill_continues_as_repeated_prompts_do() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), 3).unwrap();
    let model = load(dir.path());
    let layout = model.cache_layout().unwrap();
    let batch = batch();
    let rows = repeat_index(&batch.repeats, Device::Cpu).unwrap();
    let (prompt_ids, prompt_mask) = (&batch.prompt_ids, &batch.prompt_mask);
    let next = Tensor::from_slice(&[4i64, 5, 6, 7, 8]).view([5, 1]);
    let _no_grad = tch::no_grad_guard();

    // Shared: each distinct prompt once, then its cache rows repeated.
    let mut shared = KvCache::new(layout, 2, 12, Kind::Float, Device::Cpu);
    let first_shared = model
        .forward_cached(prompt_ids, prompt_mask, &mut shared)
        .unwrap();
    shared.select_rows(&rows);
    let next_shared = model
        .forward_cached(&next, &next.ones_like(), &mut shared)
        .unwrap();

    // Repeated: every row prefilled on its own.
    let mut repeated = KvCache::new(layout, 5, 12, Kind::Float, Device::Cpu);
    let first_repeated = model
        .forward_cached(
            &prompt_ids.index_select(0, &rows),
            &prompt_mask.index_select(0, &rows),
            &mut repeated,
        )
        .unwrap();
    let next_repeated = model
        .forward_cached(&next, &next.ones_like(), &mut repeated)
        .unwrap();

    let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    assert!(diff(&first_shared.index_select(0, &rows), &first_repeated) < 1e-5);
    assert!(
        diff(&next_shared, &next_repeated) < 1e-5,
        "{}",
        diff(&next_shared, &next_repeated)
    );
}
