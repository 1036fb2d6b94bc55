// `#[sabi_trait]` generates impls inside a const block, which this lint flags.
#![allow(non_local_definitions)]

//! Policy models across the boundary: the vtables only. Both sides are in `crpo-policy-sdk`
//! (they need libtorch); the vtables are here because every plugin library's root module
//! lists its policy plugins, with or without libtorch.
//!
//! Tensors cross as libtorch tensor handles (`usize`): the caller lends a handle, which the
//! callee shallow-clones (sharing storage and autograd graph); a returned tensor is handed
//! over and owned by the receiver. That is only sound when both sides run the same libtorch
//! build, which the host checks (`PluginLibrary::torch_version`) before it calls anything.
//!
//! The methods before each `last_prefix_field` are sdk 1.0's; those after it arrived in 1.4
//! and 1.7, and for a library built before them the host runs the trait's default: `RNone`,
//! which it reads as "use the generic path", or the by-name extension a 1.5 library answered.

use super::error::FfiPluginError;
use super::{extension, FfiPluginInfo};
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::{sabi_trait, StableAbi};

/// Where a model runs.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiDevice {
    Cpu,
    Cuda(u32),
}

impl FfiDevice {
    /// The sdk 1.0 code: -1 for the CPU, n for cuda:n.
    pub fn code(self) -> i64 {
        match self {
            FfiDevice::Cpu => -1,
            FfiDevice::Cuda(index) => i64::from(index),
        }
    }
}

/// A model's floating-point dtype.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfiKind {
    F32,
    BF16,
    F16,
}

impl FfiKind {
    /// The sdk 1.0 code.
    pub fn code(self) -> i32 {
        match self {
            FfiKind::F32 => 0,
            FfiKind::BF16 => 1,
            FfiKind::F16 => 2,
        }
    }

    pub fn from_code(code: i32) -> Option<FfiKind> {
        [FfiKind::F32, FfiKind::BF16, FfiKind::F16]
            .into_iter()
            .find(|k| k.code() == code)
    }
}

/// The shape of the key/value cache a model's attention layers read (see
/// `crpo_policy_sdk::CacheLayout`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfiCacheLayout {
    pub layers: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
}

/// An engine-owned key/value cache lent for one call: per layer a keys and a values handle
/// (`2 × layers` entries, keys first), the key-mask handle, and the positions filled so far.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct FfiKvCache<'a> {
    pub layers: RSlice<'a, usize>,
    pub key_mask: usize,
    pub len: i64,
}

/// A handle result, or `RNone` from a library built before the method existed.
pub type FfiTensorResult = ROption<RResult<usize, FfiPluginError>>;

/// A loaded policy model, across the boundary.
#[sabi_trait]
pub trait FfiPolicyModel: Send {
    /// Logits handle for input-id and mask handles; `cache` 0 means none, otherwise a cache
    /// the model keeps itself (sdk 1.0–1.3).
    fn forward(&self, input_ids: usize, attention_mask: usize, cache: u64) -> RResult<usize, RString>;
    fn new_cache(&self) -> u64;
    fn drop_cache(&self, cache: u64);
    /// Trainable parameters by name, as handles the host owns (shallow clones).
    fn parameters(&self) -> RVec<Tuple2<RString, usize>>;
    fn save(&self, dir: RStr<'_>) -> RResult<(), RString>;
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString>;

    /// Since 1.4: the cache the engine allocates for this model.
    fn cache_layout(&self) -> ROption<FfiCacheLayout> {
        ROption::RNone
    }
    /// Since 1.4: a generation step over an engine-owned cache.
    fn forward_cached(
        &self,
        _input_ids: usize,
        _attention_mask: usize,
        _cache: FfiKvCache<'_>,
    ) -> FfiTensorResult {
        ROption::RNone
    }
    /// Since 1.4: logits of positions `first..` only.
    fn forward_from(&self, _input_ids: usize, _attention_mask: usize, _first: i64) -> FfiTensorResult {
        ROption::RNone
    }
    /// Since 1.4: the log-prob pass with shared prompts.
    fn forward_continuations(
        &self,
        _prompt_ids: usize,
        _prompt_mask: usize,
        _repeats: RSlice<'_, i64>,
        _continuation_ids: usize,
        _continuation_mask: usize,
    ) -> FfiTensorResult {
        ROption::RNone
    }
    /// Since 1.4: `save` with a typed error.
    fn save_typed(&self, dir: RStr<'_>) -> RResult<(), FfiPluginError> {
        self.save(dir).map_err(FfiPluginError::failed)
    }
    /// Since 1.7: `forward` without a cache, with a typed error.
    fn forward_typed(&self, _input_ids: usize, _attention_mask: usize) -> FfiTensorResult {
        ROption::RNone
    }
    /// Since 1.7: activation checkpointing on or off. A library of 1.5 or 1.6 answers the
    /// extension of the same name, which this default asks; an older one answers
    /// [`extension::unknown`].
    fn set_gradient_checkpointing(&self, enabled: bool) -> RResult<(), FfiPluginError> {
        self.extension(
            RStr::from_str(extension::POLICY_GRADIENT_CHECKPOINTING),
            RStr::from_str(extension::switch_request(enabled)),
        )
        .map(|_| ())
        .map_err(FfiPluginError::failed)
    }
    /// Since 1.7: LoRA adapters on or off; before, as [`Self::set_gradient_checkpointing`].
    fn set_adapters_enabled(&self, enabled: bool) -> RResult<(), FfiPluginError> {
        self.extension(
            RStr::from_str(extension::POLICY_ADAPTERS_ENABLED),
            RStr::from_str(extension::switch_request(enabled)),
        )
        .map(|_| ())
        .map_err(FfiPluginError::failed)
    }
}

pub type FfiPolicyModelBox = FfiPolicyModel_TO<'static, RBox<()>>;

/// A policy plugin, across the boundary.
#[sabi_trait]
pub trait FfiPolicyPlugin: Send + Sync {
    fn info(&self) -> FfiPluginInfo;
    /// sdk 1.0: `device` -1 = CPU, n = cuda:n; `kind` per [`FfiKind::code`].
    fn load(
        &self,
        dir: RStr<'_>,
        device: i64,
        kind: i32,
        options_json: RStr<'_>,
    ) -> RResult<FfiPolicyModelBox, RString>;
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString>;

    /// Since 1.4: `load` with typed device, dtype and error.
    fn load_typed(
        &self,
        dir: RStr<'_>,
        device: FfiDevice,
        kind: FfiKind,
        options_json: RStr<'_>,
    ) -> RResult<FfiPolicyModelBox, FfiPluginError> {
        self.load(dir, device.code(), kind.code(), options_json)
            .map_err(FfiPluginError::failed)
    }

    /// Since 1.4: the model presets the plugin can write.
    fn presets(&self) -> RVec<RString> {
        RVec::new()
    }

    /// Since 1.4: writes a preset as a model directory.
    fn write_preset(&self, name: RStr<'_>, _dir: RStr<'_>, _seed: u64) -> RResult<(), FfiPluginError> {
        RResult::RErr(FfiPluginError::failed(format!("no preset `{name}`")))
    }
}

pub type FfiPolicyPluginBox = FfiPolicyPlugin_TO<'static, RBox<()>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_device_and_kind_keep_the_sdk_1_0_codes() {
        assert_eq!(FfiDevice::Cpu.code(), -1);
        assert_eq!(FfiDevice::Cuda(3).code(), 3);
        for kind in [FfiKind::F32, FfiKind::BF16, FfiKind::F16] {
            assert_eq!(FfiKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(FfiKind::from_code(9), None);
    }
}
