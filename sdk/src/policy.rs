//! Policy models (feature `tch`): a trainable causal LM the trainer samples from and updates.
//!
//! The trainer owns the optimizer: it takes the model's parameters (tensors sharing storage
//! with the model's), computes losses on `forward`'s logits and steps them. The tokenizer is
//! read by the host from the model directory (`tokenizer.json`), like any data file.

use crate::error::{PluginError, Result};
use crate::PluginInfo;
use std::path::Path;
pub use tch;
use tch::{Device, Kind, Tensor};

/// A key/value cache kept inside the model, named by id across calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheId(pub u64);

/// What to load: the model directory, where, in which dtype, and the plugin's options.
pub struct PolicyLoad<'a> {
    pub dir: &'a Path,
    pub device: Device,
    pub kind: Kind,
    pub options: &'a serde_json::Value,
}

pub trait PolicyModel: Send {
    /// Logits `[B, T, vocab]` for `input_ids` `[B, T]` and a 0/1 `attention_mask` `[B, T]`
    /// (left padding allowed). With a cache, the ids continue those cached and extend it, and
    /// the model may return the last position's logits only (`[B, 1, vocab]`): generation,
    /// the only cached use, reads nothing else.
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor, cache: Option<CacheId>) -> Result<Tensor>;
    /// Logits of positions `first..T` only, `[B, T - first, vocab]`, without a cache: what a
    /// log-prob pass over completions needs (their prompts' positions need no LM head). The
    /// default runs `forward` and narrows; a model overrides it to skip the LM head on the
    /// positions before `first`. (Since sdk 1.2; a Rust-level default, so loaded plugins are
    /// unaffected.)
    fn forward_from(&self, input_ids: &Tensor, attention_mask: &Tensor, first: i64) -> Result<Tensor> {
        let logits = self.forward(input_ids, attention_mask, None)?;
        let width = logits.size()[1];
        Ok(logits.narrow(1, first, width - first))
    }
    /// Prefills `cache` with prompts `[P, T]` (left-padded, 0/1 mask) of which prompt `p` is the
    /// start of `repeats[p]` consecutive sequences, and returns the last position's logits of
    /// every sequence, `[Σ repeats, 1, vocab]`; the cache then continues `Σ repeats` rows.
    /// G samples of one prompt share its prefill this way. The default repeats the prompts'
    /// rows and runs `forward`; a model overrides it to run each prompt once and repeat its
    /// cached keys and values. (Since sdk 1.3; a Rust-level default, so loaded plugins are
    /// unaffected.)
    fn prefill_repeated(
        &self,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        repeats: &[i64],
        cache: CacheId,
    ) -> Result<Tensor> {
        let rows = repeat_index(repeats, prompt_ids.device())?;
        self.forward(
            &prompt_ids.index_select(0, &rows),
            &prompt_mask.index_select(0, &rows),
            Some(cache),
        )
    }
    /// Logits predicting every continuation token, `[N, C, vocab]` (column `j` is the
    /// distribution of continuation token `j`), without a cache, for prompts `[P, Tp]`
    /// (left-padded, 0/1 mask) and continuations `[N, C]` (right-padded, 0/1 mask), where rows
    /// `Σ repeats[..p] .. Σ repeats[..=p]` continue prompt `p`: the log-prob pass over a
    /// step's groups. The default lays every row out in full (`[prompt | continuation]`) and
    /// calls `forward_from`; a model overrides it to run each prompt once and let its
    /// continuations attend to the shared keys and values (gradients flow through them the
    /// same). (Since sdk 1.3; a Rust-level default.)
    fn forward_continuations(
        &self,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        repeats: &[i64],
        continuation_ids: &Tensor,
        continuation_mask: &Tensor,
    ) -> Result<Tensor> {
        let rows = repeat_index(repeats, prompt_ids.device())?;
        let ids = Tensor::cat(&[&prompt_ids.index_select(0, &rows), continuation_ids], 1);
        let mask = Tensor::cat(&[&prompt_mask.index_select(0, &rows), continuation_mask], 1);
        let first = prompt_ids.size()[1] - 1;
        let logits = self.forward_from(&ids, &mask, first)?;
        Ok(logits.narrow(1, 0, continuation_ids.size()[1]))
    }
    fn new_cache(&self) -> CacheId;
    fn drop_cache(&self, cache: CacheId);
    /// Trainable parameters by name, sharing storage with the model (shallow clones).
    fn parameters(&self) -> Vec<(String, Tensor)>;
    /// Writes the model as a directory loadable by `PolicyPlugin::load`.
    fn save(&self, dir: &Path) -> Result<()>;
}

