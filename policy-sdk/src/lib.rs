//! # crpo-policy-sdk — the policy side of crpo's plugin API
//!
//! A policy plugin provides a trainable causal language model: its config and weights from a
//! model directory, and forward passes — including a cache-aware one over the key/value
//! storage the host's rollout engine allocates and hands it ([`KvCache`]). Sampling,
//! stopping, batching, log-prob passes and chat templating are the engine's, written once
//! over [`PolicyModel`]; a plugin built into the host and one loaded from a library take the
//! same path at the same speed.
//!
//! This crate adds libtorch (tch) to [`crpo_sdk`], which it re-exports as [`sdk`]: a reward or
//! dataset plugin needs only `crpo-sdk`.

mod cache;
mod export;
pub mod ffi;
pub mod lora;
mod model;
pub mod registry;
pub mod tensor;

pub use cache::{CacheLayout, CacheStep, GrowingKvCache, KeyValues, KvCache};
pub use crpo_sdk as sdk;
pub use crpo_sdk::{PluginError, PluginInfo, Result};
pub use model::{full_forward_continuations_with, repeat_index, PolicyLoad, PolicyModel, PolicyPlugin};
pub use tch;

#[doc(hidden)]
pub use inventory;

/// The torch version this build compiled against (`2.11.0+cu130`).
pub const BUILT_TORCH_VERSION: &str = env!("CRPO_BUILT_TORCH_VERSION");

/// The tch minor series this build uses; tensor handles cross only between equal series.
pub const TCH_SERIES: &str = "0.24";

#[cfg(test)]
mod tests {
    #[test]
    fn built_torch_version_is_recorded() {
        assert!(
            super::BUILT_TORCH_VERSION.starts_with("2.11.0"),
            "{}",
            super::BUILT_TORCH_VERSION
        );
    }
}
