//! Policy models: a trainable causal LM the engine samples from and the trainer updates.
//!
//! The trainer owns the optimizer: it takes the model's parameters (tensors sharing storage
//! with the model's), computes losses on the model's logits and steps them. The engine owns
//! generation and the key/value cache; the tokenizer is read by the host from the model
//! directory (`tokenizer.json`), like any data file.

use crate::cache::{CacheLayout, KvCache};
use crpo_sdk::{PluginError, PluginInfo, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// What to load: the model directory, where, in which dtype, and the plugin's options.
pub struct PolicyLoad<'a> {
    pub dir: &'a Path,
    pub device: Device,
    pub kind: Kind,
    pub options: &'a serde_json::Value,
}

pub trait PolicyModel: Send {
    /// The key/value cache the engine allocates for this model's generation. Only a library
    /// built before sdk 1.4, whose model keeps its own cache, answers `None` (the engine then
    /// feeds every row to the end of the batch); the host refuses `None` from any other model.
    fn cache_layout(&self) -> Option<CacheLayout>;

    /// Logits `[B, T, vocab]` for `input_ids` `[B, T]` and a 0/1 `attention_mask` `[B, T]`
    /// (left padding allowed; a padded row gets the logits it would get alone).
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor>;

    /// A generation step: `input_ids` `[B, T]` (0/1 mask `[B, T]`) continue the sequences held
    /// in `cache`, which the model extends ([`crate::KeyValues`]); returns the last
    /// position's logits `[B, vocab]`.
    fn forward_cached(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor>;

    /// Logits of positions `first..T` only, `[B, T - first, vocab]`: what a log-prob pass over
    /// completions needs (their prompts' positions need no LM head). The default runs
    /// `forward` and narrows; a model overrides it to skip the LM head before `first`.
    fn forward_from(&self, input_ids: &Tensor, attention_mask: &Tensor, first: i64) -> Result<Tensor> {
        full_forward_from(self, input_ids, attention_mask, first)
    }

    /// Logits predicting every continuation token, `[N, C, vocab]` (column `j` is the
    /// distribution of continuation token `j`), for prompts `[P, Tp]` (left-padded, 0/1 mask)
    /// and continuations `[N, C]` (right-padded, 0/1 mask), where rows
    /// `Σ repeats[..p] .. Σ repeats[..=p]` continue prompt `p`: the log-prob pass over a
    /// step's groups, with gradients. The default lays every row out in full
    /// (`[prompt | continuation]`) and calls `forward_from`; a model overrides it to run each
    /// prompt once and let its continuations attend to the shared keys and values
    /// ([`crate::GrowingKvCache`]).
    fn forward_continuations(
        &self,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        repeats: &[i64],
        continuation_ids: &Tensor,
        continuation_mask: &Tensor,
    ) -> Result<Tensor> {
        full_forward_continuations(
            self,
            prompt_ids,
            prompt_mask,
            repeats,
            continuation_ids,
            continuation_mask,
        )
    }

    /// Whether a decode step (`forward_cached` of one position per row over a cache with
    /// fixed shapes, [`KvCache::fix_shapes`]) may be captured as a CUDA graph and replayed:
    /// a fixed sequence of device operations for fixed shapes, positions and masks taken from
    /// the cache, no value read back to the host, no branch on the cache's length, and no
    /// random numbers. The default says no, and the engine then runs every step eagerly; so
    /// does it for a model loaded from a library, whatever the library says (the answer does
    /// not cross the boundary).
    fn decode_step_is_capturable(&self) -> bool {
        false
    }

    /// Called by the engine when a generation over `cache` ends: a model that keeps its own
    /// cache frees it here.
    fn release_cache(&self, _cache: &mut KvCache) {}

    /// Trainable parameters by name, sharing storage with the model (shallow clones).
    fn parameters(&self) -> Vec<(String, Tensor)>;

    /// Activation checkpointing for passes with grad: keep each layer's input only and
    /// recompute the layer in the backward (`crpo_torch_ext::checkpoint`), so the gradients
    /// are those of a plain pass. A model that cannot refuses (the default).
    fn set_gradient_checkpointing(&self, _enabled: bool) -> Result<()> {
        Err(PluginError::failed(
            "this policy model does not support gradient checkpointing",
        ))
    }

    /// Turns the model's LoRA adapters ([`crate::lora`]) off (the base model: CRPO's reference
    /// pass) or on again. A model loaded without adapters refuses (the default).
    fn set_adapters_enabled(&self, _enabled: bool) -> Result<()> {
        Err(PluginError::failed("this policy model has no LoRA adapters"))
    }

    /// Writes the model's config and weights to `dir`, loadable by [`PolicyPlugin::load`]
    /// (the host adds the tokenizer files).
    fn save(&self, dir: &Path) -> Result<()>;
}

pub trait PolicyPlugin: Send + Sync {
    fn info(&self) -> PluginInfo;
    fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>>;