pub trait PolicyPlugin: Send + Sync {
    fn info(&self) -> PluginInfo;
    fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>>;
}

/// The row of the prompt each sequence continues: `[0, 0, 1, …]` for `repeats` `[2, 1, …]`
/// (int64, on `device`). Refuses negative counts and an empty prompt list with continuations.
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

/// The torch version this sdk build compiled against (`2.11.0+cu130`).
pub const BUILT_TORCH_VERSION: &str = env!("CRPO_BUILT_TORCH_VERSION");

/// The tch minor series this sdk build uses; tensor handles cross only between equal series.
pub const TCH_SERIES: &str = "0.24";

pub fn device_code(device: Device) -> i64 {
    match device {
        Device::Cuda(index) => index as i64,
        _ => -1,
    }
}

pub fn device_from_code(code: i64) -> Device {
    if code < 0 {
        Device::Cpu
    } else {
        Device::Cuda(code as usize)
    }
}

pub fn kind_name(kind: Kind) -> Result<&'static str> {
    match kind {
        Kind::Float => Ok("f32"),
        Kind::BFloat16 => Ok("bf16"),
        Kind::Half => Ok("f16"),
        other => Err(PluginError::failed(format!(
            "dtype {other:?} is not supported for policies"
        ))),
    }
}

pub fn kind_from_code(code: i32) -> Result<Kind> {
    match code {
        0 => Ok(Kind::Float),
        1 => Ok(Kind::BFloat16),
        2 => Ok(Kind::Half),
        other => Err(PluginError::failed(format!("unknown dtype code {other}"))),
    }
}

/// Lends a tensor to the other side for the duration of a call.
pub fn lend_tensor(tensor: &Tensor) -> usize {
    tensor.as_ptr() as usize
}

/// Borrows a lent tensor: a shallow clone sharing storage and autograd graph.
///
/// # Safety
/// `handle` must come from [`lend_tensor`] on a tensor alive for this call, in a process whose
/// both sides use the same libtorch build.
pub unsafe fn borrow_tensor(handle: usize) -> Tensor {
    Tensor::clone_from_ptr(handle as *mut _)
}

/// Hands a tensor over; the receiver must [`take_tensor`] it exactly once.
pub fn give_tensor(mut tensor: Tensor) -> usize {
    let handle = tensor.as_mut_ptr() as usize;
    std::mem::forget(tensor);
    handle
}

/// Takes ownership of a tensor handed over with [`give_tensor`].
///
/// # Safety
/// `handle` must come from [`give_tensor`] and not have been taken before.
pub unsafe fn take_tensor(handle: usize) -> Tensor {
    Tensor::from_ptr(handle as *mut _)
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

    #[test]
    fn handles_share_storage_and_transfer_ownership() {
        let original = Tensor::from_slice(&[1.0f32, 2.0]);
        let borrowed = unsafe { borrow_tensor(lend_tensor(&original)) };
        let _ = tch::no_grad(|| borrowed.shallow_clone().fill_(5.0));
        assert_eq!(
            original.double_value(&[0]),
            5.0,
            "a borrowed tensor shares storage"
        );
        let taken = unsafe { take_tensor(give_tensor(Tensor::from_slice(&[3.0f32]))) };
        assert_eq!(taken.double_value(&[0]), 3.0);
    }

    #[test]
    fn built_torch_version_is_recorded() {
        assert!(BUILT_TORCH_VERSION.starts_with("2.11.0"), "{BUILT_TORCH_VERSION}");
    }
}
