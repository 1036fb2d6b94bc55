//! # crpo-sdk — the plugin API of crpo
//!
//! Three plugin kinds feed the CRPO trainer: reward objectives ([`RewardPlugin`]), datasets
//! ([`DatasetPlugin`]) and policy models (in `crpo-policy-sdk`, which adds libtorch). A plugin
//! is either built into the host ([`register_reward!`], [`register_dataset!`]) or shipped as
//! a cdylib that calls [`export_plugin_library!`] and is loaded from `crpo-host --plugins DIR`.
//! This crate also holds the ABI ([`ffi`]) every plugin library exports.
//!
//! This crate has no libtorch dependency: a reward or dataset plugin needs nothing else.

pub mod dataset;
pub mod error;
pub mod example;
mod export;
pub mod ffi;
pub mod options;
pub mod preset;
pub mod registry;
pub mod reward;
mod reward_fn;
pub mod rules;
pub mod testing;

pub use dataset::{DatasetPlugin, DatasetRead, DatasetSource};
pub use error::{PluginError, RecordError, Result};
pub use example::{AnswerOption, ChatMessage, Example, Prompt};
pub use options::{parse_options, NoOptions};
pub use preset::RewardPreset;
pub use reward::{
    check_scores, overlong_penalty, score_each, RewardObjective, RewardPlugin, Score, ScoreRequest,
};
pub use reward_fn::{IntoScore, RewardFn};

#[doc(hidden)]
pub use abi_stable;
#[doc(hidden)]
pub use inventory;

/// The sdk's version, which is also the plugin ABI version: the host loads libraries built
/// against the same major version (and any minor version of it).
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who a plugin is, as `crpo-host plugins` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The name configs use to select the plugin.
    pub name: String,
    pub version: String,
    /// One line saying what it does.
    pub description: String,
}

impl PluginInfo {
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PluginInfo {
            name: name.to_string(),
            version: version.to_string(),
            description: description.to_string(),
        }
    }
}
