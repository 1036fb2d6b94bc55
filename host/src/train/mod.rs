//! The CRPO trainer: run config, maths, optimizer, rollouts, checkpoints and metrics.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod divergence;
pub mod eval;
pub mod input_fingerprints;
pub mod loss;
pub mod maths;
pub mod memory_plan;
pub mod metrics;
pub mod micro_batches;
pub mod no_signal;
pub mod optimizer;
pub mod position_budget;
pub mod progress;
pub mod resume;
pub mod reward;
pub mod rollouts;
pub mod run_info;
pub mod run_lock;
pub mod sft;
pub mod startup;
pub mod tensorboard;
pub mod trainer;
pub mod trl_names;
pub mod update;
