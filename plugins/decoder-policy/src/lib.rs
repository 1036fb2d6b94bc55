//! The built-in policy models: the Qwen2/Llama decoder family in tch, loaded from Hugging Face
//! model directories (config, weights, forward passes over the engine's key/value cache), and
//! the model presets `crpo-host init-model` writes. Generation, log-prob passes and the
//! tokenizer are the host's engine.

pub mod config;
pub mod error;
pub mod packed;
pub mod plugin;
pub mod policy;
pub mod presets;
pub mod projection;
pub mod qwen2;
pub mod rope;
pub mod weights;

#[cfg(test)]
mod qwen2_tests;
