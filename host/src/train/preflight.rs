//! What a start refuses before it loads anything, in one place for every caller — the
//! trainer's start, sft's, `train --nproc`'s launcher before any worker starts, and `doctor
//! --config`: the position budgets against the model's positions, LoRA dropout under
//! activation checkpointing, and the memory plan, checked where the caller says.

use super::config::RunConfig;
use super::memory_plan::{self, Phase};
use super::position_budget;

/// Where a start checks its memory plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryCheck {
    /// For this process (beside the ranks sharing its machine), logging the plan.
    ThisProcess,
    /// For this many local ranks about to start (the launcher, on a CPU).
    Ranks(u64),
    /// Not here: each rank checks its own GPU (the launcher would hold a CUDA context).
    Elsewhere,
}

/// The settings of `phase` that a start refuses before loading, each its own error (doctor
/// lists every one; a start stops at the first).
pub fn refusals(config: &RunConfig, phase: Phase) -> Vec<anyhow::Error> {
    let (key, enabled) = checkpointing(config, phase);
    [
        position_budget::check_run(config, phase),
        config.check_lora_dropout(key, enabled),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

/// Refuses what [`refusals`] finds, then a memory plan that cannot fit (checked as `memory`).
pub fn refuse_before_loading(config: &RunConfig, phase: Phase, memory: MemoryCheck) -> anyhow::Result<()> {
    if let Some(first) = refusals(config, phase).into_iter().next() {
        return Err(first);
    }
    match memory {
        MemoryCheck::ThisProcess => memory_plan::check_run(config, phase),
        MemoryCheck::Ranks(ranks) => memory_plan::refuse_unfit(config, phase, Some(ranks)).map(|_| ()),
        MemoryCheck::Elsewhere => Ok(()),
    }
}

/// The activation-checkpointing setting of `phase`: its key and value.
pub fn checkpointing(config: &RunConfig, phase: Phase) -> (&'static str, bool) {
    match phase {
        Phase::Train => (
            "algorithm.gradient_checkpointing",
            config.algorithm.gradient_checkpointing,
        ),
        Phase::Sft => ("sft.gradient_checkpointing", config.sft.gradient_checkpointing),
    }
}