    /// Named model shapes this plugin can create with fresh weights (`crpo-host init-model`).
    fn presets(&self) -> Vec<String> {
        Vec::new()
    }

    /// Writes preset `name` as a complete model directory `dir` (tokenizer included), its
    /// weights drawn from `seed`: the same seed gives the same files.
    fn write_preset(&self, name: &str, _dir: &Path, _seed: u64) -> Result<()> {
        Err(PluginError::failed(format!(
            "`{}` has no preset `{name}`",
            self.info().name
        )))
    }
}

/// [`PolicyModel::forward_from`]'s default: the full forward, narrowed.
pub(crate) fn full_forward_from<M: PolicyModel + ?Sized>(
    model: &M,
    input_ids: &Tensor,
    attention_mask: &Tensor,
    first: i64,
) -> Result<Tensor> {
    let logits = model.forward(input_ids, attention_mask)?;
    let width = logits.size()[1];
    Ok(logits.narrow(1, first, width - first))
}

/// [`PolicyModel::forward_continuations`]' default: every row laid out in full.
pub(crate) fn full_forward_continuations<M: PolicyModel + ?Sized>(
    model: &M,
    prompt_ids: &Tensor,
    prompt_mask: &Tensor,
    repeats: &[i64],
    continuation_ids: &Tensor,
    continuation_mask: &Tensor,
) -> Result<Tensor> {
    let rows = repeat_index(repeats, prompt_ids.device())?;
    full_forward_continuations_with(
        |ids, mask, first| model.forward_from(ids, mask, first),
        prompt_ids,
        prompt_mask,
        &rows,
        continuation_ids,
        continuation_mask,
    )
}

/// The continuation logits of `forward_continuations` with each row laid out in full
/// (`[prompt | continuation]`, the prompt of row `i` being `rows[i]`) and run through
/// `forward_from(ids, mask, first)`: for a model's passes that cannot share a prompt pass.
pub fn full_forward_continuations_with(
    forward_from: impl FnOnce(&Tensor, &Tensor, i64) -> Result<Tensor>,
    prompt_ids: &Tensor,
    prompt_mask: &Tensor,
    rows: &Tensor,
    continuation_ids: &Tensor,
    continuation_mask: &Tensor,
) -> Result<Tensor> {
    let ids = Tensor::cat(&[&prompt_ids.index_select(0, rows), continuation_ids], 1);
    let mask = Tensor::cat(&[&prompt_mask.index_select(0, rows), continuation_mask], 1);
    let first = prompt_ids.size()[1] - 1;
    let logits = forward_from(&ids, &mask, first)?;
    Ok(logits.narrow(1, 0, continuation_ids.size()[1]))
}

/// The row of the prompt each sequence continues: `[0, 0, 1, …]` for `repeats` `[2, 1, …]`
/// (int64, on `device`). Refuses negative counts.
pub fn repeat_index(repeats: &[i64], device: Device) -> Result<Tensor> {
    if let Some(bad) = repeats.iter().find(|&&r| r < 0) {
        return Err(PluginError::failed(format!(
            "a prompt cannot be repeated {bad} times"
        )));
    }
    let index: Vec<i64> = repeats
        .iter()
        .enumerate()
        .flat_map(|(prompt, &count)| std::iter::repeat_n(prompt as i64, count as usize))
        .collect();
    Ok(Tensor::from_slice(&index).to_device(device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_index_maps_each_sequence_to_its_prompt() {
        let index = repeat_index(&[2, 0, 3], Device::Cpu).unwrap();
        assert_eq!(Vec::<i64>::try_from(index).unwrap(), vec![0, 0, 2, 2, 2]);
        assert!(repeat_index(&[1, -1], Device::Cpu).is_err());
    }
}
